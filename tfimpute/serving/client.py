"""Clients for imputation endpoints served by TF Serving or the development server (REST and gRPC).

Library::

    client = connect("rest", "127.0.0.1:8501", "lmrbm")    # or connect("grpc", "127.0.0.1:8500", ...)
    imputed = client.impute(images, mask)                 # serving_default (deterministic)
    sampled = client.impute(images, mask, seeds=[0, 1])   # impute_sample, one seed per digit
    outputs = client.predict({"images": ..., "mask": ...}, signature_name="hidden")

Command line (PNG or NumPy digits plus masks in, imputed PNGs out)::

    python -m tfimpute.serving.client --protocol=rest --server=127.0.0.1:8501 --model=lmrbm \\
        --images=digits.npy --masks=masks.npy --output_dir=/tmp/imputed

The served model's shape comes from its metadata. A PNG image is read as grayscale or
RGB to match it (pixel / 255); a PNG mask is white where the pixel is observed and black
where it is missing. ``.npy`` files hold [N, *shape] arrays (images also [N, H, W] with one
channel, or flattened; masks: 1 = observed). Writes ``imputed.npy`` and, for images, one
``<input>_imputed.png`` per image and ``grid.png`` (observed with missing pixels in blue,
above the imputed images).

Both clients raise :class:`tfimpute.serving.status.ServingError` with the gRPC
status code (REST statuses are mapped back: 400 -> INVALID_ARGUMENT, 404 ->
NOT_FOUND, 413 -> RESOURCE_EXHAUSTED; a REST timeout is DEADLINE_EXCEEDED and
any other connection failure UNAVAILABLE, as over gRPC), so callers handle
either protocol alike.
"""

from __future__ import annotations

import abc
import http.client
import json
import os
from typing import Any, Sequence

from tfimpute import cli  # noqa: F401  (quiets TensorFlow's start-up logs; import first)

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from PIL import Image
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc)

from tfimpute import visualize
from tfimpute.errors import InvalidInputError
from tfimpute.serving.status import DEFAULT_SIGNATURE, ServingError
from tfimpute.validation import as_batch, check_images_and_mask

SAMPLE_SIGNATURE = "impute_sample"
DEFAULT_ADDRESS = {"rest": "127.0.0.1:8501", "grpc": "127.0.0.1:8500"}  # TF Serving's default ports


class ServingClient(abc.ABC):
    """One model on one server; ``version=None`` asks for the latest served version."""

    def __init__(self, model: str, version: int | None = None):
        self.model = model
        self.version = version
        self._signatures: dict[str, dict[str, Any]] | None = None

    @abc.abstractmethod
    def predict(self, inputs: dict[str, np.ndarray],
                signature_name: str = DEFAULT_SIGNATURE) -> dict[str, np.ndarray]:
        """Runs a signature on named arrays; returns its named outputs."""

    @abc.abstractmethod
    def metadata(self) -> dict[str, Any]:
        """The model's SignatureDefMap as JSON-style dicts ({signature: {"inputs": ..., "outputs": ...}})."""

    @abc.abstractmethod
    def status(self) -> list[dict[str, Any]]:
        """``model_version_status`` entries (version, state, status)."""

    def signatures(self) -> dict[str, dict[str, Any]]:
        """Signature definitions, fetched once (servers that drop ``__saved_model_init_op`` agree)."""
        if self._signatures is None:
            self._signatures = {k: v for k, v in self.metadata().items() if not k.startswith("__")}
        return self._signatures

    def data_shape(self) -> tuple[int, ...]:
        """One example's shape, as ``serving_default``'s ``images`` input declares it."""
        dims = self.signatures()[DEFAULT_SIGNATURE]["inputs"]["images"]["tensor_shape"]["dim"]
        return tuple(int(dim["size"]) for dim in dims[1:])

    def impute(self, images, mask, seeds: Sequence[int] | int | None = None) -> np.ndarray:
        """Imputed examples [N, *data_shape]: ``serving_default``, or ``impute_sample`` when seeds are given.

        ``seeds``: one int per example, or one int for all; inputs are
        validated locally first (same rules as ``Imputer.impute``).
        """
        images, mask = check_images_and_mask(images, mask, self.data_shape())
        inputs = {"images": images, "mask": mask}
        if seeds is None:
            return self.predict(inputs)["imputed"]
        seeds = np.broadcast_to(np.asarray(seeds, dtype=np.int32), (len(images),)).copy()
        return self.predict({**inputs, "seed": seeds}, SAMPLE_SIGNATURE)["imputed"]

    def _version_path(self) -> str:
        return "" if self.version is None else f"/versions/{self.version}"


def _numpy_dtype(dtype_name: str) -> np.dtype:
    return tf.dtypes.as_dtype(types_pb2.DataType.Value(dtype_name)).as_numpy_dtype


