"""SavedModel export of any imputer of the zoo, laid out for TensorFlow Serving (the library side
of ``python -m tfimpute.export``).

:func:`export_model` writes ``export_dir/NAME/VERSION/`` (NAME defaults to the model name, VERSION to
the next free integer): TF Serving's versioned layout. The SavedModel is written
to a hidden temporary directory beside it, loaded back and checked against the
Keras model, then renamed into place, so a server polling ``export_dir/NAME``
never sees half a model.

The signatures are the model's own (:meth:`tfimpute.models.base.Imputer.serving_signatures`;
a subclass extends its parent's, and each model's method says what it adds), built from
:mod:`tfimpute.signatures`; this module knows no model. Every model exports ``serving_default``
(``images``, ``mask`` -> ``imputed``, deterministic) and ``impute_nan`` (``x`` in raw units with NaN
for missing entries -> ``imputed`` in raw units, observed entries unchanged); the README lists the others.

Randomness: a signature that draws takes ``seed``, one int32 per example, so
it fits TF Serving's row ("instances") format where all inputs share the batch
dimension. Row i is computed from example i alone with the stateless seed
(seed[i], 0): ``impute_sample`` row i is what ``model.impute(images[i:i+1],
mask[i:i+1], seed=seed[i])`` gives (RBM: in ``sample`` mode), ``sample`` row i
is ``model.sample(1, (seed[i], 0))``. A digit's result depends on its own seed
only, never on the rest of the batch, so any single request can be reproduced.

Every signature checks its inputs in the graph (finite pixels in [0, 1], masks
in {0, 1}, matching shapes), so TF Serving itself answers a bad request with
INVALID_ARGUMENT (HTTP 400) instead of imputing garbage.

``assets.extra/`` holds ``tf_serving_warmup_requests`` (one batch-1 request per
signature, which TF Serving replays on load) and ``tfimpute.json`` (where the
model came from and what each signature does); TF Serving ignores the latter.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from typing import Any

import keras
import numpy as np
import tensorflow as tf

import tfimpute
from tfimpute.datasets import Codec
from tfimpute.errors import InvalidInputError, TfImputeError
from tfimpute.models.base import Imputer
from tfimpute.signatures import DEFAULT_SIGNATURE, NAN_SIGNATURE, ServingSignature, impute_nan_signature
WARMUP_FILE = "tf_serving_warmup_requests"
EXPORT_INFO_FILE = "tfimpute.json"
VERSION_PATTERN = re.compile(r"^[0-9]+$")


class ExportError(TfImputeError):
    """The export could not be written or did not load back as written."""


def next_version(model_dir: str) -> int:
    """1 + the largest numeric version directory in ``model_dir`` (1 when there is none)."""
    versions = [int(name) for name in os.listdir(model_dir) if VERSION_PATTERN.match(name)] \
        if os.path.isdir(model_dir) else []
    return max(versions, default=0) + 1


def probe_inputs(spec: dict[str, tf.TensorSpec], batch_size: int = 3, seed: int = 0,
                 num_classes: int = 10) -> dict[str, np.ndarray]:
    """Valid example inputs for a signature: random pixels, random 0/1 masks, ``x`` with half of it
    NaN, seeds 0..B-1."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, tensor_spec in spec.items():
        shape = [batch_size, *tensor_spec.shape[1:]]
        if name == "mask":
            arrays[name] = (rng.random(shape) < 0.5).astype(np.float32)
        elif name == "x":  # raw values, NaN = missing
            arrays[name] = np.where(rng.random(shape) < 0.5, np.nan, rng.random(shape)).astype(np.float32)
        elif name == "labels":
            arrays[name] = (np.arange(np.prod(shape)) % num_classes).reshape(shape).astype(np.int32)
        elif tensor_spec.dtype.is_floating:
            arrays[name] = rng.random(shape).astype(tensor_spec.dtype.as_numpy_dtype)
        else:
            arrays[name] = np.arange(np.prod(shape)).reshape(shape).astype(tensor_spec.dtype.as_numpy_dtype)
    return arrays


def _write_warmup_requests(path: str, name: str, signatures: dict[str, ServingSignature],
                           num_classes: int) -> None:
    """One batch-1 PredictRequest per signature, in TF Serving's warm-up file format."""
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    with tf.io.TFRecordWriter(path) as writer:
        for signature_name, signature in signatures.items():
            request = predict_pb2.PredictRequest()
            request.model_spec.name = name
            request.model_spec.signature_name = signature_name
            for input_name, array in probe_inputs(signature.inputs, batch_size=1, num_classes=num_classes).items():
                request.inputs[input_name].CopyFrom(tf.make_tensor_proto(array))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def _endpoint(signature: ServingSignature) -> tf.types.experimental.GenericFunction:
    """The signature as a traced tf.function of one dict argument, whose keys name the inputs.

    Traced here with AutoGraph (models loop with ``for ... in tf.range``): given an
    ``input_signature`` instead, ExportArchive would trace with AutoGraph off.
    """
    endpoint = tf.function(lambda inputs: signature.function(**inputs), input_signature=[signature.inputs])
    endpoint.get_concrete_function()
    return endpoint


