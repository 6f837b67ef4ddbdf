"""The training loop shared by every model of the zoo.

It owns what is the same for all models: shuffled batches of the incomplete
training data, a ``keras.utils.Progbar`` per epoch, TensorBoard scalars and
image grids, ``tf.train.CheckpointManager`` checkpoints (every epoch and every
``checkpoint_minutes``; a run started again resumes from the last one, mid-epoch
included; Ctrl-C and SIGTERM save one before stopping), and ``metrics.json``; a workdir that
has finished its epochs is not trained or evaluated again. The model brings ``prepare`` and ``train_step``
(see :mod:`tfimpute.models.base`); what it shows after every epoch (sample grids,
loss curves) is written by callbacks (:mod:`tfimpute.callbacks`).

Under a ``tf.distribute`` strategy (:mod:`tfimpute.distribute`) the global batch
(``batch_size``) is split across the replicas (:func:`distributed_epoch`) and every
step is ``model.distributed_train_step`` inside one ``tf.function``;
progress, checkpoints and the model's optimizers live in ``strategy.scope()``.
With several workers (MultiWorkerMirroredStrategy) a worker cannot save on its own: the workers
would resume from different steps and disagree. They save at the end of every epoch, and on
SIGTERM to any of them TensorFlow's ``PreemptionCheckpointHandler`` makes every worker save at
the same step and stop (:func:`preemption_handler`); Ctrl-C stops a worker without saving.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Iterable, Iterator

import keras
import numpy as np
import tensorflow as tf

from tfimpute import distribute, masks, metrics, visualize
from tfimpute.callbacks import default_callbacks
from tfimpute.errors import ClusterError, InvalidInputError, Terminated, WorkdirError
from tfimpute.files import write_json_atomically
from tfimpute.masks import IncompleteData
from tfimpute.models.base import Imputer
from tfimpute.models.capabilities import HasValidationLoss
from tfimpute.streaming import StreamedData, StreamedTestSplit


@dataclasses.dataclass(frozen=True)
class TrainingOptions:
    epochs: int
    batch_size: int
    seed: int = 0
    checkpoint_minutes: float = 10.0
    eval_size: int = 1000  # test examples imputed at the end of every epoch for TensorBoard
    grid_size: int = 10  # images per row of the image grids
    summary_every_steps: int = 50
    dtype_policy: str = "float32"  # the Keras dtype policy the model is built under (tfimpute.precision)


TrainingData = IncompleteData | StreamedData  # in memory, or read through tf.data (tfimpute.streaming)


@dataclasses.dataclass(frozen=True)
class ArrayTestSplit:
    """Test examples in memory: true values, the masks they are imputed under, and the data's own
    masks (None: complete). :class:`tfimpute.streaming.StreamedTestSplit` reads them in chunks instead."""

    images: np.ndarray
    mask: np.ndarray
    data_mask: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.images)

    def head(self, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        return (self.images[:count], self.mask[:count],
                None if self.data_mask is None else self.data_mask[:count])

    def missing_fraction(self) -> float:
        return masks.realised_missing_fraction(self.mask)

    def chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        """One chunk: the whole split."""
        yield self.images, self.mask, self.data_mask


TestData = ArrayTestSplit | StreamedTestSplit


def epoch_batches(data: TrainingData, batch_size: int, seed: int, epoch: int,
                  skip_batches: int = 0) -> tf.data.Dataset:
    """Batches (observed, mask, labels) of one epoch; the order depends only on (seed, epoch).

    Labels are int32, −1 when unknown; only class-conditional models read them.
    """
    if isinstance(data, StreamedData):
        return data.epoch_batches(batch_size, seed, epoch, skip_batches)
    order = np.random.default_rng([seed, epoch]).permutation(len(data))
    observed, mask = tf.constant(data.observed), tf.constant(data.mask)
    labels = tf.constant(data.label_array())
    return (tf.data.Dataset.from_tensor_slices(order)
            .batch(batch_size)
            .skip(skip_batches)
            .map(lambda index: (tf.gather(observed, index), tf.gather(mask, index),
                                tf.gather(labels, index)))
            .prefetch(2))


def steps_per_epoch(examples: int, batch_size: int, replicas: int = 1) -> int:
    """Batches in an epoch: :func:`distributed_epoch` leaves out a last batch smaller than ``replicas``."""
    steps, tail = divmod(examples, batch_size)
    return steps + (tail >= replicas)


def distributed_epoch(strategy: tf.distribute.Strategy, data: TrainingData, batch_size: int, seed: int,
                      epoch: int, skip_batches: int = 0) -> Iterable:
    """:func:`epoch_batches` split across ``strategy``'s replicas.

    Replica r of N gets the r-th of N contiguous parts of each global batch, whose sizes
    differ by at most one (``experimental_distribute_dataset`` would give ⌈B/N⌉ rows to
    the first replicas, leaving the last ones empty whenever N does not divide B). With
    several replicas, a last batch smaller than N is left out of the epoch: a replica with
    no rows breaks convolutions on CPU (oneDNN returns a wrongly shaped empty output).
    """
    replicas = strategy.num_replicas_in_sync
    if replicas == 1:
        return strategy.experimental_distribute_dataset(
            epoch_batches(data, batch_size, seed, epoch, skip_batches))
    if batch_size < replicas:
        raise InvalidInputError(f"the batch size ({batch_size}) must be at least the number of replicas "
                                f"({replicas}): it is the global batch, split across them")

    def replica_parts(context: tf.distribute.InputContext) -> tf.data.Dataset:
        per_pipeline = replicas // context.num_input_pipelines
        first = context.input_pipeline_id * per_pipeline

        def parts(*batch: tf.Tensor) -> tf.data.Dataset:
            size = tf.shape(batch[0])[0]
            base, extra = size // replicas, size % replicas

            def part(replica: tf.Tensor) -> tuple[tf.Tensor, ...]:
                replica = tf.cast(replica, tf.int32)
                start = replica * base + tf.minimum(replica, extra)
                end = start + base + tf.cast(replica < extra, tf.int32)
                return tuple(x[start:end] for x in batch)

            return tf.data.Dataset.range(first, first + per_pipeline).map(part)

        return (epoch_batches(data, batch_size, seed, epoch, skip_batches)
                .filter(lambda *batch: tf.shape(batch[0])[0] >= replicas)
                .flat_map(parts)
                .prefetch(2 * per_pipeline))

    return strategy.distribute_datasets_from_function(replica_parts)


def check_created_in_scope(model: Imputer, strategy: tf.distribute.Strategy) -> None:
    """Refuses an uncompiled trainable model, and one whose variables or optimizers were not created in
    ``strategy.scope()``."""
    if model.trainable_imputer and not model.optimizers():
        raise InvalidInputError(f"{model.name}: compile the model (model.compile()) before training it")
    variables = list(model.variables)
    for optimizer in model.optimizers():
        variables += optimizer.variables
    if not all(strategy.extended.variable_created_in_scope(getattr(v, "value", v)) for v in variables):
        raise InvalidInputError("the model and its optimizer must be created in strategy.scope() "
                                "of the strategy it trains under")


def model_inputs(values: np.ndarray) -> np.ndarray:
    """Test values as a model takes them: scaled table rows may leave the training rows' [0, 1], and
    the model gets them clipped (the RMSE is against the values as they are)."""
    return np.clip(values, 0.0, 1.0)


def imputation_grid(model: Imputer, images: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Rows: observed (missing in blue), imputed, true."""
    imputed = model.impute(images * mask, mask)
    return visualize.image_grid([images * mask, imputed, images], masks=[mask, None, None])


