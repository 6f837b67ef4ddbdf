"""A development server with TensorFlow Serving's REST and gRPC wire contract. Not TF Serving.

    python -m tfimpute.serving.server --model_config_file=serving/models.config --models_dir=export
    python -m tfimpute.serving.server --model_name=lmrbm --model_base_path=export/lmrbm

The TF Serving binary cannot run on every machine (none of ours has Docker), so
this server stands in for development and tests. It serves SavedModels from
TF Serving's versioned layout, reads the same ``models.config``
(``model_config_list``, version policies ``latest`` / ``all`` / ``specific``),
polls the base paths and picks up new versions, replays
``assets.extra/tf_serving_warmup_requests`` on load, and answers:

* REST (``--rest_api_port``, default 8501): ``POST /v1/models/NAME[/versions/V]:predict``
  (row ``instances`` and columnar ``inputs`` formats, ``signature_name``),
  ``GET /v1/models/NAME[/versions/V]`` (status), ``GET .../metadata``;
  errors are ``{"error": "..."}`` with 400 / 404 / 413 (500 for a failure inside the server).
* gRPC (``--port``, default 8500): ``tensorflow.serving.PredictionService``
  ``Predict`` and ``GetModelMetadata``, ``ModelService.GetModelStatus``;
  errors carry INVALID_ARGUMENT / NOT_FOUND / RESOURCE_EXHAUSTED / INTERNAL.

Both protocols share one code path (:class:`ModelRepository`), so a request is
checked the same way over either. Beyond TF Serving's own checks (signature,
input names, dtypes, shapes) the inputs ``images`` and ``mask`` go through
:func:`tfimpute.validation.check_images_and_mask`; the exported graph performs
the same checks, so real TF Serving rejects the same requests. The server binds
127.0.0.1 unless ``--host`` says otherwise.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import http.server
import json
import math
import os
import re
import threading
from typing import Any, Iterator, Mapping

from tfimpute import cli  # noqa: F401  (quiets TensorFlow's start-up logs; import first)

import grpc
import numpy as np
import tensorflow as tf
from absl import logging
from google.protobuf import json_format, text_format
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_log_pb2, prediction_service_pb2_grpc)
from tensorflow_serving.config import model_server_config_pb2

from tfimpute.errors import InvalidInputError
from tfimpute.serving.status import DEFAULT_SIGNATURE, ServingError
from tfimpute.validation import check_images_and_mask

CONTAINER_MODELS_DIR = "/models"  # where serving/README.md mounts export/ in the TF Serving container
DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024


def invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def internal(exc: Exception) -> ServingError:
    """An unexpected failure, logged with its traceback; the client gets INTERNAL (HTTP 500)."""
    logging.exception("internal error: %s", exc)
    return ServingError(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")


@dataclasses.dataclass
class LoadedVersion:
    """One servable version: callable signatures plus their SignatureDefs for metadata."""

    version: int
    path: str
    signatures: dict[str, Any]  # name -> concrete function taking named tensors
    signature_defs: dict[str, meta_graph_pb2.SignatureDef]
    module: Any  # the loaded SavedModel object, which owns the variables the signatures read

    def input_specs(self, signature_name: str) -> dict[str, tf.TensorSpec]:
        return dict(self.signatures[signature_name].structured_input_signature[1])


def read_model_config(path: str) -> list[model_server_config_pb2.ModelConfig]:
    """The ``model_config_list`` of a TF Serving ``--model_config_file`` (text protobuf)."""
    try:
        with open(path) as f:
            config = text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
    except (OSError, text_format.ParseError) as exc:
        raise InvalidInputError(f"{path}: not a readable ModelServerConfig ({exc})") from None
    models = list(config.model_config_list.config)
    if not models:
        raise InvalidInputError(f"{path}: model_config_list names no model")
    for model in models:
        if model.model_platform not in ("", "tensorflow"):
            raise InvalidInputError(f"{path}: model {model.name}: platform {model.model_platform!r} "
                                    "is not supported (only 'tensorflow')")
    return models


def local_base_path(base_path: str, models_dir: str | None) -> str:
    """Maps a container path ``/models/X`` to ``models_dir/X`` (the README mounts export/ at /models)."""
    if models_dir and (base_path == CONTAINER_MODELS_DIR or base_path.startswith(CONTAINER_MODELS_DIR + "/")):
        return os.path.join(models_dir, os.path.relpath(base_path, CONTAINER_MODELS_DIR))
    return base_path


def served_versions(available: list[int], config: model_server_config_pb2.ModelConfig) -> set[int]:
    """The versions TF Serving would serve under ``model_version_policy`` (default: the latest one)."""
    policy = config.model_version_policy
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return set(available)
    if choice == "specific":
        return set(policy.specific.versions) & set(available)
    latest = policy.latest.num_versions if choice == "latest" and policy.latest.num_versions > 0 else 1
    return set(sorted(available)[-latest:])


def available_versions(base_path: str) -> list[int]:
    """Numeric subdirectories holding a ``saved_model.pb`` (temporary export directories are skipped)."""
    if not os.path.isdir(base_path):
        return []
    return sorted(int(name) for name in os.listdir(base_path)
                  if name.isdigit() and os.path.exists(os.path.join(base_path, name, "saved_model.pb")))


def declared_bytes(proto: tensor_pb2.TensorProto, name: str) -> int:
    """Bytes of the array a TensorProto's shape declares, whatever data it actually carries."""
    dims = [dim.size for dim in proto.tensor_shape.dim]
    if proto.tensor_shape.unknown_rank or any(size < 0 for size in dims):
        raise invalid(f"input {name!r}: the TensorProto needs a fully known shape, got {dims}")
    try:
        item_bytes = np.dtype(tf.dtypes.as_dtype(proto.dtype).as_numpy_dtype).itemsize
    except (TypeError, KeyError):
        raise invalid(f"input {name!r}: unsupported TensorProto dtype {proto.dtype}") from None
    return math.prod(dims) * item_bytes