def _save(path: str, signatures: dict[str, ServingSignature]) -> None:
    # No archive.track(model): the variables the endpoints read are saved anyway (as the tf.Variables
    # the functions capture), while tracking the model would store each weight a second time (as its
    # Keras wrapper) and fail for a weightless imputer that Keras never marks built (e.g. inpainting).
    archive = keras.export.ExportArchive()
    # serving_default first and by name, so ExportArchive does not alias another endpoint to it.
    for signature_name in sorted(signatures, key=lambda n: n != DEFAULT_SIGNATURE):
        archive.add_endpoint(signature_name, _endpoint(signatures[signature_name]))
    archive.write_out(path, verbose=False)


def check_export(path: str, signatures: dict[str, ServingSignature], rtol: float = 1e-4,
                 atol: float = 1e-5, num_classes: int = 10) -> None:
    """Loads ``path`` back and checks every signature's names and its outputs on probe inputs."""
    loaded = tf.saved_model.load(path)
    if set(loaded.signatures) != set(signatures):
        raise ExportError(f"{path}: signatures {sorted(loaded.signatures)}, expected {sorted(signatures)}")
    for signature_name, signature in signatures.items():
        concrete = loaded.signatures[signature_name]
        input_names = set(concrete.structured_input_signature[1])
        if input_names != set(signature.inputs):
            raise ExportError(f"{path}: {signature_name} inputs {sorted(input_names)}, "
                              f"expected {sorted(signature.inputs)}")
        probe = probe_inputs(signature.inputs, num_classes=num_classes)
        expected = {k: v.numpy() for k, v in signature.function(**probe).items()}
        served = {k: v.numpy() for k, v in concrete(**probe).items()}
        if set(served) != set(expected):
            raise ExportError(f"{path}: {signature_name} outputs {sorted(served)}, expected {sorted(expected)}")
        for output_name, value in expected.items():
            if not np.allclose(served[output_name], value, rtol=rtol, atol=atol):
                raise ExportError(f"{path}: {signature_name}/{output_name} differs from the Keras model "
                                  f"(max abs difference {np.max(np.abs(served[output_name] - value)):g})")


def all_signatures(model: Imputer, codec: Codec) -> dict[str, ServingSignature]:
    """The model's own signatures and ``impute_nan`` (raw values with NaN in, raw values out,
    the ``codec``'s scaling inside the graph)."""
    return {**model.serving_signatures(),
            NAN_SIGNATURE: impute_nan_signature(model.impute_batch, model.data_shape, codec.offset, codec.scale,
                                                codec.categorical_blocks())}


def export_model(model: Imputer, export_dir: str, name: str, version: int | None = None,
                 provenance: dict[str, Any] | None = None, codec: Codec | None = None) -> str:
    """Writes ``model`` to ``export_dir/name/version`` atomically; returns that path.

    ``version=None`` takes the next free version. An existing version is never
    overwritten (TF Serving would not reload it anyway). ``provenance`` (e.g.
    the training config) and ``codec`` (how raw values map to the model's [0, 1]; default:
    images already in [0, 1]; tables: column names, one-hot layout and scaling) are stored in
    ``assets.extra/tfimpute.json``.
    """
    codec = codec or Codec.identity(model.data_shape)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise InvalidInputError(f"model name {name!r}: use letters, digits, '_', '.', '-' only")
    model_dir = os.path.join(export_dir, name)
    os.makedirs(model_dir, exist_ok=True)
    version = next_version(model_dir) if version is None else version
    if version < 1:
        raise InvalidInputError(f"version must be >= 1, got {version}")
    final_path = os.path.join(model_dir, str(version))
    if os.path.exists(final_path):
        raise ExportError(f"{final_path} already exists; versions are never overwritten")
    signatures = all_signatures(model, codec)
    # A hidden, non-numeric name: TF Serving (and our server) ignore it while it is being written.
    temporary = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=model_dir)
    try:
        _save(temporary, signatures)
        extra = os.path.join(temporary, "assets.extra")
        os.makedirs(extra, exist_ok=True)
        # Probe labels of a class-conditional model must be its classes (ClassConditional.num_classes).
        num_classes = getattr(model, "num_classes", 0) or 10
        _write_warmup_requests(os.path.join(extra, WARMUP_FILE), name, signatures, num_classes)
        info = {"name": name, "version": version, "class": type(model).__name__,
                "model_config": model.get_config(), "tfimpute_version": tfimpute.__version__,
                "signatures": {k: s.description for k, s in signatures.items()},
                "codec": codec.to_json(),
                "provenance": provenance or {}}
        with open(os.path.join(extra, EXPORT_INFO_FILE), "w") as f:
            json.dump(info, f, indent=2, sort_keys=True, default=str)
            f.write("\n")
        check_export(temporary, signatures, num_classes=num_classes)
        os.chmod(temporary, 0o755)  # mkdtemp's 0700 would hide the version from a server run as another user
        try:
            os.rename(temporary, final_path)
        except OSError as exc:
            raise ExportError(f"cannot move the export to {final_path} ({exc}); "
                              "did another export take that version?") from None
    finally:
        if os.path.exists(temporary):
            shutil.rmtree(temporary)
    return final_path