class _Progress(tf.Module):
    """Where training stands, checkpointed with the model.

    Read with ``.numpy()``: ``int()`` does not accept the MirroredVariables of a distributed run.
    """

    def __init__(self):
        super().__init__()
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)  # completed epochs
        self.step_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.train_seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False)


def positions_agree(totals: np.ndarray) -> bool:
    """Whether all replicas hold one position, from the sums over replicas of [x, x², 1] per
    coordinate x: they agree iff n·Σx² = (Σx)² (Cauchy-Schwarz holds with equality)."""
    half = (len(totals) - 1) // 2
    sums, squares, count = totals[:half], totals[half:2 * half], totals[-1]
    return bool(np.allclose(count * squares, np.square(sums)))


def check_workers_agree(strategy: tf.distribute.Strategy, progress: _Progress) -> None:
    """Multi-worker runs: every worker restores its own checkpoint, and workers resuming from
    different points would run different numbers of steps and hang in the all-reduce."""
    if not distribute.is_multi_worker(strategy):
        return

    def moments() -> tf.Tensor:
        position = tf.cast(tf.stack([progress.epoch, progress.step_in_epoch]), tf.float64)
        return tf.concat([position, tf.square(position), tf.ones([1], tf.float64)], axis=0)

    @tf.function  # a collective run eagerly is slow (and TensorFlow warns about it)
    def summed_moments() -> tf.Tensor:
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(moments), axis=None)

    totals = summed_moments().numpy()
    if not positions_agree(totals):
        raise WorkdirError("the workers would resume from different checkpoints (epoch, step differ); "
                           "give every worker a copy of the chief's checkpoints directory")