def tensor_inputs(protos: Mapping[str, tensor_pb2.TensorProto], max_bytes: int) -> dict[str, np.ndarray]:
    """Decodes request tensors; ``tf.make_ndarray`` zero-fills a declared shape, so sizes are checked first."""
    total = sum(declared_bytes(proto, name) for name, proto in protos.items())
    if total > max_bytes:
        raise invalid(f"the input tensors declare {total} bytes, over the limit of {max_bytes} bytes")
    inputs = {}
    for name, proto in protos.items():
        try:
            inputs[name] = tf.make_ndarray(proto)
        except (TypeError, ValueError) as exc:
            raise invalid(f"input {name!r}: malformed TensorProto ({exc})") from None
    return inputs


def load_version(path: str, version: int, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES) -> LoadedVersion:
    """Loads a SavedModel and replays its warm-up requests, as TF Serving does before serving it."""
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        saved_model = saved_model_pb2.SavedModel.FromString(f.read())
    meta_graph = next(g for g in saved_model.meta_graphs if "serve" in g.meta_info_def.tags)
    loaded = tf.saved_model.load(path, tags=["serve"])
    servable = LoadedVersion(version, path, dict(loaded.signatures), dict(meta_graph.signature_def), loaded)
    warmup_file = os.path.join(path, "assets.extra", "tf_serving_warmup_requests")
    if os.path.exists(warmup_file):
        for record in tf.data.TFRecordDataset(warmup_file):
            request = prediction_log_pb2.PredictionLog.FromString(record.numpy()).predict_log.request
            inputs = tensor_inputs(request.inputs, max_request_bytes)
            run_signature(servable, request.model_spec.signature_name or DEFAULT_SIGNATURE, inputs)
    return servable


def check_inputs(servable: LoadedVersion, signature_name: str, inputs: dict[str, np.ndarray]) -> None:
    """TF Serving's checks (input names, dtypes, shapes) plus the project's image/mask checks."""
    specs = servable.input_specs(signature_name)
    unknown, missing = set(inputs) - set(specs), set(specs) - set(inputs)
    if unknown or missing:
        raise invalid(f"signature {signature_name!r} takes inputs {sorted(specs)}; "
                      f"got {sorted(inputs)} (unknown: {sorted(unknown)}, missing: {sorted(missing)})")
    for name, spec in specs.items():
        array = inputs[name]
        if array.dtype != spec.dtype.as_numpy_dtype:
            raise invalid(f"input {name!r}: expects {spec.dtype.name} but {array.dtype.name} is provided")
        if not spec.shape.is_compatible_with(array.shape):
            raise invalid(f"input {name!r}: expected shape {spec.shape.as_list()} "
                          f"(None = any size), got {list(array.shape)}")
    if "images" in inputs and "mask" in inputs:
        try:
            check_images_and_mask(inputs["images"], inputs["mask"], tuple(specs["images"].shape.as_list()[1:]))
        except InvalidInputError as exc:
            raise invalid(str(exc)) from None


