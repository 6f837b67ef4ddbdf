"""Missingness mechanisms: the paper's protocol (Section 4) for images of any size, and MAR / MNAR.

Convention: ``mask == 1`` marks an OBSERVED entry, ``mask == 0`` a MISSING one.
Masks are float32 arrays shaped like the data ([N, H, W, C] images or [N, D] vectors),
generated once per dataset from a seed (the training data is incomplete once, as in the
paper), and reproducible. An image mechanism hides all channels of a pixel together.
The paper's mechanisms are defined on H x W; for MNIST (28 x 28) they are exactly the
paper's. How ``missing_rate`` maps to each mechanism:

* ``independent`` (I.M.): each pixel (vectors: each entry) is missing i.i.d. with
  probability ``missing_rate``.
* ``square`` (S.O., as in MisGAN's code; images only): everything is missing except one
  observed rectangle of sides ``round(H * sqrt(1 - missing_rate))`` by
  ``round(W * sqrt(1 - missing_rate))`` (clipped to [1, H] / [1, W]), its top-left corner
  uniform over the positions that keep it inside the image. On MNIST the square's side is
  ``s = round(28 * sqrt(1 - missing_rate))`` and the realised missing fraction exactly
  ``1 - s**2 / 784`` (rate 0.3 -> s = 23 -> 0.325; 0.6 -> 18 -> 0.587; 0.9 -> 9 -> 0.897).
* ``patch`` (P.M.; images only): ``num_patches`` (default 32) rectangles are missing. Each
  rectangle's centre is uniform over the H x W pixels (rectangles are clipped at the border)
  and its height and width are independently ``max(1, round(scale * U(0.5, 1.5)))``.
  ``scale`` is calibrated for the image size by bisection on a fixed-seed Monte Carlo
  estimate so that the expected missing fraction equals ``missing_rate`` (overlapping
  rectangles are counted once). The paper does not give its patch sizes; 32 patches is the
  count for which both of its untrained baselines land near its P.M. figures on MNIST (mean
  imputation about 0.26, diffusion inpainting 0.19 / 0.24 / 0.29 at rates 0.3 / 0.6 / 0.9
  against the paper's 0.200 / 0.227 / 0.277); 8 larger patches make inpainting 0.03-0.05 worse.
* ``mar`` (missing at random, the logistic mechanism of Muzellec et al. 2020, "Missing data
  imputation using optimal transport", used by hyperimpute and GAIN's benchmarks): a random
  30% of the columns (at least one; images: of the pixels) are always observed; every other
  column j is missing with probability ``sigmoid(x_obs · w_j + b_j)``, ``w_j`` random
  normal weights on the standardised always-observed columns and ``b_j`` set by root finding
  so that column j is missing at rate ``missing_rate``. Missingness depends on observed
  values only.
* ``mnar`` (missing not at random, self-masking, the same paper's quantile-free logistic
  variant): entry (i, j) is missing with probability ``sigmoid(2 * z_ij + b_j)``, ``z_ij``
  the standardised value itself, ``b_j`` set so that column j is missing at rate
  ``missing_rate``: larger values are more likely missing.

``mar`` and ``mnar`` read the values they condition on (images: each pixel's mean over its
channels); a mask generator is the only code that sees them, the model never does. On vectors
only the entry-wise mechanisms (``independent``, ``mar``, ``mnar``) apply.

A dataset's own holes (its NaN or its ``mask``) are combined with a synthetic mask by
:func:`combine`: an entry is observed only if both observe it.
``realised_missing_fraction`` reports what a set of masks actually hides.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Protocol

import numpy as np
from scipy import optimize, special

from tfimpute.data import MNIST_SHAPE
from tfimpute.errors import InvalidInputError

IMAGE_MECHANISMS = ("independent", "square", "patch")
VALUE_MECHANISMS = ("mar", "mnar")  # they read the data's values
MECHANISMS = IMAGE_MECHANISMS + VALUE_MECHANISMS
ENTRYWISE_MECHANISMS = ("independent",) + VALUE_MECHANISMS
DEFAULT_NUM_PATCHES = 32
MAR_OBSERVED_FRACTION = 0.3
MNAR_STRENGTH = 2.0
_CALIBRATION_SAMPLES = 4000


def _check_rate(missing_rate: float) -> None:
    if not 0.0 < missing_rate < 1.0:
        raise InvalidInputError(f"missing_rate must be in (0, 1), got {missing_rate}")


def rectangle_sides(missing_rate: float, height: int = MNIST_SHAPE[0],
                    width: int = MNIST_SHAPE[1]) -> tuple[int, int]:
    """Sides of the observed rectangle for S.O. missingness at ``missing_rate``."""
    _check_rate(missing_rate)
    keep = np.sqrt(1.0 - missing_rate)
    return (int(np.clip(round(height * keep), 1, height)), int(np.clip(round(width * keep), 1, width)))


def square_side(missing_rate: float) -> int:
    """Side of the observed square for S.O. missingness on MNIST at ``missing_rate``."""
    return rectangle_sides(missing_rate)[0]


def _square_masks(num: int, sides: tuple[int, int], image_size: tuple[int, int],
                  rng: np.random.Generator) -> np.ndarray:
    (side_h, side_w), (height, width) = sides, image_size
    tops = rng.integers(0, height - side_h + 1, size=num)
    lefts = rng.integers(0, width - side_w + 1, size=num)
    rows = (np.arange(height)[None, :] >= tops[:, None]) & (np.arange(height)[None, :] < tops[:, None] + side_h)
    cols = (np.arange(width)[None, :] >= lefts[:, None]) & (np.arange(width)[None, :] < lefts[:, None] + side_w)
    return rows[:, :, None] & cols[:, None, :]  # True = observed


def _patch_missing(num: int, num_patches: int, scale: float, rng: np.random.Generator,
                   image_size: tuple[int, int] = MNIST_SHAPE[:2]) -> np.ndarray:
    """Boolean [num, H, W], True where one of the rectangles covers the pixel."""
    height, width = image_size
    row_coords, col_coords = np.arange(height), np.arange(width)
    missing = np.zeros((num, height, width), dtype=bool)
    for _ in range(num_patches):
        heights = np.maximum(1, np.round(scale * rng.uniform(0.5, 1.5, size=num))).astype(int)
        widths = np.maximum(1, np.round(scale * rng.uniform(0.5, 1.5, size=num))).astype(int)
        tops = rng.integers(0, height, size=num) - heights // 2
        lefts = rng.integers(0, width, size=num) - widths // 2
        rows = (row_coords[None, :] >= tops[:, None]) & (row_coords[None, :] < (tops + heights)[:, None])
        cols = (col_coords[None, :] >= lefts[:, None]) & (col_coords[None, :] < (lefts + widths)[:, None])
        missing |= rows[:, :, None] & cols[:, None, :]
    return missing


@functools.lru_cache(maxsize=None)
def patch_scale(missing_rate: float, num_patches: int = DEFAULT_NUM_PATCHES,
                image_size: tuple[int, int] = MNIST_SHAPE[:2]) -> float:
    """Rectangle scale whose expected missing fraction on ``image_size`` is ``missing_rate`` (bisection)."""
    _check_rate(missing_rate)
    if num_patches < 1:
        raise InvalidInputError(f"num_patches must be >= 1, got {num_patches}")
    # Fewer calibration images for large images keep the cost near MNIST's.
    samples = max(200, _CALIBRATION_SAMPLES * MNIST_SHAPE[0] * MNIST_SHAPE[1] // (image_size[0] * image_size[1]))

    def expected_fraction(scale: float) -> float:
        rng = np.random.default_rng(12345)  # fixed: the calibration is part of the definition
        return float(_patch_missing(min(samples, _CALIBRATION_SAMPLES), num_patches, scale, rng,
                                    image_size).mean())

    # At scale 2 * max(H, W) one rectangle covers the whole image wherever its centre falls.
    low, high = 0.0, 2.0 * max(image_size)
    for _ in range(30):
        mid = 0.5 * (low + high)
        if expected_fraction(mid) < missing_rate:
            low = mid
        else:
            high = mid
    return 0.5 * (low + high)


def _fitted_intercept(logits: np.ndarray, missing_rate: float) -> float:
    """b such that mean(sigmoid(logits + b)) = missing_rate (monotone in b: a bracketed root)."""
    return float(optimize.brentq(lambda b: special.expit(logits + b).mean() - missing_rate, -50.0, 50.0))


def _standardised(values: np.ndarray) -> np.ndarray:
    """Per column (value - mean) / std over the known values; an unknown (NaN) value becomes 0, the mean."""
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column: its z are all 0
        spread = np.nanstd(values, axis=0)
        z = (values - np.nanmean(values, axis=0)) / np.where(spread > 0, spread, 1.0)
    return np.nan_to_num(z, nan=0.0)


def _value_masks(mechanism: str, missing_rate: float, values: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
    """MAR / MNAR on [N, F] values (see the module docstring); True = observed."""
    num, features = values.shape
    if mechanism == "mar" and features < 2:
        raise InvalidInputError("--missingness=mar needs at least 2 columns: one that drives the missingness "
                                "of another")
    z = _standardised(values.astype(np.float64))
    missing_probability = np.zeros_like(z)
    if mechanism == "mar":
        drivers = rng.permutation(features)[:max(1, int(round(MAR_OBSERVED_FRACTION * features)))]
        driven = np.setdiff1d(np.arange(features), drivers)
        weights = rng.standard_normal((len(drivers), len(driven))) / np.sqrt(len(drivers))
        logits = z[:, drivers] @ weights
        for k, column in enumerate(driven):
            missing_probability[:, column] = special.expit(
                logits[:, k] + _fitted_intercept(logits[:, k], missing_rate))
    else:
        for column in range(features):
            logits = MNAR_STRENGTH * z[:, column]
            missing_probability[:, column] = special.expit(logits + _fitted_intercept(logits, missing_rate))
    return rng.random((num, features)) >= missing_probability


def generate_masks(mechanism: str, missing_rate: float, num_masks: int, seed: int,
                   num_patches: int = DEFAULT_NUM_PATCHES, shape: tuple[int, ...] = MNIST_SHAPE,
                   values: np.ndarray | None = None) -> np.ndarray:
    """Masks for ``num_masks`` examples of ``shape``: float32 [N, *shape], 1 = observed, 0 = missing.

    ``values`` ([N, *shape]; NaN where the data themselves miss a value) are what ``mar`` and
    ``mnar`` condition on; the others ignore them.
    """
    _check_rate(missing_rate)
    if num_masks < 0:
        raise InvalidInputError(f"num_masks must be >= 0, got {num_masks}")
    if mechanism not in MECHANISMS:
        raise InvalidInputError(
            f"unknown missingness mechanism {mechanism!r}; choose one of {', '.join(MECHANISMS)}")
    shape = tuple(shape)
    is_image = len(shape) == 3
    if not is_image and mechanism not in ENTRYWISE_MECHANISMS:
        raise InvalidInputError(f"--missingness={mechanism} needs images; on vectors choose one of "
                                f"{', '.join(ENTRYWISE_MECHANISMS)}")
    entries = shape[:2] if is_image else shape  # an image mechanism draws per pixel, channels together
    rng = np.random.default_rng(seed)
    if mechanism == "independent":
        observed = rng.random((num_masks, *entries)) >= missing_rate
    elif mechanism == "square":
        observed = _square_masks(num_masks, rectangle_sides(missing_rate, *entries), entries, rng)
    elif mechanism == "patch":
        scale = patch_scale(float(missing_rate), int(num_patches), entries)
        observed = ~_patch_missing(num_masks, num_patches, scale, rng, entries)
    else:
        if values is None or len(values) != num_masks:
            raise InvalidInputError(f"--missingness={mechanism} needs the values of the {num_masks} examples")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a pixel missing in every channel stays NaN
            flat = np.nanmean(np.asarray(values, np.float64).reshape(num_masks, *entries, -1), axis=-1)
        observed = _value_masks(mechanism, missing_rate, flat.reshape(num_masks, -1), rng).reshape(
            num_masks, *entries)
    observed = observed.astype(np.float32)
    return np.repeat(observed[..., None], shape[2], axis=-1) if is_image else observed


def combine(own_mask: np.ndarray | None, synthetic: np.ndarray) -> np.ndarray:
    """The mask a model sees: observed only where the data AND the synthetic mask observe."""
    return synthetic if own_mask is None else (own_mask * synthetic).astype(np.float32)


def realised_missing_fraction(mask: np.ndarray) -> float:
    """Fraction of pixels that a set of masks hides."""
    return float(1.0 - np.mean(mask))


class TrainingExamples(Protocol):
    """What a model reads of its incomplete training data before training (``prepare``,
    ``settings_for_data``): :class:`IncompleteData` in memory, or a streamed split
    (:class:`tfimpute.streaming.StreamedData`, which computes it in one pass)."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __len__(self) -> int: ...

    def observed_fraction(self) -> np.ndarray: ...

    def missing_fraction(self) -> float: ...

    def label_count(self) -> int | None: ...

    def observed_pixel_means(self) -> np.ndarray: ...


