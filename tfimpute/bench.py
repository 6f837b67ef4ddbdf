"""Training-speed benchmark; prints one JSON object as its last line.

    python -m tfimpute.bench --model=lmrbm --hidden_units=4096 --batch_size=128

Every model: training examples per second (``samples_per_sec``) of ``train_step``
after warm-up, on synthetic batches (for MisGAN a step is the three critic
updates, plus the generator and imputer updates every ``--critic_steps``-th step;
time a multiple of that many steps).

For a model that counts its step's FLOPs (``CountsStepFlops``: the RBMs) it also times,
in the same run, a plain float32 GEMM of the step's dominant shape ([batch, n] x
[n, hidden], n = 784 on MNIST). ``gflops`` is
the useful work of the CD-1 step: the matrix products Algorithm 1 cannot avoid,
counted once each (2·B·n·m per product):

* three for the Gibbs step (lines 3, 4, 5),
* two for ΔW (line 7; line 9 is folded into the same product),
* one for W(h - h') of line 8 (LM-RBM only),
* with a low-rank W = AB, also forming W and the two factor updates (2·n·r·m each).

Sampling, sigmoids and the parameter update are not counted, so ``ratio`` =
gflops / gemm_gflops says how much of the machine's GEMM speed the step keeps.

``--dtype_policy`` builds the model under that Keras dtype policy (:mod:`tfimpute.precision`);
the reference GEMM stays float32, so ``ratio`` compares the step with the float32 matrix speed.

Input is synthetic for the default ``--dataset=mnist`` (speed does not depend on pixel values):
binary digits (15% of pixels on) with 60% of pixels missing independently. With another
``--dataset`` it is the first ``--batch_size`` training examples of that dataset, their own holes
and 60% more missing independently. The untrained imputers (``mean``,
``inpaint``) have no training step and are refused.

``--search_benchmark --search_workdir=DIR`` compares the model's ``benchmark_variants`` (DCGAN, CGAN:
the encoder-started search and the published one) on the trained model in DIR: milliseconds per
test example and test RMSE over the missing entries, on the test examples and masks its training
scored (e.g. the 500 of ``configs/dcgan.cfg``), each variant compiled on one batch first.

``--search_benchmark`` (models with an ``extra_benchmark``: DCGAN, CGAN) also times the latent-search imputation of
``--search_batch`` digits with the model's ``--search_restarts`` and
``--search_steps`` (after a warm-up; ``Imputer.impute`` searches at most
``max_impute_batch`` = 64 digits per compiled call): ``search_seconds``.
"""

from __future__ import annotations

import json
import time

from tfimpute import cli  # noqa: F401  (quiets TensorFlow's start-up logs; import first)

import numpy as np
import tensorflow as tf
from absl import app, flags

from tfimpute import datasets, experiment, masks, metrics, precision, workdir
from tfimpute.data import MNIST_SHAPE
from tfimpute.datasets import Dataset
from tfimpute.errors import InvalidInputError
from tfimpute.masks import IncompleteData
from tfimpute.models import registry
from tfimpute.models.base import Imputer
from tfimpute.models.capabilities import CountsStepFlops, HasExtraBenchmark
from tfimpute.training import model_inputs

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defined only when run as a program (like tfimpute.train), so `bench` imports next to other CLIs."""
    cli.define_dataset_flags()
    cli.define_training_flags()
    cli.define_model_flags()
    flags.DEFINE_integer("steps", 50, "Timed training steps.")
    flags.DEFINE_integer("warmup_steps", 5, "Untimed steps first (tracing, allocation).")
    flags.DEFINE_boolean("search_benchmark", False, "Also time the model's costly inference path "
                         "(DCGAN/CGAN: latent-search imputation).")
    flags.DEFINE_integer("search_batch", 64, "Digits imputed at once by --search_benchmark.")
    flags.DEFINE_string("search_workdir", None, "With --search_benchmark: a trained workdir of --model whose "
                        "test examples (those its training scored) each of the model's search variants "
                        "imputes, timed, with its test RMSE.")


def _timed(fn, steps: int, warmup: int) -> float:
    """Seconds per call of ``fn`` (which returns a tensor to wait for)."""
    for _ in range(warmup):
        fn()
    result = None
    started = time.perf_counter()
    for _ in range(steps):
        result = fn()
    np.asarray(result)  # waits for the last call
    return (time.perf_counter() - started) / steps


def benchmark_batch(batch_size: int, data_shape: tuple[int, ...] = MNIST_SHAPE
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Synthetic binary examples (15% of entries on), 60% of entries missing, random labels."""
    rng = np.random.default_rng(0)
    mask = (rng.random((batch_size, *data_shape)) >= 0.6).astype(np.float32)
    images = (rng.random((batch_size, *data_shape)) < 0.15).astype(np.float32)
    return images * mask, mask, rng.integers(0, 10, batch_size).astype(np.int32)


