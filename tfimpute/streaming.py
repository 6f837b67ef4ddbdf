"""Splits that stream through ``tf.data`` instead of being held in memory (``tfimpute.train --stream``).

A streamed split is read in its stored order, a block at a time, and turned into float32 batch by
batch: no float32 copy of the whole split exists (a ``tfds:`` dataset larger than memory trains).

* **Masks per example.** A streamed split's synthetic holes are drawn for each example from
  (``seed``, the example's number in the split) by stateless random ops (:func:`example_mask`), so
  an example's mask does not depend on the batch or the order it is read in, and a prefix of the
  split loaded in memory gets exactly the masks training saw (:func:`example_masks`).
  The mechanisms are those of :mod:`tfimpute.masks` (the same rectangle sides, the same calibrated
  patch scale); only their random draws differ from the in-memory masks, which draw a whole split
  from one generator. MAR and MNAR need statistics of the whole split first, and are refused.
* **Order.** Each epoch reads the split in blocks of :data:`SHUFFLE_BLOCK` examples and permutes
  every block by a stateless permutation of (seed, epoch, block): the order depends only on them
  (a resumed epoch skips exactly the batches it had done), not on TensorFlow's global seed.
  Examples mix within a block, not across the whole split.
* **Statistics.** What a model reads in ``prepare`` and ``settings_for_data`` (observed means,
  observation rates, missing fraction, label count; see :class:`tfimpute.masks.IncompleteData`)
  comes from one pass over the split.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
from collections.abc import Callable, Iterator

import keras
import numpy as np
import tensorflow as tf

from tfimpute import masks
from tfimpute.errors import InvalidInputError

STREAMABLE_MECHANISMS = masks.IMAGE_MECHANISMS  # drawn per example; MAR / MNAR need the whole split
SHUFFLE_BLOCK = 4096  # examples permuted together (the most raw examples held at once)
READ_BATCH = 1024  # examples per batch of the statistics pass and of the test chunks

Examples = Callable[[], tf.data.Dataset]  # a split's (image uint8 [H, W, C], label int64; -1 unknown), stored order


def check_streamable(mechanism: str) -> None:
    if mechanism not in STREAMABLE_MECHANISMS:
        raise InvalidInputError(
            f"--missingness={mechanism} needs statistics of the whole split before any mask is drawn; "
            f"a streamed dataset takes {', '.join(STREAMABLE_MECHANISMS)} (or leave out --stream)")


@dataclasses.dataclass(frozen=True)
class Holes:
    """The synthetic holes of a streamed split: a mechanism of :mod:`tfimpute.masks` and its seed."""

    mechanism: str
    missing_rate: float
    seed: int
    shape: tuple[int, ...]
    num_patches: int = masks.DEFAULT_NUM_PATCHES

    def __post_init__(self) -> None:
        check_streamable(self.mechanism)
        masks.generate_masks(self.mechanism, self.missing_rate, 0, self.seed, self.num_patches, self.shape)


def _spans(starts: tf.Tensor, lengths: tf.Tensor, size: int) -> tf.Tensor:
    """bool [K, size]: row k is True on [starts[k], starts[k] + lengths[k])."""
    coordinates = tf.range(size)[None, :]
    return (coordinates >= starts[:, None]) & (coordinates < (starts + lengths)[:, None])


@tf.autograph.experimental.do_not_convert  # Python branches on the mechanism only; no tensor control flow
def example_mask(holes: Holes, index: tf.Tensor) -> tf.Tensor:
    """float32 [*shape] mask (1 = observed) of example number ``index`` under ``holes``.

    The definitions of :func:`tfimpute.masks.generate_masks`: I.M. hides each pixel (vectors: entry)
    with probability ``missing_rate``; S.O. keeps one rectangle of :func:`tfimpute.masks.rectangle_sides`
    at a uniform position; P.M. hides ``num_patches`` rectangles of :func:`tfimpute.masks.patch_scale`.
    An image mechanism hides all channels of a pixel together.
    """
    seed = tf.stack([tf.constant(holes.seed, tf.int64), tf.cast(index, tf.int64)])
    is_image = len(holes.shape) == 3
    entries = holes.shape[:2] if is_image else holes.shape
    if holes.mechanism == "independent":
        observed = tf.random.stateless_uniform(entries, seed) >= holes.missing_rate
    elif holes.mechanism == "square":
        (height, width), sides = entries, masks.rectangle_sides(holes.missing_rate, *entries)
        corner = tf.random.stateless_uniform([2], seed)
        positions = tf.constant([height - sides[0] + 1, width - sides[1] + 1], tf.float32)
        top, left = tf.unstack(tf.cast(tf.floor(corner * positions), tf.int32))
        observed = (_spans(top[None], tf.constant([sides[0]]), height)[0][:, None]
                    & _spans(left[None], tf.constant([sides[1]]), width)[0][None, :])
    else:
        height, width = entries
        scale = masks.patch_scale(float(holes.missing_rate), int(holes.num_patches), tuple(entries))
        draws = tf.random.stateless_uniform([holes.num_patches, 4], seed)
        heights = tf.maximum(1, tf.cast(tf.round(scale * (0.5 + draws[:, 0])), tf.int32))
        widths = tf.maximum(1, tf.cast(tf.round(scale * (0.5 + draws[:, 1])), tf.int32))
        tops = tf.cast(tf.floor(draws[:, 2] * height), tf.int32) - heights // 2
        lefts = tf.cast(tf.floor(draws[:, 3] * width), tf.int32) - widths // 2
        covered = _spans(tops, heights, height)[:, :, None] & _spans(lefts, widths, width)[:, None, :]
        observed = ~tf.reduce_any(covered, axis=0)
    observed = tf.cast(observed, tf.float32)
    return tf.tile(observed[..., None], [1, 1, holes.shape[2]]) if is_image else observed


def example_masks(holes: Holes, count: int) -> np.ndarray:
    """float32 [count, *shape]: the masks of examples 0 .. count-1 (what a streamed run drew for them)."""
    batches = (tf.data.Dataset.range(count)
               .map(functools.partial(example_mask, holes), num_parallel_calls=tf.data.AUTOTUNE)
               .batch(READ_BATCH))
    parts = [batch.numpy() for batch in batches]
    return np.concatenate(parts) if parts else np.zeros((0, *holes.shape), np.float32)


def _block_permutation(seed: tf.Tensor, block: tf.Tensor, size: tf.Tensor) -> tf.Tensor:
    return tf.argsort(tf.random.stateless_uniform([size], tf.stack([seed, block])))


class _Split:
    """``count`` examples of ``examples()`` with ``holes`` (None: nothing hidden) as incomplete data."""

    def __init__(self, examples: Examples, count: int, shape: tuple[int, ...], holes: Holes | None):
        if holes is not None and tuple(holes.shape) != tuple(shape):
            raise InvalidInputError(f"holes drawn for examples shaped {holes.shape}, the data are {shape}")
        self._examples, self._count, self._shape, self._holes = examples, count, tuple(shape), holes

    def __len__(self) -> int:
        return self._count

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    def _numbered(self) -> tf.data.Dataset:
        return self._examples().take(self._count).enumerate()

    def _complete(self, index: tf.Tensor, example: tuple[tf.Tensor, tf.Tensor]) -> tuple[tf.Tensor, ...]:
        """(values float32 in [0, 1], mask, label int32)."""
        image, label = example
        values = tf.reshape(tf.cast(image, tf.float32) / 255.0, self._shape)
        mask = tf.ones(self._shape) if self._holes is None else example_mask(self._holes, index)
        return values, mask, tf.cast(label, tf.int32)

    def _batches(self, size: int) -> tf.data.Dataset:
        return (self._numbered().map(self._complete, num_parallel_calls=tf.data.AUTOTUNE)
                .batch(size).prefetch(2))


class StreamedData(_Split):
    """The incomplete training examples of a streamed split: the epochs the training loop reads and the
    :class:`tfimpute.masks.TrainingExamples` a model's ``prepare`` reads, without the arrays."""

    def epoch_batches(self, batch_size: int, seed: int, epoch: int, skip_batches: int = 0) -> tf.data.Dataset:
        """Batches (observed, mask, labels) of one epoch in an order that depends only on (seed, epoch)."""
        epoch_seed = tf.constant(int(np.random.default_rng([seed, epoch]).integers(2 ** 62)), tf.int64)

        def permuted(block: tf.Tensor, indices: tf.Tensor, images: tf.Tensor, labels: tf.Tensor):
            order = _block_permutation(epoch_seed, block, tf.shape(indices)[0])
            return tf.data.Dataset.from_tensor_slices(
                (tf.gather(indices, order), (tf.gather(images, order), tf.gather(labels, order))))

        def incomplete(index: tf.Tensor, example: tuple[tf.Tensor, tf.Tensor]) -> tuple[tf.Tensor, ...]:
            values, mask, label = self._complete(index, example)
            return values * mask, mask, label

        return (self._numbered().batch(SHUFFLE_BLOCK).enumerate()
                .flat_map(lambda block, numbered: permuted(block, numbered[0], *numbered[1]))
                .skip(skip_batches * batch_size)
                .map(incomplete, num_parallel_calls=tf.data.AUTOTUNE)
                .batch(batch_size).prefetch(2))

    @functools.cached_property
    def _statistics(self) -> dict[str, np.ndarray | int]:
        """One pass: per-entry sums of observed values and counts of observations; label range."""
        sums, counts = np.zeros(self._shape), np.zeros(self._shape)
        lowest, highest = np.iinfo(np.int64).max, -1
        print(f"Reading the {self._count} training examples once for the model's statistics")
        progbar = keras.utils.Progbar(self._count, unit_name="example", verbose=1 if sys.stdout.isatty() else 2)
        done = 0
        for values, mask, labels in self._batches(READ_BATCH):
            sums += tf.reduce_sum(values * mask, axis=0).numpy()
            counts += tf.reduce_sum(mask, axis=0).numpy()
            labels = labels.numpy()
            lowest, highest = min(lowest, int(labels.min())), max(highest, int(labels.max()))
            done += len(labels)
            progbar.update(done)
        if done != self._count:
            raise InvalidInputError(f"the split holds {done} examples, expected {self._count}")
        return {"sums": sums, "counts": counts, "lowest_label": lowest, "highest_label": highest}

    def observed_fraction(self) -> np.ndarray:
        return self._statistics["counts"] / self._count

    def missing_fraction(self) -> float:
        return float(1.0 - self._statistics["counts"].sum() / (self._count * math.prod(self._shape)))

    def label_count(self) -> int | None:
        statistics = self._statistics
        return None if statistics["lowest_label"] < 0 else int(statistics["highest_label"]) + 1

    def observed_pixel_means(self) -> np.ndarray:
        sums, counts = self._statistics["sums"], self._statistics["counts"]
        overall = sums.sum() / max(counts.sum(), 1.0)
        return np.where(counts > 0, sums / np.maximum(counts, 1.0), overall)


class StreamedTestSplit(_Split):
    """Test examples read a chunk at a time: their true values, the masks they are imputed under, and
    no holes of their own (TFDS images are complete)."""

    def head(self, count: int) -> tuple[np.ndarray, np.ndarray, None]:
        """The first ``count`` examples (at most the split): true values and masks."""
        values, mask, _ = next(iter(self._batches(max(1, min(count, self._count)))))
        return values.numpy()[:count], mask.numpy()[:count], None

    def chunks(self, size: int = READ_BATCH) -> Iterator[tuple[np.ndarray, np.ndarray, None]]:
        for values, mask, _ in self._batches(size):
            yield values.numpy(), mask.numpy(), None

    def missing_fraction(self) -> float:
        """Fraction of the entries the masks hide (from the masks alone; no example is read)."""
        if self._holes is None:
            return 0.0
        hidden = (tf.data.Dataset.range(self._count)
                  .map(lambda index: 1.0 - tf.reduce_mean(example_mask(self._holes, index)),
                       num_parallel_calls=tf.data.AUTOTUNE)
                  .reduce(tf.constant(0.0, tf.float64), lambda total, x: total + tf.cast(x, tf.float64)))
        return float(hidden.numpy()) / self._count