@dataclasses.dataclass(frozen=True)
class IncompleteData:
    """What a model may see: observed pixels (missing ones zeroed), the mask and the labels.

    Models read it through :class:`TrainingExamples` only.

    The true values of missing pixels are discarded here, so they cannot reach a model.
    Labels are complete (only pixels go missing); class-conditional models (CGAN) use them,
    the others ignore them. Unknown labels are −1.
    """

    observed: np.ndarray  # [N, *shape] float32, 0 where missing
    mask: np.ndarray  # [N, *shape] float32, 1 = observed
    labels: np.ndarray | None = None  # [N] int32 digit classes, or None when unknown

    def label_array(self) -> np.ndarray:
        """int32 [N]: the labels, or −1 everywhere when they are unknown."""
        if self.labels is None:
            return np.full(len(self), -1, np.int32)
        return self.labels.astype(np.int32)

    def __len__(self) -> int:
        return len(self.mask)

    @property
    def shape(self) -> tuple[int, ...]:
        """One example's shape."""
        return tuple(self.mask.shape[1:])

    def observed_fraction(self) -> np.ndarray:
        """Per entry, the fraction of examples that observe it, float64 [*shape]."""
        return self.mask.astype(np.float64).mean(axis=0)

    def missing_fraction(self) -> float:
        """The fraction of all entries that the masks hide."""
        return realised_missing_fraction(self.mask)

    def label_count(self) -> int | None:
        """One more than the largest label when every label is known; None otherwise."""
        labels = self.label_array()
        return None if len(labels) == 0 or np.any(labels < 0) else int(labels.max()) + 1

    def observed_pixel_means(self) -> np.ndarray:
        """Each entry's mean over the examples where it is observed, float64 [*shape].

        A pixel never observed gets the mean of all observed pixels. Multiplying by
        the mask keeps whatever the missing positions hold out of the means.
        """
        mask = self.mask.astype(np.float64)
        sums = (self.observed * mask).sum(axis=0)
        counts = mask.sum(axis=0)
        overall = sums.sum() / max(counts.sum(), 1.0)
        return np.where(counts > 0, sums / np.maximum(counts, 1.0), overall)


def make_incomplete(images: np.ndarray, mask: np.ndarray,
                    labels: np.ndarray | None = None) -> IncompleteData:
    """Hides the missing pixels of ``images`` (sets them to 0); ``labels`` are kept whole."""
    if images.shape != mask.shape:
        raise InvalidInputError(f"images {images.shape} and mask {mask.shape} differ in shape")
    if labels is not None and len(labels) != len(images):
        raise InvalidInputError(f"{len(labels)} labels for {len(images)} images")
    return IncompleteData(observed=(images * mask).astype(np.float32), mask=mask.astype(np.float32),
                          labels=None if labels is None else np.asarray(labels, np.int32))