def run_signature(servable: LoadedVersion, signature_name: str,
                  inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Checks ``inputs`` and runs one signature.

    TensorFlow's errors become INVALID_ARGUMENT (bad input), RESOURCE_EXHAUSTED
    (out of memory) or INTERNAL (anything else, logged).
    """
    check_inputs(servable, signature_name, inputs)
    try:
        outputs = servable.signatures[signature_name](**{k: tf.constant(v) for k, v in inputs.items()})
    except tf.errors.OpError as exc:
        message = exc.message.strip().partition("\n")[0]
        if isinstance(exc, tf.errors.InvalidArgumentError):
            raise invalid(message) from None
        if isinstance(exc, tf.errors.ResourceExhaustedError):
            raise ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED, message) from None
        logging.error("signature %s of %s failed: %s", signature_name, servable.path, exc)
        raise ServingError(grpc.StatusCode.INTERNAL, message) from None
    return {name: tensor.numpy() for name, tensor in outputs.items()}


class ModelRepository:
    """The models of a ``model_config_list`` and their served versions, kept in sync with the disk."""

    def __init__(self, configs: list[model_server_config_pb2.ModelConfig], models_dir: str | None = None,
                 max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES):
        self._configs = {config.name: config for config in configs}
        self._max_request_bytes = max_request_bytes  # also bounds the warm-up requests replayed on load
        self._base_paths = {c.name: local_base_path(c.base_path, models_dir) for c in configs}
        self._served: dict[str, dict[int, LoadedVersion]] = {name: {} for name in self._configs}
        self._failed: dict[tuple[str, int], str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    def refresh(self) -> None:
        """Loads versions that the policy now serves and unloads those it no longer does."""
        for name, config in self._configs.items():
            try:
                self._refresh_model(name, config)
            except Exception:  # e.g. the base path removed mid-scan: keep what is served, retry next poll
                logging.exception("cannot scan %s for versions of %s", self._base_paths[name], name)

    def _refresh_model(self, name: str, config: model_server_config_pb2.ModelConfig) -> None:
        wanted = served_versions(available_versions(self._base_paths[name]), config)
        current = self._served[name]
        loaded = {}
        for version in sorted(wanted - set(current)):
            if (name, version) in self._failed:
                continue
            path = os.path.join(self._base_paths[name], str(version))
            try:
                loaded[version] = load_version(path, version, self._max_request_bytes)
                logging.info("loaded %s version %d from %s", name, version, path)
            except Exception as exc:  # a broken export must not stop the others from serving
                with self._lock:
                    self._failed[(name, version)] = f"{type(exc).__name__}: {exc}"
                logging.error("cannot load %s version %d from %s: %s", name, version, path, exc)
        with self._lock:
            self._served[name] = {v: s for v, s in {**current, **loaded}.items() if v in wanted}

    def start_polling(self, interval_seconds: float) -> None:
        """Refreshes every ``interval_seconds`` in a daemon thread (TF Serving's file-system polling)."""

        def poll() -> None:
            while not self._stop.wait(interval_seconds):
                self.refresh()

        self._poller = threading.Thread(target=poll, name="model-poller", daemon=True)
        self._poller.start()

    def stop(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join()

    def servable(self, name: str, version: int | None) -> LoadedVersion:
        """The requested version, or the latest served one; NOT_FOUND like TF Serving otherwise."""
        with self._lock:
            versions = self._served.get(name, {})
            if version is None and versions:
                return versions[max(versions)]
            if version in versions:
                return versions[version]
        request = f"Latest({name})" if version is None else f"Specific({name}, {version})"
        raise ServingError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {request}")

    def status(self, name: str, version: int | None) -> get_model_status_pb2.GetModelStatusResponse:
        """AVAILABLE for every served version, END (with the error) for versions that failed to load."""
        if name not in self._configs:
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {name}")
        with self._lock:
            entries = {v: ("AVAILABLE", "OK", "") for v in self._served[name]}
            failed = dict(self._failed)
        for (model, failed_version), message in failed.items():
            if model == name:
                entries[failed_version] = ("END", "UNKNOWN", message)
        if version is not None:
            entries = {v: e for v, e in entries.items() if v == version}
        if not entries:
            what = f"version {version} of model {name}" if version is not None else f"any versions of model {name}"
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"Could not find {what}")
        response = get_model_status_pb2.GetModelStatusResponse()
        for v in sorted(entries, reverse=True):
            state, code, message = entries[v]
            status = response.model_version_status.add(
                version=v, state=get_model_status_pb2.ModelVersionStatus.State.Value(state))
            status.status.error_code = code_number(code)
            status.status.error_message = message
        return response

    def metadata(self, name: str, version: int | None) -> get_model_metadata_pb2.GetModelMetadataResponse:
        servable = self.servable(name, version)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = name
        response.model_spec.version.value = servable.version
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, signature_def in servable.signature_defs.items():
            signature_map.signature_def[key].CopyFrom(signature_def)
        response.metadata["signature_def"].Pack(signature_map)
        return response


def code_number(name: str) -> int:
    """``tensorflow.error.Code`` number of a code name (the StatusProto field is that enum)."""
    return grpc.StatusCode[name].value[0]


def resolve_signature(servable: LoadedVersion, signature_name: str) -> str:
    signature_name = signature_name or DEFAULT_SIGNATURE
    if signature_name not in servable.signatures:
        raise invalid(f'Serving signature name: "{signature_name}" not found in signature def')
    return signature_name


def predict(servable: LoadedVersion, signature_name: str, inputs: dict[str, np.ndarray],
            output_filter: list[str] | None = None) -> dict[str, np.ndarray]:
    """The Predict call both front ends make: ``signature_name`` "" means ``serving_default``."""
    signature_name = resolve_signature(servable, signature_name)
    outputs = run_signature(servable, signature_name, inputs)
    if output_filter:
        unknown = set(output_filter) - set(outputs)
        if unknown:
            raise invalid(f"output tensor alias(es) {sorted(unknown)} not found in signature "
                          f"{signature_name!r}; outputs: {sorted(outputs)}")
        outputs = {k: outputs[k] for k in output_filter}
    return outputs


# ---------------------------------------------------------------------------------------------- REST

REST_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[^/:]+))?"
                       r"(?:(?P<metadata>/metadata)|:(?P<method>[A-Za-z]+))?$")