def dataset_batch(dataset: Dataset, batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first ``batch_size`` training examples, their own holes and 60% more missing independently."""
    if len(dataset.train_x) < batch_size:
        raise InvalidInputError(f"{dataset.name} has {len(dataset.train_x)} training examples, fewer than "
                                f"--batch_size={batch_size}")
    x, own = dataset.train_x[:batch_size], dataset.train_mask[:batch_size]
    mask = masks.combine(own, masks.generate_masks("independent", 0.6, batch_size, 0, shape=dataset.shape))
    labels = (np.full(batch_size, -1) if dataset.train_labels is None else dataset.train_labels[:batch_size])
    return x * mask, mask, labels.astype(np.int32)


def benchmark_train_step(model: Imputer, batch: tuple[np.ndarray, ...], steps: int, warmup: int) -> dict:
    """Seconds per ``train_step`` on ``batch`` (any model); for a model that counts its FLOPs also
    GFLOP/s and their ratio to its dominant matrix product timed alone."""
    rng = np.random.default_rng(1)
    batch_size = len(batch[0])
    batch = tuple(tf.constant(x) for x in batch)
    model.build_optimizers()
    train_step = tf.function(model.train_step)
    step_seconds = _timed(lambda: list(train_step(batch).values())[0], steps, warmup)
    result = {"step_ms": round(step_seconds * 1e3, 3), "samples_per_sec": round(batch_size / step_seconds, 1)}
    if isinstance(model, CountsStepFlops):
        rows, inner, columns = model.reference_matmul_shape(batch_size)
        left = tf.constant(rng.random((rows, inner), dtype=np.float32))
        right = tf.constant(rng.random((inner, columns), dtype=np.float32))
        gemm = tf.function(lambda: tf.matmul(left, right))
        gemm_gflops = 2.0 * rows * inner * columns / _timed(gemm, steps * 4, warmup) / 1e9
        gflops = model.step_flops(batch_size) / step_seconds / 1e9
        result.update({"gflops": round(gflops, 2), "gemm_gflops": round(gemm_gflops, 2),
                       "ratio": round(gflops / gemm_gflops, 3)})
    return result


def compare_search_variants(workdir_path: str, model_name: str) -> dict:
    """Milliseconds per test example and test RMSE of each of the model's ``benchmark_variants`` on
    the trained model in ``workdir_path`` (its test examples and test masks)."""
    config = workdir.read_config(workdir_path)
    if config is None or config.get("model") != model_name:
        raise InvalidInputError(f"--search_workdir={workdir_path}: not a trained {model_name} workdir")
    data = config["data"]
    # A workdir's `data` holds the dataset options as cli.dataset_options wrote them.
    dataset = experiment.prepared(cli.load_dataset(data, data["train_size"], data["test_size"]), data)
    mask = experiment.scored_test_mask(dataset, data)
    observed = model_inputs(dataset.test_x) * mask
    scored = experiment.own_holes(dataset.test_mask, dataset)
    result: dict = {"search_workdir": workdir_path, "search_digits": len(observed)}
    for name, overrides in registry.get(model_name).cls.benchmark_variants().items():
        model, _ = workdir.load_trained(workdir_path, overrides)
        warmup = min(len(observed), model.max_impute_batch or len(observed))
        model.impute(observed[:warmup], mask[:warmup])  # compiles the search
        started = time.perf_counter()
        imputed = model.impute(observed, mask)
        seconds = time.perf_counter() - started
        result[name] = {**overrides, "ms_per_digit": round(1e3 * seconds / len(observed), 1),
                        "test_rmse": round(metrics.missing_rmse(dataset.test_x, imputed, mask, scored), 5)}
        print(f"{name}: {result[name]}")
    return result


def main(argv: list[str]) -> None:
    spec = registry.get(FLAGS.model)
    cli.check_settings_apply(spec)
    if not spec.cls.trainable_imputer:
        raise InvalidInputError(f"--model={FLAGS.model} is an untrained imputer: it has no training step to time")
    if FLAGS.steps < 1 or FLAGS.warmup_steps < 0 or FLAGS.batch_size < 1:
        raise InvalidInputError("--steps and --batch_size must be >= 1, --warmup_steps >= 0")
    if FLAGS.search_benchmark and not issubclass(spec.cls, HasExtraBenchmark):
        having = [other.name for other in registry.specs() if issubclass(other.cls, HasExtraBenchmark)]
        raise InvalidInputError(f"--search_benchmark: {FLAGS.model} has no extra benchmark "
                                f"({', '.join(having)} have one)")
    if FLAGS.dataset == datasets.MNIST:
        observed, mask, labels = benchmark_batch(FLAGS.batch_size)
    else:
        dataset = cli.load_dataset(cli.dataset_options(), FLAGS.train_size or FLAGS.batch_size, None)
        spec.check_data_shape(dataset.shape)
        observed, mask, labels = dataset_batch(dataset, FLAGS.batch_size)
    settings = spec.settings_for_data(cli.settings_from_flags(spec), IncompleteData(observed, mask, labels))
    with precision.policy_scope(FLAGS.dtype_policy):
        model = spec.build(settings, data_shape=observed.shape[1:])
        model.compile()
    shown = {name: FLAGS[name].value for name in spec.cls.size_settings}
    print(f"Benchmarking {FLAGS.model}: {''.join(f'{k}={v} ' for k, v in shown.items())}"
          f"batch_size={FLAGS.batch_size}, dtype policy {FLAGS.dtype_policy}, {FLAGS.steps} steps after {FLAGS.warmup_steps} warm-up steps, "
          f"{tf.config.threading.get_intra_op_parallelism_threads() or 'all'} intra-op threads")
    result = {"model": FLAGS.model, **shown, "batch_size": FLAGS.batch_size, "dtype_policy": FLAGS.dtype_policy,
              "steps": FLAGS.steps}
    result.update(benchmark_train_step(model, (observed, mask, labels), FLAGS.steps, FLAGS.warmup_steps))
    if FLAGS.search_benchmark:
        result.update(model.extra_benchmark(FLAGS.search_batch))
        if FLAGS.search_workdir:
            result["trained"] = compare_search_variants(FLAGS.search_workdir, FLAGS.model)
    print(json.dumps(result))


if __name__ == "__main__":
    define_flags()
    app.run(cli.run_main(main))
