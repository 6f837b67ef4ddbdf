"""The training loop shared by every model of the zoo.

It owns what is the same for all models: shuffled batches of the incomplete
training data, a ``keras.utils.Progbar`` per epoch, TensorBoard scalars and
image grids, ``tf.train.CheckpointManager`` checkpoints (every epoch and every
``checkpoint_minutes``; a run started again resumes from the last one, mid-epoch
included), and ``metrics.json``. The model brings ``prepare`` and ``train_step``
(see :mod:`tfimpute.models.base`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import time
from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf

from tfimpute import metrics, visualize
from tfimpute.masks import IncompleteData
from tfimpute.models.base import Imputer


@dataclasses.dataclass(frozen=True)
class TrainingOptions:
    epochs: int
    batch_size: int
    seed: int = 0
    checkpoint_minutes: float = 10.0
    eval_size: int = 1000  # test digits imputed at the end of every epoch for TensorBoard
    grid_size: int = 10  # digits per row of the image grids
    summary_every_steps: int = 50


def write_json_atomically(path: str, payload: dict[str, Any]) -> None:
    """Writes to a unique temporary file beside ``path``, syncs it, then renames it over ``path``."""
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".tmp-")
    with os.fdopen(handle, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def epoch_batches(data: IncompleteData, batch_size: int, seed: int, epoch: int,
                  skip_batches: int = 0) -> tf.data.Dataset:
    """Batches (observed, mask, labels) of one epoch; the order depends only on (seed, epoch).

    Labels are int32, −1 when unknown; only class-conditional models read them.
    """
    order = np.random.default_rng([seed, epoch]).permutation(len(data))
    observed, mask = tf.constant(data.observed), tf.constant(data.mask)
    labels = tf.constant(data.label_array())
    return (tf.data.Dataset.from_tensor_slices(order)
            .batch(batch_size)
            .skip(skip_batches)
            .map(lambda index: (tf.gather(observed, index), tf.gather(mask, index),
                                tf.gather(labels, index)))
            .prefetch(2))


def imputation_grid(model: Imputer, images: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Rows: observed (missing in blue), imputed, true."""
    imputed = model.impute(images * mask, mask)
    return visualize.image_grid([images * mask, imputed, images], masks=[mask, None, None])


class _Progress(tf.Module):
    """Where training stands, checkpointed with the model."""

    def __init__(self):
        super().__init__()
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)  # completed epochs
        self.step_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.train_seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False)


def run_training(model: Imputer, train_data: IncompleteData, test_images: np.ndarray,
                 test_mask: np.ndarray, workdir: str, options: TrainingOptions,
                 run_info: dict[str, Any], log: Callable[[str], None] = print) -> dict[str, Any]:
    """Trains (or resumes) ``model`` in ``workdir``; writes and returns ``metrics.json``'s content."""
    os.makedirs(workdir, exist_ok=True)
    progress = _Progress()
    model.build_optimizers()
    # Models owning several optimizers (GANs) hold them as attributes: checkpointed via `model`.
    optimizer = {} if model.owns_optimizers else {"optimizer": model.optimizer}
    checkpoint = tf.train.Checkpoint(model=model, progress=progress, **optimizer)
    manager = tf.train.CheckpointManager(checkpoint, os.path.join(workdir, "checkpoints"), max_to_keep=3)
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        log(f"Resuming from {manager.latest_checkpoint}: epoch {int(progress.epoch) + 1}, "
            f"step {int(progress.step_in_epoch)}")
    else:
        model.prepare(train_data)
        if not model.trainable_imputer:  # nothing to train: what `prepare` computed is the model
            log(f"Checkpoint (prepared): {manager.save()}")

    train_writer = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard", "train"))
    test_writer = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard", "test"))
    eval_images, eval_mask = test_images[:options.eval_size], test_mask[:options.eval_size]
    grid_images, grid_mask = test_images[:options.grid_size], test_mask[:options.grid_size]

    def step_and_count(batch):
        # Counting inside the same graph call as the update: a Ctrl-C cannot fall between them.
        logs = model.train_step(batch)
        progress.step_in_epoch.assign_add(1)
        return logs

    train_step = tf.function(step_and_count, reduce_retracing=True)
    steps_per_epoch = -(-len(train_data) // options.batch_size)
    last_save = time.monotonic()

    def save(reason: str) -> None:
        nonlocal last_save
        path = manager.save()
        last_save = time.monotonic()
        log(f"Checkpoint ({reason}): {path}")

    try:
        while model.trainable_imputer and int(progress.epoch) < options.epochs:
            epoch = int(progress.epoch)
            skip = int(progress.step_in_epoch)
            print(f"Epoch {epoch + 1}/{options.epochs}")
            progbar = keras.utils.Progbar(steps_per_epoch, unit_name="batch",
                                          verbose=1 if sys.stdout.isatty() else 2)
            progbar.update(skip)
            epoch_logs: dict[str, list[float]] = {}
            tick = time.perf_counter()
            for batch in epoch_batches(train_data, options.batch_size, options.seed, epoch, skip):
                logs = {k: float(v) for k, v in train_step(batch).items()}
                now = time.perf_counter()
                progress.train_seconds.assign_add(now - tick)  # data + step, not evaluation
                tick = now
                step = int(model.training_step_counter)
                for key, value in logs.items():
                    epoch_logs.setdefault(key, []).append(value)
                if step % options.summary_every_steps == 0:
                    with train_writer.as_default(step=step):
                        for key, value in logs.items():
                            tf.summary.scalar(key, value)
                progbar.update(int(progress.step_in_epoch), values=list(logs.items()))
                if time.monotonic() - last_save > 60 * options.checkpoint_minutes:
                    save("timed")
            eval_rmse = metrics.missing_rmse(
                eval_images, model.impute(eval_images * eval_mask, eval_mask), eval_mask)
            step = int(model.training_step_counter)
            with train_writer.as_default(step=step):
                for key, values in epoch_logs.items():
                    tf.summary.scalar(f"epoch_{key}", float(np.mean(values)))
            with test_writer.as_default(step=step):
                tf.summary.scalar("missing_rmse", eval_rmse)
                tf.summary.image("observed_imputed_true",
                                 imputation_grid(model, grid_images, grid_mask)[None], step=step)
                model.end_of_epoch(epoch + 1, options.epochs,
                                   {key: float(np.mean(values)) for key, values in epoch_logs.items()},
                                   eval_images, eval_mask, workdir)
            log(f"epoch {epoch + 1}: test RMSE over missing pixels "
                f"({len(eval_images)} digits) {eval_rmse:.4f}")
            # Only now is the epoch done: interrupted before this, a resume redoes its evaluation.
            progress.epoch.assign_add(1)
            progress.step_in_epoch.assign(0)
            save(f"end of epoch {epoch + 1}")
    except KeyboardInterrupt:
        save("interrupted")
        raise

    imputed = model.impute(test_images * test_mask, test_mask)
    visualize.save_png(imputation_grid(model, grid_images, grid_mask),
                       os.path.join(workdir, "imputations.png"))
    result = dict(run_info)
    result.update({
        "test_rmse": metrics.missing_rmse(test_images, imputed, test_mask),
        "epochs": int(progress.epoch) if model.trainable_imputer else 0,
        "train_seconds": round(float(progress.train_seconds), 2),
        "test_size": int(len(test_images)),
    })
    write_json_atomically(os.path.join(workdir, "metrics.json"), result)
    return result