def json_to_array(value: Any, spec: tf.TensorSpec, name: str) -> np.ndarray:
    """A JSON (nested) list as an array of the signature's dtype; refuses ragged, bool or string data."""
    try:
        array = np.asarray(value)
    except ValueError as exc:
        raise invalid(f"input {name!r}: not a rectangular (nested) list of numbers ({exc})") from None
    dtype = spec.dtype.as_numpy_dtype
    if np.issubdtype(dtype, np.integer):
        if array.dtype.kind not in "iu":
            raise invalid(f"input {name!r}: expects integers ({spec.dtype.name})")
        limits = np.iinfo(dtype)
        if array.size and (array.min() < limits.min or array.max() > limits.max):
            raise invalid(f"input {name!r}: values out of range for {spec.dtype.name}")
    elif array.dtype.kind not in "iuf":
        raise invalid(f"input {name!r}: expects numbers ({spec.dtype.name})")
    return array.astype(dtype)


def parse_predict_body(body: dict[str, Any], specs: dict[str, tf.TensorSpec]) -> tuple[dict[str, np.ndarray], bool]:
    """Inputs of a REST predict body; returns them and whether the request used the row format."""
    if ("instances" in body) == ("inputs" in body):
        raise invalid("the request must have exactly one of 'instances' (row format) or 'inputs' (columnar)")
    unknown = set(body) - {"instances", "inputs", "signature_name"}
    if unknown:
        raise invalid(f"unknown request keys {sorted(unknown)}")
    single = next(iter(specs)) if len(specs) == 1 else None
    if "instances" in body:
        instances = body["instances"]
        if not isinstance(instances, list) or not instances:
            raise invalid("'instances' must be a non-empty list")
        if single is not None and not all(isinstance(i, dict) for i in instances):
            return {single: json_to_array(instances, specs[single], single)}, True
        if not all(isinstance(i, dict) and set(i) == set(specs) for i in instances):
            raise invalid(f"every instance must be an object with the inputs {sorted(specs)}")
        return {name: json_to_array([i[name] for i in instances], spec, name)
                for name, spec in specs.items()}, True
    inputs = body["inputs"]
    if single is not None and not isinstance(inputs, dict):
        inputs = {single: inputs}
    if not isinstance(inputs, dict):
        raise invalid(f"'inputs' must be an object with the inputs {sorted(specs)}")
    unknown_inputs = set(inputs) - set(specs)
    if unknown_inputs:
        raise invalid(f"unknown inputs {sorted(unknown_inputs)}; signature takes {sorted(specs)}")
    return {name: json_to_array(value, specs[name], name) for name, value in inputs.items()
            if name in specs}, False