class RestClient(ServingClient):
    """TF Serving's REST API over one keep-alive HTTP connection (one client per thread)."""

    def __init__(self, address: str, model: str, version: int | None = None, row_format: bool = False,
                 timeout: float = 60.0):
        super().__init__(model, version)
        host, port = split_address(address)
        self.row_format = row_format
        self._connection = http.client.HTTPConnection(host, port, timeout=timeout)

    def request(self, method: str, path: str, body: bytes | None = None) -> dict[str, Any]:
        """Sends one request; returns the JSON answer or raises ServingError with the server's message."""
        headers = {"Content-Type": "application/json"} if body is not None else {}
        try:
            self._connection.request(method, path, body=body, headers=headers)
            response = self._connection.getresponse()
            payload = response.read()
        except (http.client.HTTPException, OSError) as exc:
            self._connection.close()  # drops a half-read response too; the next request reconnects
            where = f"{method} {path} on {self._connection.host}:{self._connection.port}"
            if isinstance(exc, TimeoutError):
                raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                   f"{where}: no answer within {self._connection.timeout} s") from None
            raise ServingError(grpc.StatusCode.UNAVAILABLE, f"{where}: {type(exc).__name__}: {exc}") from None
        try:
            answer = json.loads(payload)
        except json.JSONDecodeError:
            answer = {"error": payload.decode(errors="replace")}
        if response.status != 200:
            raise ServingError.from_http(response.status, answer.get("error", str(answer)))
        return answer

    def predict(self, inputs: dict[str, np.ndarray],
                signature_name: str = DEFAULT_SIGNATURE) -> dict[str, np.ndarray]:
        if self.row_format:
            sizes = {len(v) for v in inputs.values()}
            if len(sizes) != 1:
                raise InvalidInputError("the row format needs inputs with one batch size; use columnar")
            size = sizes.pop()
            rows = {k: np.asarray(v).tolist() for k, v in inputs.items()}
            body = {"signature_name": signature_name,
                    "instances": [{k: rows[k][i] for k in rows} for i in range(size)]}
        else:
            body = {"signature_name": signature_name, "inputs": {k: np.asarray(v).tolist() for k, v in inputs.items()}}
        answer = self.request("POST", f"/v1/models/{self.model}{self._version_path()}:predict",
                              json.dumps(body).encode())
        outputs = self.signatures()[signature_name]["outputs"]
        values = answer["predictions" if self.row_format else "outputs"]
        if len(outputs) == 1:
            values = {next(iter(outputs)): values}
        elif self.row_format:
            values = {k: [row[k] for row in values] for k in outputs}
        return {k: np.asarray(values[k], dtype=_numpy_dtype(outputs[k]["dtype"])) for k in outputs}

    def metadata(self) -> dict[str, Any]:
        answer = self.request("GET", f"/v1/models/{self.model}{self._version_path()}/metadata")
        return answer["metadata"]["signature_def"]["signature_def"]

    def status(self) -> list[dict[str, Any]]:
        return self.request("GET", f"/v1/models/{self.model}{self._version_path()}")["model_version_status"]

    def close(self) -> None:
        self._connection.close()


class GrpcClient(ServingClient):
    """``PredictionService`` / ``ModelService`` stubs of tensorflow-serving-api on one channel."""

    def __init__(self, address: str, model: str, version: int | None = None, timeout: float = 60.0,
                 max_message_bytes: int = 64 * 1024 * 1024):
        super().__init__(model, version)
        self.timeout = timeout
        self._channel = grpc.insecure_channel(address, options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes)])
        self._predictions = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def _spec(self, message) -> None:
        message.model_spec.name = self.model
        if self.version is not None:
            message.model_spec.version.value = self.version

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as error:
            raise ServingError(error.code(), error.details()) from None

    def predict(self, inputs: dict[str, np.ndarray],
                signature_name: str = DEFAULT_SIGNATURE) -> dict[str, np.ndarray]:
        request = predict_pb2.PredictRequest()
        self._spec(request)
        request.model_spec.signature_name = signature_name
        for name, array in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(array))
        response = self._call(self._predictions.Predict, request)
        return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}

    def metadata(self) -> dict[str, Any]:
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request)
        response = self._call(self._predictions.GetModelMetadata, request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        return json_format.MessageToDict(signature_map, preserving_proto_field_name=True)["signature_def"]

    def status(self) -> list[dict[str, Any]]:
        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request)
        response = self._call(self._models.GetModelStatus, request)
        return json_format.MessageToDict(response, preserving_proto_field_name=True,
                                         always_print_fields_with_no_presence=True)["model_version_status"]

    def close(self) -> None:
        self._channel.close()


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise InvalidInputError(f"server address must be HOST:PORT, got {address!r}")
    return host, int(port)


def connect(protocol: str, address: str, model: str, version: int | None = None, **options: Any) -> ServingClient:
    """A REST or gRPC client for ``model`` at ``address`` (HOST:PORT)."""
    if protocol == "rest":
        return RestClient(address, model, version, **options)
    if protocol == "grpc":
        split_address(address)
        return GrpcClient(address, model, version, **options)
    raise InvalidInputError(f"protocol must be 'rest' or 'grpc', got {protocol!r}")


