"""Missingness mechanisms of the paper's protocol (Section 4), shared by every model.

Convention: ``mask == 1`` marks an OBSERVED pixel, ``mask == 0`` a MISSING one.
Masks are float32 arrays shaped [N, 28, 28, 1], generated once per dataset from
a seed (the training data is incomplete once, as in the paper), and reproducible.

How ``missing_rate`` maps to each mechanism:

* ``independent`` (I.M.): each pixel is missing i.i.d. with probability
  ``missing_rate``.
* ``square`` (S.O., as in MisGAN's code): everything is missing except one
  observed square of side ``s = round(28 * sqrt(1 - missing_rate))`` (clipped to
  [1, 28]), its top-left corner uniform over the positions that keep it inside
  the image. The realised missing fraction is exactly ``1 - s**2 / 784`` (e.g.
  rate 0.3 -> s = 23 -> 0.325; 0.6 -> 18 -> 0.587; 0.9 -> 9 -> 0.897).
* ``patch`` (P.M.): ``num_patches`` (default 32) rectangles are missing. Each
  rectangle's centre is uniform over the 28x28 pixels (rectangles are clipped at
  the border) and its height and width are independently
  ``max(1, round(scale * U(0.5, 1.5)))``. ``scale`` is calibrated by bisection
  on a fixed-seed Monte Carlo estimate so that the expected missing fraction
  equals ``missing_rate`` (overlapping rectangles are counted once). The paper
  does not give its patch sizes; 32 patches is the count for which both of its
  untrained baselines land near its P.M. figures (mean imputation about 0.26,
  diffusion inpainting 0.19 / 0.24 / 0.29 at rates 0.3 / 0.6 / 0.9 against the
  paper's 0.200 / 0.227 / 0.277); 8 larger patches make inpainting 0.03-0.05 worse.

``realised_missing_fraction`` reports what a set of masks actually hides.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from tfimpute.errors import InvalidInputError

MECHANISMS = ("independent", "square", "patch")
DEFAULT_NUM_PATCHES = 32
IMAGE_SIDE = 28
_CALIBRATION_SAMPLES = 4000


def _check_rate(missing_rate: float) -> None:
    if not 0.0 < missing_rate < 1.0:
        raise InvalidInputError(f"missing_rate must be in (0, 1), got {missing_rate}")


def square_side(missing_rate: float) -> int:
    """Side of the observed square for S.O. missingness at ``missing_rate``."""
    _check_rate(missing_rate)
    side = int(round(IMAGE_SIDE * np.sqrt(1.0 - missing_rate)))
    return int(np.clip(side, 1, IMAGE_SIDE))


def _square_masks(num: int, side: int, rng: np.random.Generator) -> np.ndarray:
    tops = rng.integers(0, IMAGE_SIDE - side + 1, size=num)
    lefts = rng.integers(0, IMAGE_SIDE - side + 1, size=num)
    coords = np.arange(IMAGE_SIDE)
    rows = (coords[None, :] >= tops[:, None]) & (coords[None, :] < tops[:, None] + side)
    cols = (coords[None, :] >= lefts[:, None]) & (coords[None, :] < lefts[:, None] + side)
    return rows[:, :, None] & cols[:, None, :]  # True = observed


def _patch_missing(num: int, num_patches: int, scale: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean [num, 28, 28], True where one of the rectangles covers the pixel."""
    coords = np.arange(IMAGE_SIDE)
    missing = np.zeros((num, IMAGE_SIDE, IMAGE_SIDE), dtype=bool)
    for _ in range(num_patches):
        heights = np.maximum(1, np.round(scale * rng.uniform(0.5, 1.5, size=num))).astype(int)
        widths = np.maximum(1, np.round(scale * rng.uniform(0.5, 1.5, size=num))).astype(int)
        tops = rng.integers(0, IMAGE_SIDE, size=num) - heights // 2
        lefts = rng.integers(0, IMAGE_SIDE, size=num) - widths // 2
        rows = (coords[None, :] >= tops[:, None]) & (coords[None, :] < (tops + heights)[:, None])
        cols = (coords[None, :] >= lefts[:, None]) & (coords[None, :] < (lefts + widths)[:, None])
        missing |= rows[:, :, None] & cols[:, None, :]
    return missing


@functools.lru_cache(maxsize=None)
def patch_scale(missing_rate: float, num_patches: int = DEFAULT_NUM_PATCHES) -> float:
    """Rectangle scale whose expected missing fraction is ``missing_rate`` (bisection)."""
    _check_rate(missing_rate)
    if num_patches < 1:
        raise InvalidInputError(f"num_patches must be >= 1, got {num_patches}")

    def expected_fraction(scale: float) -> float:
        rng = np.random.default_rng(12345)  # fixed: the calibration is part of the definition
        return float(_patch_missing(_CALIBRATION_SAMPLES, num_patches, scale, rng).mean())

    # At scale 2 * 28 one rectangle covers the whole image wherever its centre falls.
    low, high = 0.0, 2.0 * IMAGE_SIDE
    for _ in range(30):
        mid = 0.5 * (low + high)
        if expected_fraction(mid) < missing_rate:
            low = mid
        else:
            high = mid
    return 0.5 * (low + high)


def generate_masks(mechanism: str, missing_rate: float, num_masks: int, seed: int,
                   num_patches: int = DEFAULT_NUM_PATCHES) -> np.ndarray:
    """Masks for ``num_masks`` images: float32 [N, 28, 28, 1], 1 = observed, 0 = missing."""
    _check_rate(missing_rate)
    if num_masks < 0:
        raise InvalidInputError(f"num_masks must be >= 0, got {num_masks}")
    rng = np.random.default_rng(seed)
    if mechanism == "independent":
        observed = rng.random((num_masks, IMAGE_SIDE, IMAGE_SIDE)) >= missing_rate
    elif mechanism == "square":
        observed = _square_masks(num_masks, square_side(missing_rate), rng)
    elif mechanism == "patch":
        scale = patch_scale(float(missing_rate), int(num_patches))
        observed = ~_patch_missing(num_masks, num_patches, scale, rng)
    else:
        raise InvalidInputError(
            f"unknown missingness mechanism {mechanism!r}; choose one of {', '.join(MECHANISMS)}")
    return observed.astype(np.float32)[..., None]


def realised_missing_fraction(mask: np.ndarray) -> float:
    """Fraction of pixels that a set of masks hides."""
    return float(1.0 - np.mean(mask))


@dataclasses.dataclass(frozen=True)
class IncompleteData:
    """What a model may see: observed pixels (missing ones zeroed), the mask and the labels.

    The true values of missing pixels are discarded here, so they cannot reach a model.
    Labels are complete (only pixels go missing); class-conditional models (CGAN) use them,
    the others ignore them. Unknown labels are −1.
    """

    observed: np.ndarray  # [N, 28, 28, 1] float32, 0 where missing
    mask: np.ndarray  # [N, 28, 28, 1] float32, 1 = observed
    labels: np.ndarray | None = None  # [N] int32 digit classes, or None when unknown

    def label_array(self) -> np.ndarray:
        """int32 [N]: the labels, or −1 everywhere when they are unknown."""
        if self.labels is None:
            return np.full(len(self), -1, np.int32)
        return self.labels.astype(np.int32)

    def __len__(self) -> int:
        return len(self.mask)

    def observed_pixel_means(self) -> np.ndarray:
        """Each pixel's mean over the digits where it is observed, float64 [28, 28, 1].

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
