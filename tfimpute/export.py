"""SavedModel export of any imputer of the zoo, laid out for TensorFlow Serving.

    python -m tfimpute.export --model=lmrbm --workdir=runs/lmrbm --export_dir=export/ [--version=N]

writes ``export_dir/NAME/VERSION/`` (NAME defaults to the model name, VERSION to
the next free integer): TF Serving's versioned layout. The SavedModel is written
to a hidden temporary directory beside it, loaded back and checked against the
Keras model, then renamed into place, so a server polling ``export_dir/NAME``
never sees half a model.

Signatures (every input and output is named; images are float32
``[batch, 28, 28, 1]`` in [0, 1], masks the same shape with 1 = observed,
``seed`` int32 ``[batch]``):

* ``serving_default`` — every imputer: ``images``, ``mask`` -> ``imputed``.
  Deterministic. For an imputer that does not draw (mean, inpaint, RealNVP's
  MAP) it is ``model.impute(images, mask)``; an imputer that draws declares
  per-digit seeding (below), and its ``serving_default`` imputes each digit
  alone with seed 0. RBMs: mean-field, whatever the training ``impute_mode``.
* what each model class declares in :data:`EXTRA_SIGNATURES`:

  - RBM / LM-RBM: ``impute_sample`` (``images``, ``mask``, ``seed`` ->
    ``imputed``, hidden layer sampled) and ``hidden`` (-> ``hidden``, p(h | v_o));
  - every generative model (``GenerativeImputer``): ``sample`` (``seed`` -> ``images``);
  - VAE: ``impute_sample``, ``encode`` (``images``, ``mask`` -> ``z_mean``,
    ``z_log_variance``), ``decode`` (``z`` -> ``images``);
  - RealNVP: ``log_prob`` (``images`` -> ``log_prob``, nats per digit);
  - MisGAN: ``impute_sample``, ``sample`` (``seed`` -> ``images``, ``masks``);
  - DCGAN / CGAN (latent-search imputation): ``impute_sample``, ``sample``; CGAN
    adds ``impute_with_labels`` (``images``, ``mask``, ``labels``, ``seed`` ->
    ``imputed``, the search conditioned on each digit's class) and ``generate``
    (``labels``, ``seed`` -> ``images``).

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

import dataclasses
import functools
import json
import os
import re
import shutil
import tempfile
from typing import Any, Callable

from tfimpute import cli  # noqa: F401  (quiets TensorFlow's start-up logs; import first)

import keras
import numpy as np
import tensorflow as tf

import tfimpute
from tfimpute.errors import InvalidInputError, TfImputeError
from tfimpute.models.base import Imputer, default_seed
from tfimpute.models.cgan import CGAN, checked_classes
from tfimpute.models.dcgan import DCGAN
from tfimpute.models.generative import GenerativeImputer
from tfimpute.models.misgan import MisGAN
from tfimpute.models.rbm import RBM
from tfimpute.models.realnvp import RealNVP
from tfimpute.models.vae import VAE
from tfimpute.serving.status import DEFAULT_SIGNATURE

IMAGE_SPEC_SHAPE = [None, 28, 28, 1]
WARMUP_FILE = "tf_serving_warmup_requests"
EXPORT_INFO_FILE = "tfimpute.json"
VERSION_PATTERN = re.compile(r"^[0-9]+$")


class ExportError(TfImputeError):
    """The export could not be written or did not load back as written."""


@dataclasses.dataclass(frozen=True)
class ServingSignature:
    """One endpoint: ``function(**inputs) -> {output name: tensor}``, traced with ``inputs``' specs."""

    inputs: dict[str, tf.TensorSpec]
    function: Callable[..., dict[str, tf.Tensor]]
    description: str


def image_inputs() -> dict[str, tf.TensorSpec]:
    """The ``images`` and ``mask`` inputs every imputation signature takes."""
    return {"images": tf.TensorSpec(IMAGE_SPEC_SHAPE, tf.float32, name="images"),
            "mask": tf.TensorSpec(IMAGE_SPEC_SHAPE, tf.float32, name="mask")}


def label_input() -> dict[str, tf.TensorSpec]:
    """One int32 class ``labels`` (0-9) per example."""
    return {"labels": tf.TensorSpec([None], tf.int32, name="labels")}


def checked_labels(labels: tf.Tensor, batch_like: tf.Tensor, num_classes: int) -> tf.Tensor:
    one_per_example = tf.debugging.assert_equal(tf.shape(labels)[0], tf.shape(batch_like)[0],
                                                message="labels must hold one value per example")
    with tf.control_dependencies([one_per_example]):
        return checked_classes(labels, num_classes)