def predict_response_json(outputs: dict[str, np.ndarray], row_format: bool) -> dict[str, Any]:
    """``predictions`` (rows) or ``outputs`` (columns); a single output is given without its name."""
    if not row_format:
        if len(outputs) == 1:
            return {"outputs": next(iter(outputs.values())).tolist()}
        return {"outputs": {k: v.tolist() for k, v in outputs.items()}}
    if len(outputs) == 1:
        return {"predictions": next(iter(outputs.values())).tolist()}
    batch = {len(v) for v in outputs.values()}
    if len(batch) != 1:
        raise invalid("outputs do not share the batch dimension; use the columnar 'inputs' format")
    rows = {k: v.tolist() for k, v in outputs.items()}
    return {"predictions": [{k: rows[k][i] for k in rows} for i in range(batch.pop())]}


def proto_json(message) -> dict[str, Any]:
    """Proto JSON as TF Serving prints it: proto field names, default values included."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


def metadata_json(response: get_model_metadata_pb2.GetModelMetadataResponse) -> dict[str, Any]:
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signature_map)
    return {"model_spec": proto_json(response.model_spec),
            "metadata": {"signature_def": proto_json(signature_map)}}


class RestHandler(http.server.BaseHTTPRequestHandler):
    """TF Serving's ``/v1/models`` REST API over :class:`ModelRepository`."""

    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse their connection
    disable_nagle_algorithm = True  # headers and body go out as separate writes; don't wait for ACKs
    timeout = 60  # seconds an idle connection is kept
    server: "RestServer"

    def log_message(self, format: str, *args: Any) -> None:
        logging.debug("%s %s", self.address_string(), format % args)

    def _send_json(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:  # e.g. an unread body: keep-alive clients must not reuse this socket
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _send_error(self, error: ServingError) -> None:
        self._send_json(error.http_status, {"error": error.message})

    def _route(self) -> tuple[str, int | None, str | None, bool]:
        match = REST_PATH.match(self.path)
        if not match:
            if self.path.startswith("/v1/"):
                raise invalid(f"Malformed request: {self.command} {self.path}")
            raise ServingError(grpc.StatusCode.NOT_FOUND, f"no such resource: {self.path}")
        version = match["version"]
        if version is not None and not version.isdigit():
            raise invalid(f"Failed to convert version: {version} to numeric.")
        return match["name"], None if version is None else int(version), match["method"], bool(match["metadata"])

    def do_GET(self) -> None:
        try:
            name, version, method, metadata = self._route()
            if method is not None:
                raise invalid(f"Malformed request: GET {self.path}")
            repository = self.server.repository
            if metadata:
                self._send_json(200, metadata_json(repository.metadata(name, version)))
            else:
                self._send_json(200, proto_json(repository.status(name, version)))
        except ServingError as error:
            self._send_error(error)
        except Exception as exc:  # answer (500) rather than drop the connection
            self._send_error(internal(exc))

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self.close_connection = True
            raise invalid("a Content-Length header is required")
        if int(length) > self.server.max_request_bytes:
            self.close_connection = True  # the body is left unread
            raise ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                               f"request body of {length} bytes exceeds the limit of "
                               f"{self.server.max_request_bytes} bytes")
        return self.rfile.read(int(length))

    def do_POST(self) -> None:
        try:
            body = self._read_body()
            name, version, method, metadata = self._route()
            if metadata or method is None:
                raise invalid(f"Malformed request: POST {self.path}")
            if method in ("classify", "regress"):
                raise invalid(f":{method} needs a {method} signature; tfimpute exports predict signatures "
                              "only (use :predict)")
            if method != "predict":
                raise invalid(f"Malformed request: POST {self.path}")
            try:
                request = json.loads(body)
            except (ValueError, RecursionError) as exc:  # ValueError: also over-long integer literals
                raise invalid(f"JSON Parse error: {exc}") from None
            if not isinstance(request, dict):
                raise invalid("the request body must be a JSON object")
            servable = self.server.repository.servable(name, version)
            signature_name = request.get("signature_name", "")
            if not isinstance(signature_name, str):
                raise invalid("'signature_name' must be a string")
            signature_name = resolve_signature(servable, signature_name)
            inputs, row_format = parse_predict_body(request, servable.input_specs(signature_name))
            outputs = predict(servable, signature_name, inputs)
            self._send_json(200, predict_response_json(outputs, row_format))
        except ServingError as error:
            self._send_error(error)
        except Exception as exc:  # answer (500) rather than drop the connection
            self._send_error(internal(exc))


class RestServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], repository: ModelRepository, max_request_bytes: int):
        super().__init__(address, RestHandler)
        self.repository = repository
        self.max_request_bytes = max_request_bytes


# ---------------------------------------------------------------------------------------------- gRPC

def _version_of(model_spec) -> int | None:
    if model_spec.WhichOneof("version_choice") == "version_label":
        raise invalid("version labels are not supported by this development server")
    return model_spec.version.value if model_spec.HasField("version") else None


@contextlib.contextmanager
def _aborting_on_error(context: grpc.ServicerContext) -> Iterator[None]:
    """Ends the RPC with the TF Serving status of a failure: a ServingError's own code, anything
    else INTERNAL with its cause (not gRPC's bare UNKNOWN). ``context.abort`` raises."""
    try:
        yield
    except ServingError as error:
        context.abort(error.code, error.message)
    except Exception as exc:
        error = internal(exc)
        context.abort(error.code, error.message)


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """``Predict`` and ``GetModelMetadata``; Classify/Regress/MultiInference stay UNIMPLEMENTED."""

    def __init__(self, repository: ModelRepository, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES):
        self.repository = repository
        self.max_request_bytes = max_request_bytes

    def Predict(self, request, context):
        with _aborting_on_error(context):
            inputs = tensor_inputs(request.inputs, self.max_request_bytes)
            servable = self.repository.servable(request.model_spec.name, _version_of(request.model_spec))
            outputs = predict(servable, request.model_spec.signature_name, inputs, list(request.output_filter))
        response = predict_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        for name, array in outputs.items():
            response.outputs[name].CopyFrom(tf.make_tensor_proto(array))
        return response

    def GetModelMetadata(self, request, context):
        with _aborting_on_error(context):
            if list(request.metadata_field) != ["signature_def"]:
                raise invalid(f"Metadata field(s) {list(request.metadata_field)} not supported; "
                              "request exactly ['signature_def']")
            return self.repository.metadata(request.model_spec.name, _version_of(request.model_spec))


class ModelStatusServicer(model_service_pb2_grpc.ModelServiceServicer):
    """``GetModelStatus``; ``HandleReloadConfigRequest`` stays UNIMPLEMENTED."""

    def __init__(self, repository: ModelRepository):
        self.repository = repository

    def GetModelStatus(self, request, context):
        with _aborting_on_error(context):
            return self.repository.status(request.model_spec.name, _version_of(request.model_spec))


# ---------------------------------------------------------------------------------------------- both

