"""Training-speed benchmark; prints one JSON object as its last line.

    python -m tfimpute.bench --model=lmrbm --hidden_units=4096 --batch_size=128

Every model: training examples per second (``samples_per_sec``) of ``train_step``
after warm-up, on synthetic batches (for MisGAN a step is the three critic
updates, plus the generator and imputer updates every ``--critic_steps``-th step;
time a multiple of that many steps).

For the RBMs it also times CD-1 steps after warm-up and, in the same run, a plain
float32 GEMM of the step's shape ([batch, 784] x [784, hidden]). ``gflops`` is
the useful work of the CD-1 step: the matrix products Algorithm 1 cannot avoid,
counted once each (2·B·n·m per product):

* three for the Gibbs step (lines 3, 4, 5),
* two for ΔW (line 7; line 9 is folded into the same product),
* one for W(h - h') of line 8 (LM-RBM only),
* with a low-rank W = AB, also forming W and the two factor updates (2·n·r·m each).

Sampling, sigmoids and the parameter update are not counted, so ``ratio`` =
gflops / gemm_gflops says how much of the machine's GEMM speed the step keeps.

Input is synthetic (speed does not depend on pixel values): for the RBMs, binary
digits (15% of pixels on) with 60% of pixels missing independently; for the other
models, uniform grey levels in [0, 1) with 30% missing independently. The untrained
imputers (``mean``, ``inpaint``) have no training step and are refused.

``--search_benchmark`` (DCGAN, CGAN) also times the latent-search imputation of
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

from tfimpute.errors import InvalidInputError
from tfimpute.models import registry
from tfimpute.models.base import Imputer
from tfimpute.models.dcgan import DCGAN
from tfimpute.models.rbm import RBM

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defined only when run as a program (like tfimpute.train), so `bench` imports next to other CLIs."""
    cli.define_model_flags()
    flags.DEFINE_integer("steps", 50, "Timed training steps.")
    flags.DEFINE_integer("warmup_steps", 5, "Untimed steps first (tracing, allocation).")
    flags.DEFINE_boolean("search_benchmark", False, "DCGAN/CGAN: also time latent-search imputation.")
    flags.DEFINE_integer("search_batch", 64, "Digits imputed at once by --search_benchmark.")


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


def rbm_step_flops(model: RBM, batch_size: int) -> float:
    n, m, b = model.visible_units, model.hidden_units, batch_size
    products = 6 if model.linearized else 5
    flops = products * 2.0 * b * n * m
    if model.rank is not None:
        flops += 3 * 2.0 * n * model.rank * m
    return flops


def benchmark_rbm(model: RBM, batch_size: int, steps: int, warmup: int) -> dict:
    rng = np.random.default_rng(0)
    mask = (rng.random((batch_size, 28, 28, 1)) >= 0.6).astype(np.float32)
    images = (rng.random((batch_size, 28, 28, 1)) < 0.15).astype(np.float32)
    batch = (tf.constant(images * mask), tf.constant(mask))
    train_step = tf.function(model.train_step)
    step_seconds = _timed(lambda: train_step(batch)["recon_mse"], steps, warmup)

    left = tf.constant(rng.random((batch_size, model.visible_units), dtype=np.float32))
    right = tf.constant(rng.random((model.visible_units, model.hidden_units), dtype=np.float32))
    gemm = tf.function(lambda: tf.matmul(left, right))
    gemm_seconds = _timed(gemm, steps * 4, warmup)
    gemm_gflops = 2.0 * batch_size * model.visible_units * model.hidden_units / gemm_seconds / 1e9
    gflops = rbm_step_flops(model, batch_size) / step_seconds / 1e9
    return {"step_ms": round(step_seconds * 1e3, 3), "samples_per_sec": round(batch_size / step_seconds, 1),
            "gflops": round(gflops, 2), "gemm_gflops": round(gemm_gflops, 2),
            "ratio": round(gflops / gemm_gflops, 3)}


def benchmark_train_step(model: Imputer, batch_size: int, steps: int, warmup: int) -> dict:
    """Seconds per ``train_step`` on a batch of the same synthetic data (any model)."""
    rng = np.random.default_rng(0)
    mask = (rng.random((batch_size, 28, 28, 1)) >= 0.3).astype(np.float32)
    images = rng.random((batch_size, 28, 28, 1)).astype(np.float32)
    labels = rng.integers(0, 10, batch_size).astype(np.int32)
    batch = (tf.constant(images * mask), tf.constant(mask), tf.constant(labels))
    model.build_optimizers()
    train_step = tf.function(model.train_step)
    step_seconds = _timed(lambda: list(train_step(batch).values())[0], steps, warmup)
    return {"step_ms": round(step_seconds * 1e3, 3), "samples_per_sec": round(batch_size / step_seconds, 1)}


def benchmark_latent_search(model: DCGAN, digits: int) -> dict:
    """Seconds to impute ``digits`` digits by latent search (60% of pixels missing independently;
    the search's cost does not depend on which), after one untimed call that compiles it."""
    rng = np.random.default_rng(0)
    mask = (rng.random((digits, 28, 28, 1)) >= 0.6).astype(np.float32)
    images = rng.random((digits, 28, 28, 1)).astype(np.float32)
    seconds = _timed(lambda: model.impute(images * mask, mask, batch_size=digits), 1, 1)
    return {"search_digits": digits, "search_restarts": model.search_restarts,
            "search_steps": model.search_steps, "search_seconds": round(seconds, 2),
            "search_ms_per_digit": round(1e3 * seconds / digits, 1)}


def main(argv: list[str]) -> None:
    registry.check_model_name(FLAGS.model)
    if not registry.CLASSES[FLAGS.model].trainable_imputer:
        raise InvalidInputError(f"--model={FLAGS.model} is an untrained imputer: it has no training step to time")
    if FLAGS.steps < 1 or FLAGS.warmup_steps < 0 or FLAGS.batch_size < 1:
        raise InvalidInputError("--steps and --batch_size must be >= 1, --warmup_steps >= 0")
    settings = cli.model_settings()
    settings["expected_observed_units"] = 784 * 0.4
    model = registry.build_model(FLAGS.model, settings)
    if FLAGS.search_benchmark and not isinstance(model, DCGAN):
        raise InvalidInputError("--search_benchmark times the latent search of dcgan and cgan")
    if not model.owns_optimizers:
        model.compile(optimizer=registry.make_optimizer(FLAGS.model, settings))
    shape = {"hidden_units": FLAGS.hidden_units, "rank": FLAGS.rank} if isinstance(model, RBM) else {}
    print(f"Benchmarking {FLAGS.model}: {''.join(f'{k}={v} ' for k, v in shape.items())}"
          f"batch_size={FLAGS.batch_size}, {FLAGS.steps} steps after {FLAGS.warmup_steps} warm-up steps, "
          f"{tf.config.threading.get_intra_op_parallelism_threads() or 'all'} intra-op threads")
    result = {"model": FLAGS.model, **shape, "batch_size": FLAGS.batch_size, "steps": FLAGS.steps}
    if isinstance(model, RBM):
        result.update(benchmark_rbm(model, FLAGS.batch_size, FLAGS.steps, FLAGS.warmup_steps))
    else:
        result.update(benchmark_train_step(model, FLAGS.batch_size, FLAGS.steps, FLAGS.warmup_steps))
    if FLAGS.search_benchmark:
        result.update(benchmark_latent_search(model, FLAGS.search_batch))
    print(json.dumps(result))


if __name__ == "__main__":
    define_flags()
    app.run(cli.run_main(main))