def _read_file(path: str, kind: str, channels: int) -> np.ndarray:
    """One PNG (an image; masks: white = observed) or .npy file as an [N, ...] float32 array."""
    try:
        if path.lower().endswith(".png"):
            pixels = np.asarray(Image.open(path).convert("L" if channels == 1 else "RGB"), dtype=np.float32)
            pixels = pixels.reshape(*pixels.shape[:2], -1)
            return ((pixels >= 128).astype(np.float32) if kind == "mask" else pixels / 255.0)[None]
        if path.lower().endswith(".npy"):
            return np.atleast_2d(np.load(path)).astype(np.float32)
    except (OSError, ValueError, TypeError) as exc:
        raise InvalidInputError(f"{path}: cannot read {kind} ({exc})") from None
    raise InvalidInputError(f"{path}: expected a .png or .npy file")


def read_digits(paths: Sequence[str], kind: str, data_shape: tuple[int, ...]) -> tuple[np.ndarray, list[str]]:
    """Images or masks from PNG and .npy files, as [N, *data_shape] float32, plus a name per example."""
    if len(data_shape) != 3 and any(path.lower().endswith(".png") for path in paths):
        raise InvalidInputError(f"the model imputes vectors of {data_shape[0]} values: give .npy files, not PNG")
    arrays, names = [], []
    for path in paths:
        array = as_batch(_read_file(path, kind, data_shape[-1]), f"{kind} {path}", data_shape)
        stem = os.path.splitext(os.path.basename(path))[0]
        names += [f"{stem}_{i:03d}" for i in range(len(array))] if len(array) > 1 else [stem]
        arrays.append(array)
    return np.concatenate(arrays), names


def write_imputations(output_dir: str, names: list[str], observed: np.ndarray, mask: np.ndarray,
                      imputed: np.ndarray) -> None:
    """``imputed.npy``; for images also one PNG per imputed image and ``grid.png`` (observed over imputed)."""
    os.makedirs(output_dir, exist_ok=True)
    np.save(os.path.join(output_dir, "imputed.npy"), imputed)
    if imputed.ndim != 4:
        return
    for name, image in zip(names, imputed):
        pixels = (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8)
        Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(
            os.path.join(output_dir, f"{name}_imputed.png"))
    visualize.save_png(visualize.image_grid([observed * mask, imputed], masks=[mask, None]),
                       os.path.join(output_dir, "grid.png"))


def main(argv: list[str]) -> None:
    from absl import flags

    FLAGS = flags.FLAGS
    if not FLAGS.images or not FLAGS.masks or not FLAGS.output_dir:
        raise InvalidInputError("--images, --masks and --output_dir are required")
    if FLAGS.timeout <= 0:
        raise InvalidInputError(f"--timeout must be > 0 seconds, got {FLAGS.timeout}")
    server = FLAGS.server or DEFAULT_ADDRESS[FLAGS.protocol]
    client = connect(FLAGS.protocol, server, FLAGS.model, FLAGS.version, timeout=FLAGS.timeout)
    try:
        data_shape = client.data_shape()
        images, names = read_digits(FLAGS.images, "images", data_shape)
        mask, _ = read_digits(FLAGS.masks, "mask", data_shape)
        images, mask = check_images_and_mask(images, mask, data_shape)
        seeds = None if FLAGS.seed is None else FLAGS.seed + np.arange(len(images))
        imputed = client.impute(images, mask, seeds)
    except ServingError as error:
        raise InvalidInputError(f"request to {server} over {FLAGS.protocol} failed: {error}") from None
    finally:
        client.close()
    write_imputations(FLAGS.output_dir, names, images, mask, imputed)
    print(f"imputed {len(images)} digits with {FLAGS.model} over {FLAGS.protocol} "
          f"({'serving_default' if seeds is None else f'{SAMPLE_SIGNATURE}, seeds {FLAGS.seed}..'}); "
          f"wrote {FLAGS.output_dir}/")


def define_flags() -> None:
    from absl import flags

    flags.DEFINE_enum("protocol", "rest", ["rest", "grpc"], "Wire protocol.")
    flags.DEFINE_string("server", None, "HOST:PORT; default 127.0.0.1:8501 (REST) or 127.0.0.1:8500 (gRPC).")
    flags.DEFINE_string("model", "lmrbm", "Served model name.")
    flags.DEFINE_integer("version", None, "Model version; default: the latest served.")
    flags.DEFINE_float("timeout", 60.0, "Seconds to wait for an answer (DCGAN/CGAN search: ~1 s per digit on CPU).")
    flags.DEFINE_list("images", None, "PNG or .npy files of digits (comma-separated).")
    flags.DEFINE_list("masks", None, "PNG or .npy masks, one per digit, in the same order (1/white = observed).")
    flags.DEFINE_string("output_dir", None, "Where the imputed PNGs, imputed.npy and grid.png go.")
    flags.DEFINE_integer("seed", None, "Sample with impute_sample, digit i using seed SEED + i "
                                       "(default: the deterministic serving_default).")


if __name__ == "__main__":
    from absl import app

    define_flags()
    app.run(cli.run_main(main))