class DevServer:
    """REST and gRPC front ends on one :class:`ModelRepository`; port 0 picks a free port."""

    def __init__(self, repository: ModelRepository, host: str = "127.0.0.1", rest_port: int = 8501,
                 grpc_port: int = 8500, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
                 grpc_workers: int = 16):
        self.repository = repository
        self.host = host
        self.rest = RestServer((host, rest_port), repository, max_request_bytes)
        self.rest_port = self.rest.server_address[1]
        options = [("grpc.max_receive_message_length", max_request_bytes),
                   ("grpc.max_send_message_length", max_request_bytes)]
        self.grpc = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=grpc_workers), options=options)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionServicer(repository, max_request_bytes), self.grpc)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelStatusServicer(repository), self.grpc)
        self.grpc_port = self.grpc.add_insecure_port(f"{host}:{grpc_port}")
        self._rest_thread = threading.Thread(target=self.rest.serve_forever, name="rest", daemon=True)

    def start(self) -> "DevServer":
        self.grpc.start()
        self._rest_thread.start()
        return self

    def stop(self) -> None:
        self.rest.shutdown()
        self.rest.server_close()
        self.grpc.stop(grace=1).wait()
        self.repository.stop()

    def __enter__(self) -> "DevServer":
        """``with start_server(...) as server:`` stops the (already started) server on exit."""
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


def start_server(configs: list[model_server_config_pb2.ModelConfig], models_dir: str | None = None,
                 poll_seconds: float = 1.0, **server_options: Any) -> DevServer:
    """Loads the models, starts polling and both front ends; returns the running server."""
    repository = ModelRepository(configs, models_dir,
                                 server_options.get("max_request_bytes", DEFAULT_MAX_REQUEST_BYTES))
    repository.refresh()
    if poll_seconds > 0:
        repository.start_polling(poll_seconds)
    return DevServer(repository, **server_options).start()


def single_model_config(name: str, base_path: str) -> list[model_server_config_pb2.ModelConfig]:
    """The config TF Serving builds from ``--model_name`` / ``--model_base_path``."""
    return [model_server_config_pb2.ModelConfig(name=name, base_path=os.path.abspath(base_path),
                                                model_platform="tensorflow")]


def main(argv: list[str]) -> None:
    from absl import flags

    FLAGS = flags.FLAGS
    if bool(FLAGS.model_config_file) == bool(FLAGS.model_name and FLAGS.model_base_path):
        raise InvalidInputError("give either --model_config_file or both --model_name and --model_base_path")
    configs = (read_model_config(FLAGS.model_config_file) if FLAGS.model_config_file
               else single_model_config(FLAGS.model_name, FLAGS.model_base_path))
    server = start_server(configs, FLAGS.models_dir, FLAGS.file_system_poll_wait_seconds, host=FLAGS.host,
                          rest_port=FLAGS.rest_api_port, grpc_port=FLAGS.port,
                          max_request_bytes=FLAGS.max_request_bytes)
    for config in configs:
        try:
            versions = [s.version for s in server.repository.status(config.name, None).model_version_status
                        if s.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE]
        except ServingError:
            versions = []
        print(f"model {config.name}: versions {versions or 'none yet'} "
              f"from {local_base_path(config.base_path, FLAGS.models_dir)}")
    # One parseable line: tests and scripts read the bound ports from it.
    print(f"tfimpute development server (not TF Serving): REST http://{FLAGS.host}:{server.rest_port} "
          f"gRPC {FLAGS.host}:{server.grpc_port}", flush=True)
    try:
        threading.Event().wait()
    finally:
        server.stop()


def define_flags() -> None:
    from absl import flags

    flags.DEFINE_string("model_config_file", None, "TF Serving model_config_list file (text protobuf).")
    flags.DEFINE_string("model_name", None, "Single model: its name (with --model_base_path).")
    flags.DEFINE_string("model_base_path", None, "Single model: the directory of its version directories.")
    flags.DEFINE_string("models_dir", None,
                        f"Local directory standing for the container's {CONTAINER_MODELS_DIR}: base paths "
                        f"under {CONTAINER_MODELS_DIR}/ in the config are read from here (e.g. export).")
    flags.DEFINE_string("host", "127.0.0.1", "Address to bind; 127.0.0.1 keeps the server local.")
    flags.DEFINE_integer("port", 8500, "gRPC port (TF Serving's --port); 0 picks a free one.")
    flags.DEFINE_integer("rest_api_port", 8501, "REST port (TF Serving's --rest_api_port); 0 picks a free one.")
    flags.DEFINE_float("file_system_poll_wait_seconds", 1.0,
                       "Seconds between scans for new versions; 0 disables polling.")
    flags.DEFINE_integer("max_request_bytes", DEFAULT_MAX_REQUEST_BYTES,
                         "Largest REST body / gRPC message accepted.")


if __name__ == "__main__":
    from absl import app

    define_flags()
    app.run(cli.run_main(main))