def per_row_seeds(seed: tf.Tensor) -> tf.Tensor:
    """int32 [B, 2] search seeds (seed[i], 0): what ``model.impute(row i, seed=seed[i])`` uses."""
    return tf.stack([seed, tf.zeros_like(seed)], axis=1)


def seed_input() -> dict[str, tf.TensorSpec]:
    """One int32 ``seed`` per example (shape [batch]), so it fits TF Serving's row format."""
    return {"seed": tf.TensorSpec([None], tf.int32, name="seed")}


def checked_images(images: tf.Tensor) -> tf.Tensor:
    """``images`` once they are known finite and in [0, 1] (messages of :mod:`tfimpute.validation`)."""
    images = tf.debugging.check_numerics(images, "images: contains NaN or infinite values")
    checks = [tf.debugging.assert_greater_equal(images, 0.0, message="images: pixel values must be in [0, 1]"),
              tf.debugging.assert_less_equal(images, 1.0, message="images: pixel values must be in [0, 1]")]
    with tf.control_dependencies(checks):
        return tf.identity(images)


def checked_images_and_mask(images: tf.Tensor, mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """In-graph version of :func:`tfimpute.validation.check_images_and_mask` (same messages).

    Failing checks raise InvalidArgumentError, which TF Serving reports as
    INVALID_ARGUMENT / HTTP 400.
    """
    checks = [
        tf.debugging.assert_equal(tf.shape(images), tf.shape(mask),
                                  message="images and mask must have the same shape"),
        tf.debugging.Assert(tf.reduce_all((mask == 0.0) | (mask == 1.0)),
                            ["mask: values must be 0 (missing) or 1 (observed)"]),
    ]
    with tf.control_dependencies(checks):
        return checked_images(images), tf.identity(mask)


def checked_seed(seed: tf.Tensor, batch_like: tf.Tensor) -> tf.Tensor:
    check = tf.debugging.assert_equal(tf.shape(seed)[0], tf.shape(batch_like)[0],
                                      message="seed must hold one value per image")
    with tf.control_dependencies([check]):
        return tf.identity(seed)


ImputeFn = Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor]