def _raise_terminated(signum, frame) -> None:
    raise Terminated("stopped by SIGTERM; the last checkpoint holds every finished step: run the same "
                     "command to resume")


def _take_sigterm(as_interrupt: bool):
    """Makes SIGTERM (a scheduler stopping the job) interrupt training as Ctrl-C does, so that a
    checkpoint is saved (``as_interrupt``; multi-worker runs leave it to :func:`preemption_handler`).
    Returns what :func:`_give_back_sigterm` restores: the previous handler, SIG_DFL for one that
    Python did not set, or None outside the main thread, where Python cannot set one."""
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.getsignal(signal.SIGTERM)
    if as_interrupt:
        signal.signal(signal.SIGTERM, _raise_terminated)
    return signal.SIG_DFL if previous is None else previous


def _give_back_sigterm(previous) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


class _HideRunCallsDeprecation(logging.Filter):
    """The handler reads its own deprecated ``total_run_calls`` when it saves; the warning is not the user's."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "total_run_calls" not in record.getMessage()


_HIDE_RUN_CALLS_DEPRECATION = _HideRunCallsDeprecation()


def preemption_handler(strategy: tf.distribute.Strategy, manager: tf.train.CheckpointManager,
                       progress: _Progress) -> tf.distribute.experimental.PreemptionCheckpointHandler | None:
    """Multi-worker runs: TensorFlow's handler of SIGTERM (a scheduler's preemption notice).

    The worker that receives SIGTERM agrees a step with the others through the coordination service;
    every worker saves a checkpoint with ``manager`` before that step and then raises
    :class:`Terminated` (its ``exit_fn``) with one line saying where it stopped.
    Other runs return None: the single-device loop treats SIGTERM as Ctrl-C.
    """
    if not distribute.is_multi_worker(strategy):
        return None

    def stop_after_saving() -> None:
        raise Terminated(
            f"preempted: SIGTERM reached a worker, and every worker saved a checkpoint after step "
            f"{int(progress.step_in_epoch.numpy())} of epoch {int(progress.epoch.numpy()) + 1} "
            f"({manager.latest_checkpoint}); start every worker again with the same command to resume")

    tf.get_logger().addFilter(_HIDE_RUN_CALLS_DEPRECATION)
    with strategy.scope():
        return tf.distribute.experimental.PreemptionCheckpointHandler(
            strategy.cluster_resolver, manager,
            termination_config=tf.distribute.experimental.TerminationConfig(exit_fn=stop_after_saving))


def run_training(model: Imputer, train_data: TrainingData, test_data: TestData, workdir: str,
                 options: TrainingOptions, run_info: dict[str, Any], log: Callable[[str], None] = print,
                 strategy: tf.distribute.Strategy | None = None,
                 callbacks: Iterable[keras.callbacks.Callback] = (), reevaluate: bool = False) -> dict[str, Any]:
    """Trains (or resumes) ``model`` in ``workdir``; writes and returns ``metrics.json``'s content.

    A workdir that already holds ``options.epochs`` finished epochs and its ``metrics.json`` is
    left as it is (its metrics are returned) unless ``reevaluate``.

    The test RMSE is over the entries ``test_data``'s masks hide that the data observed (its
    ``data_mask``, 1 = observed; None: the test data are complete).

    ``model`` must be compiled. ``strategy`` (default: the current one) must be the strategy
    whose scope the model and its optimizer(s) were created in. ``callbacks`` run after every
    epoch, after those the model's capabilities call for (:func:`tfimpute.callbacks.default_callbacks`).
    """
    strategy = strategy or tf.distribute.get_strategy()
    check_created_in_scope(model, strategy)
    try:
        model.check_batch_size(options.batch_size)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None
    os.makedirs(workdir, exist_ok=True)
    with strategy.scope():
        progress = _Progress()
        model.build_optimizers()
        # Optimizers are attributes of the model (Keras's `optimizer`, a GAN's one per player).
        checkpoint = tf.train.Checkpoint(model=model, progress=progress)
    manager = tf.train.CheckpointManager(checkpoint, os.path.join(workdir, "checkpoints"), max_to_keep=3)
    metrics_path = os.path.join(workdir, "metrics.json")
    if manager.latest_checkpoint:
        # Every object of the model must be in the checkpoint; the checkpoint may hold more (the step
        # counter a multi-worker run's preemption handler adds) without a warning.
        checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched().expect_partial()
        trained = int(progress.epoch.numpy())
        if (model.trainable_imputer and trained >= options.epochs and progress.step_in_epoch.numpy() == 0
                and os.path.exists(metrics_path) and not reevaluate):
            log(f"{workdir}: already trained {trained} epochs; raise --epochs to continue")
            with open(metrics_path) as f:
                return json.load(f)
        log(f"Resuming from {manager.latest_checkpoint}: epoch {int(progress.epoch.numpy()) + 1}, "
            f"step {int(progress.step_in_epoch.numpy())}")
    else:
        model.prepare(train_data)
        if not model.trainable_imputer:  # nothing to train: what `prepare` computed is the model
            log(f"Checkpoint (prepared): {manager.save()}")

    check_workers_agree(strategy, progress)

    train_writer = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard", "train"))
    test_writer = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard", "test"))
    eval_size = min(options.eval_size, model.epoch_eval_limit or options.eval_size)
    eval_images, eval_mask, eval_data_mask = test_data.head(max(eval_size, options.grid_size))
    grid_images, grid_mask = eval_images[:options.grid_size], eval_mask[:options.grid_size]
    eval_images, eval_mask = eval_images[:eval_size], eval_mask[:eval_size]
    eval_data_mask = None if eval_data_mask is None else eval_data_mask[:eval_size]
    eval_inputs = model_inputs(eval_images)
    epoch_callbacks = default_callbacks(model, workdir, eval_images, eval_mask) + list(callbacks)
    for callback in epoch_callbacks:
        callback.set_model(model)
        callback.set_params({"epochs": options.epochs})

    def step_and_count(batch):
        # Counting inside the same graph call as the update: a Ctrl-C cannot fall between them.
        logs = model.distributed_train_step(strategy, batch)
        progress.step_in_epoch.assign_add(1)
        return logs

    train_step = tf.function(step_and_count, reduce_retracing=True)
    epoch_steps = steps_per_epoch(len(train_data), options.batch_size, strategy.num_replicas_in_sync)
    last_save = time.monotonic()
    save_anytime = not distribute.is_multi_worker(strategy)  # see the module docstring

    def save(reason: str) -> None:
        nonlocal last_save
        path = manager.save()
        last_save = time.monotonic()
        log(f"Checkpoint ({reason}): {path}")

    previous_sigterm = _take_sigterm(as_interrupt=save_anytime)
    preemption = preemption_handler(strategy, manager, progress)
    run_step = train_step if preemption is None else functools.partial(preemption.run, train_step)
    try:
        while model.trainable_imputer and int(progress.epoch.numpy()) < options.epochs:
            epoch = int(progress.epoch.numpy())
            skip = int(progress.step_in_epoch.numpy())
            print(f"Epoch {epoch + 1}/{options.epochs}")
            progbar = keras.utils.Progbar(epoch_steps, unit_name="batch",
                                          verbose=1 if sys.stdout.isatty() else 2)
            progbar.update(skip)
            epoch_logs: dict[str, list[float]] = {}
            tick = time.perf_counter()
            batches = distributed_epoch(strategy, train_data, options.batch_size, options.seed, epoch, skip)
            for batch in batches:
                logs = {k: float(v) for k, v in run_step(batch).items()}
                now = time.perf_counter()
                progress.train_seconds.assign_add(now - tick)  # data + step, not evaluation
                tick = now
                step = int(model.training_step_counter.numpy())
                for key, value in logs.items():
                    epoch_logs.setdefault(key, []).append(value)
                if step % options.summary_every_steps == 0:
                    with train_writer.as_default(step=step):
                        for key, value in logs.items():
                            tf.summary.scalar(key, value)
                progbar.update(int(progress.step_in_epoch.numpy()), values=list(logs.items()))
                if save_anytime and time.monotonic() - last_save > 60 * options.checkpoint_minutes:
                    save("timed")
            eval_rmse = metrics.missing_rmse(
                eval_images, model.impute(eval_inputs * eval_mask, eval_mask), eval_mask, eval_data_mask)
            step = int(model.training_step_counter.numpy())
            with train_writer.as_default(step=step):
                for key, values in epoch_logs.items():
                    tf.summary.scalar(f"epoch_{key}", float(np.mean(values)))
            with test_writer.as_default(step=step):
                tf.summary.scalar("missing_rmse", eval_rmse)
                if model.is_image_model:
                    tf.summary.image("observed_imputed_true",
                                     imputation_grid(model, grid_images, grid_mask)[None], step=step)
                mean_logs = {key: float(np.mean(values)) for key, values in epoch_logs.items()}
                for callback in epoch_callbacks:
                    callback.on_epoch_end(epoch, mean_logs)
            log(f"epoch {epoch + 1}: test RMSE over missing entries "
                f"({len(eval_images)} examples) {eval_rmse:.4f}")
            # Only now is the epoch done: interrupted before this, a resume redoes its evaluation.
            progress.epoch.assign_add(1)
            progress.step_in_epoch.assign(0)
            save(f"end of epoch {epoch + 1}")
    except Terminated:
        if preemption is None:  # else the handler has saved
            save("SIGTERM")
        raise
    except KeyboardInterrupt:
        if save_anytime:
            save("interrupted")
        raise
    except distribute.PEER_FAILURES as exc:
        if not distribute.is_multi_worker(strategy):
            raise
        lost = distribute.lost_peers(exc, strategy)
        raise ClusterError(
            f"lost {', '.join(lost) or 'a peer worker'} in epoch {int(progress.epoch.numpy()) + 1} "
            f"({type(exc).__name__}); last checkpoint: {manager.latest_checkpoint or 'none'}; start every "
            "worker again with the same command to resume", exit_at_once=True) from None
    finally:
        _give_back_sigterm(previous_sigterm)
    # Only after a finished run: its __del__ stops the threads that watch the other workers, which
    # would wait forever on a cluster that lost a worker.
    del preemption

    per_example = []  # the RMSE of each test example, a chunk of the split at a time
    test_losses: dict[str, float] = {}  # the curves' validation losses over the whole split
    for chunk, (images, mask, data_mask) in enumerate(test_data.chunks()):
        imputed = model.impute(model_inputs(images) * mask, mask, seed=chunk)
        per_example.append(metrics.per_image_missing_rmse(images, imputed, mask, data_mask))
        # Means per example, weighted by the chunk's size; data with holes of their own have no
        # complete test examples to score.
        if isinstance(model, HasValidationLoss) and data_mask is None:
            for name, value in model.validation_losses(images, mask).items():
                test_losses[f"test_{name}"] = test_losses.get(f"test_{name}", 0.0) + value * len(images)
    if model.is_image_model:
        visualize.save_png(imputation_grid(model, grid_images, grid_mask),
                           os.path.join(workdir, "imputations.png"))
    result = dict(run_info)
    result.update({
        "test_rmse": metrics.mean_missing_rmse(np.concatenate(per_example)),
        "epochs": int(progress.epoch.numpy()) if model.trainable_imputer else 0,
        "train_seconds": round(float(progress.train_seconds.numpy()), 2),
        "test_size": len(test_data),
        **{name: total / len(test_data) for name, total in test_losses.items()},
    })
    write_json_atomically(metrics_path, result)
    return result