def impute_each(impute_fn: ImputeFn, images: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Row i = ``impute_fn`` on digit i alone with seed (seed[i], 0), i.e. ``Imputer.impute`` of that digit.

    A digit's draws then depend on its own seed only, not on the rest of the batch.
    """

    def impute_one(example: tuple[tf.Tensor, tf.Tensor, tf.Tensor]) -> tf.Tensor:
        image, digit_mask, digit_seed = example
        return impute_fn(image[None], digit_mask[None], tf.stack([digit_seed, 0]))[0]

    return tf.map_fn(impute_one, (images, mask, seed),
                     fn_output_signature=tf.TensorSpec(IMAGE_SPEC_SHAPE[1:], tf.float32))


def impute_signature(impute_fn: ImputeFn, description: str) -> ServingSignature:
    """``images``, ``mask`` -> ``imputed``: ``impute_fn`` on the batch at the fixed seed (0, 0)."""

    def impute(images: tf.Tensor, mask: tf.Tensor) -> dict[str, tf.Tensor]:
        images, mask = checked_images_and_mask(images, mask)
        return {"imputed": impute_fn(images, mask, default_seed(0))}

    return ServingSignature(image_inputs(), impute, description)


def seeded_impute_signature(impute_fn: ImputeFn, description: str) -> ServingSignature:
    """``images``, ``mask``, ``seed`` -> ``imputed``, each digit imputed alone with its seed."""

    def impute(images: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor) -> dict[str, tf.Tensor]:
        images, mask = checked_images_and_mask(images, mask)
        return {"imputed": impute_each(impute_fn, images, mask, checked_seed(seed, images))}

    return ServingSignature({**image_inputs(), **seed_input()}, impute, description)


def stochastic_impute_signatures(impute_fn: ImputeFn) -> dict[str, ServingSignature]:
    """For imputers that draw: each digit alone, with seed 0 (``serving_default``) or its own seed."""

    def impute(images: tf.Tensor, mask: tf.Tensor) -> dict[str, tf.Tensor]:
        images, mask = checked_images_and_mask(images, mask)
        return {"imputed": impute_each(impute_fn, images, mask, tf.zeros(tf.shape(images)[:1], tf.int32))}

    return {DEFAULT_SIGNATURE: ServingSignature(image_inputs(), impute, "each digit imputed alone with seed 0"),
            "impute_sample": seeded_impute_signature(impute_fn, "each digit imputed alone with its seed")}


def sample_signature(sample_fn: Callable[[tf.Tensor, tf.Tensor], Any], output_names: list[str],
                     description: str) -> ServingSignature:
    """``seed`` -> generated digits: row i = ``sample_fn(1, (seed[i], 0))``, one named output per returned tensor."""

    def sample_one(seed: tf.Tensor) -> dict[str, tf.Tensor]:
        samples = sample_fn(tf.constant(1), tf.stack([seed, 0]))
        samples = samples if isinstance(samples, (tuple, list)) else [samples]
        return {name: tf.reshape(tensor, IMAGE_SPEC_SHAPE[1:]) for name, tensor in zip(output_names, samples)}

    def sample(seed: tf.Tensor) -> dict[str, tf.Tensor]:
        image_spec = tf.TensorSpec(IMAGE_SPEC_SHAPE[1:], tf.float32)
        return tf.map_fn(sample_one, seed, fn_output_signature={name: image_spec for name in output_names})

    return ServingSignature(seed_input(), sample, description)


def rbm_signatures(model: RBM) -> dict[str, ServingSignature]:
    """Mean-field ``serving_default``, sampled ``impute_sample`` and ``hidden`` (the paper's RBM † features)."""

    def hidden(images: tf.Tensor, mask: tf.Tensor) -> dict[str, tf.Tensor]:
        images, mask = checked_images_and_mask(images, mask)
        return {"hidden": model.hidden(images, mask)}

    return {
        DEFAULT_SIGNATURE: impute_signature(
            functools.partial(model.impute_batch, mode="mean_field"),
            "mean-field imputation (deterministic)"),
        "impute_sample": seeded_impute_signature(
            functools.partial(model.impute_batch, mode="sample"),
            "hidden layer sampled from p(h | v_o) with one seed per digit, then v = E[v | h]"),
        "hidden": ServingSignature(image_inputs(), hidden,
                                   f"hidden activations p(h | v_o), [batch, {model.hidden_units}]"),
    }


def generative_signatures(model: GenerativeImputer) -> dict[str, ServingSignature]:
    """``sample``: one generated digit per seed."""
    return {"sample": sample_signature(model.sample, ["images"], "model.sample(1, (seed, 0)) per seed")}


def vae_signatures(model: VAE) -> dict[str, ServingSignature]:
    """Stochastic imputation signatures, ``encode`` (q(z | x_o, m)) and ``decode`` (E[x | z])."""

    def encode(images: tf.Tensor, mask: tf.Tensor) -> dict[str, tf.Tensor]:
        images, mask = checked_images_and_mask(images, mask)
        mean, log_variance = model.encode(images, mask)
        return {"z_mean": mean, "z_log_variance": log_variance}

    def decode(z: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"images": model.decode(tf.debugging.check_numerics(z, "z: contains NaN or infinite values"))}

    return {**stochastic_impute_signatures(model.impute_batch),
            "encode": ServingSignature(image_inputs(), encode, f"mean and log-variance of q(z | x_o, m), "
                                                               f"[batch, {model.latent_dim}] each"),
            "decode": ServingSignature({"z": tf.TensorSpec([None, model.latent_dim], tf.float32, name="z")},
                                       decode, "pixel probabilities E[x | z]")}


def realnvp_signatures(model: RealNVP) -> dict[str, ServingSignature]:
    """``log_prob`` of complete digits (its MAP imputation is deterministic: generic ``serving_default``)."""

    def log_prob(images: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"log_prob": model.log_prob(checked_images(images))}

    images_only = {"images": tf.TensorSpec(IMAGE_SPEC_SHAPE, tf.float32, name="images")}
    return {"log_prob": ServingSignature(images_only, log_prob, "log-density (nats) of each digit, [batch]")}


def misgan_signatures(model: MisGAN) -> dict[str, ServingSignature]:
    """Stochastic imputation signatures and ``sample`` (a generated digit and mask per seed)."""
    return {**stochastic_impute_signatures(model.impute_batch),
            "sample": sample_signature(model.sample, ["images", "masks"],
                                       "model.sample(1, (seed, 0)) per seed: digit and mask (1 = observed)")}


def dcgan_signatures(model: DCGAN) -> dict[str, ServingSignature]:
    """Latent-search imputation with seed 0 or one seed per digit, and ``sample``.

    Row i is searched from the stateless seed (seed[i], 0), which is what
    ``model.impute(images[i:i+1], mask[i:i+1], seed=seed[i])`` does; the search
    is batched (each digit's restarts depend on its own seed only).
    """

    def impute(images: tf.Tensor, mask: tf.Tensor) -> dict[str, tf.Tensor]:
        images, mask = checked_images_and_mask(images, mask)
        return {"imputed": model.latent_search(images * mask, mask,
                                               per_row_seeds(tf.zeros(tf.shape(images)[:1], tf.int32)))}

    def impute_seeded(images: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor) -> dict[str, tf.Tensor]:
        images, mask = checked_images_and_mask(images, mask)
        return {"imputed": model.latent_search(images * mask, mask, per_row_seeds(checked_seed(seed, images)))}

    restarts = f"{model.search_restarts} restarts x {model.search_steps} Adam steps"
    return {DEFAULT_SIGNATURE: ServingSignature(image_inputs(), impute, f"latent search ({restarts}), seed 0"),
            "impute_sample": ServingSignature({**image_inputs(), **seed_input()}, impute_seeded,
                                              f"latent search ({restarts}) from each digit's seed"),
            "sample": sample_signature(model.sample, ["images"], "model.sample(1, (seed, 0)) per seed")}


def cgan_signatures(model: CGAN) -> dict[str, ServingSignature]:
    """``impute_with_labels`` (search conditioned on the class) and ``generate`` (class-conditional samples)."""

    def impute_with_labels(images: tf.Tensor, mask: tf.Tensor, labels: tf.Tensor,
                           seed: tf.Tensor) -> dict[str, tf.Tensor]:
        images, mask = checked_images_and_mask(images, mask)
        labels = checked_labels(labels, images, model.num_classes)
        return {"imputed": model.latent_search(images * mask, mask, per_row_seeds(checked_seed(seed, images)),
                                               labels)}

    def generate(labels: tf.Tensor, seed: tf.Tensor) -> dict[str, tf.Tensor]:
        labels = checked_labels(labels, seed, model.num_classes)
        latent = tf.map_fn(lambda s: model.draw_latents(tf.constant(1), tf.stack([s, 0]))[0], seed,
                           fn_output_signature=tf.TensorSpec([model.latent_size], tf.float32))
        return {"images": model.generate(latent, labels)}

    return {"impute_with_labels": ServingSignature({**image_inputs(), **label_input(), **seed_input()},
                                                   impute_with_labels,
                                                   "latent search with every restart of a digit conditioned "
                                                   "on its class, from its seed"),
            "generate": ServingSignature({**label_input(), **seed_input()}, generate,
                                         "one digit of class labels[i] per row, row i = "
                                         "model.generate_labelled(labels[i:i+1], (seed[i], 0))")}


# The hook by which a model class declares its signatures beyond the generic
# ``serving_default``: a function of the model returning {signature name:
# ServingSignature}; an entry named ``serving_default`` replaces the generic one.
# Entries of all classes along the model's MRO apply, base classes first, so a
# subclass adds to (or overrides) its parent's signatures.
EXTRA_SIGNATURES: dict[type[Imputer], Callable[[Any], dict[str, ServingSignature]]] = {
    RBM: rbm_signatures,
    GenerativeImputer: generative_signatures,
    VAE: vae_signatures,
    RealNVP: realnvp_signatures,
    MisGAN: misgan_signatures,
    DCGAN: dcgan_signatures,
    CGAN: cgan_signatures,
}


def serving_signatures(model: Imputer) -> dict[str, ServingSignature]:
    """All signatures ``model`` exports: the generic ``serving_default`` plus its classes' extras."""
    signatures = {DEFAULT_SIGNATURE: impute_signature(
        model.impute_batch, "model.impute_batch with the fixed stateless seed (0, 0)")}
    for cls in reversed(type(model).__mro__):
        if cls in EXTRA_SIGNATURES:
            signatures.update(EXTRA_SIGNATURES[cls](model))
    return signatures


def next_version(model_dir: str) -> int:
    """1 + the largest numeric version directory in ``model_dir`` (1 when there is none)."""
    versions = [int(name) for name in os.listdir(model_dir) if VERSION_PATTERN.match(name)] \
        if os.path.isdir(model_dir) else []
    return max(versions, default=0) + 1


def probe_inputs(spec: dict[str, tf.TensorSpec], batch_size: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    """Valid example inputs for a signature: random pixels, random 0/1 masks, seeds 0..B-1."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, tensor_spec in spec.items():
        shape = [batch_size, *tensor_spec.shape[1:]]
        if name == "mask":
            arrays[name] = (rng.random(shape) < 0.5).astype(np.float32)
        elif name == "labels":
            arrays[name] = (np.arange(np.prod(shape)) % 10).reshape(shape).astype(np.int32)
        elif tensor_spec.dtype.is_floating:
            arrays[name] = rng.random(shape).astype(tensor_spec.dtype.as_numpy_dtype)
        else:
            arrays[name] = np.arange(np.prod(shape)).reshape(shape).astype(tensor_spec.dtype.as_numpy_dtype)
    return arrays


def _write_warmup_requests(path: str, name: str, signatures: dict[str, ServingSignature]) -> None:
    """One batch-1 PredictRequest per signature, in TF Serving's warm-up file format."""
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    with tf.io.TFRecordWriter(path) as writer:
        for signature_name, signature in signatures.items():
            request = predict_pb2.PredictRequest()
            request.model_spec.name = name
            request.model_spec.signature_name = signature_name
            for input_name, array in probe_inputs(signature.inputs, batch_size=1).items():
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
                 atol: float = 1e-5) -> None:
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
        probe = probe_inputs(signature.inputs)
        expected = {k: v.numpy() for k, v in signature.function(**probe).items()}
        served = {k: v.numpy() for k, v in concrete(**probe).items()}
        if set(served) != set(expected):
            raise ExportError(f"{path}: {signature_name} outputs {sorted(served)}, expected {sorted(expected)}")
        for output_name, value in expected.items():
            if not np.allclose(served[output_name], value, rtol=rtol, atol=atol):
                raise ExportError(f"{path}: {signature_name}/{output_name} differs from the Keras model "
                                  f"(max abs difference {np.max(np.abs(served[output_name] - value)):g})")


def export_model(model: Imputer, export_dir: str, name: str, version: int | None = None,
                 provenance: dict[str, Any] | None = None) -> str:
    """Writes ``model`` to ``export_dir/name/version`` atomically; returns that path.

    ``version=None`` takes the next free version. An existing version is never
    overwritten (TF Serving would not reload it anyway). ``provenance`` (e.g.
    the training config) is stored in ``assets.extra/tfimpute.json``.
    """
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
    signatures = serving_signatures(model)
    # A hidden, non-numeric name: TF Serving (and our server) ignore it while it is being written.
    temporary = tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=model_dir)
    try:
        _save(temporary, signatures)
        extra = os.path.join(temporary, "assets.extra")
        os.makedirs(extra, exist_ok=True)
        _write_warmup_requests(os.path.join(extra, WARMUP_FILE), name, signatures)
        info = {"name": name, "version": version, "class": type(model).__name__,
                "model_config": model.get_config(), "tfimpute_version": tfimpute.__version__,
                "signatures": {k: s.description for k, s in signatures.items()},
                "provenance": provenance or {}}
        with open(os.path.join(extra, EXPORT_INFO_FILE), "w") as f:
            json.dump(info, f, indent=2, sort_keys=True, default=str)
            f.write("\n")
        check_export(temporary, signatures)
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


def main(argv: list[str]) -> None:
    from absl import flags

    from tfimpute import workdir

    FLAGS = flags.FLAGS
    if not FLAGS.workdir or not FLAGS.export_dir:
        raise InvalidInputError("--workdir and --export_dir are required")
    model, config = workdir.load_trained(FLAGS.workdir)
    if FLAGS.model and FLAGS.model != config["model"]:
        raise InvalidInputError(f"--model={FLAGS.model} but {FLAGS.workdir} holds a {config['model']} run")
    name = FLAGS.name or config["model"]
    path = export_model(model, FLAGS.export_dir, name, FLAGS.version,
                        provenance={"workdir": os.path.abspath(FLAGS.workdir), "config": config})
    print(f"exported {name} version {os.path.basename(path)} to {path}; "
          f"signatures: {', '.join(sorted(serving_signatures(model)))}")


def define_flags() -> None:
    from absl import flags

    flags.DEFINE_string("model", None, "Model name; checked against the workdir's (optional).")
    flags.DEFINE_string("workdir", None, "Training workdir to export (config.json + checkpoints/).")
    flags.DEFINE_string("export_dir", None, "Base directory; the model lands in EXPORT_DIR/NAME/VERSION.")
    flags.DEFINE_string("name", None, "Serving name (directory under --export_dir); default: the model name.")
    flags.DEFINE_integer("version", None, "Version number; default: the next free one.")


if __name__ == "__main__":
    from absl import app

    define_flags()
    app.run(cli.run_main(main))
