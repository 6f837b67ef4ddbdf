"""Checks applied where user arrays enter the library, so bad input fails with a clear message."""

from __future__ import annotations

import numpy as np

from tfimpute.errors import InvalidInputError

IMAGE_SHAPE = (28, 28, 1)


def as_image_batch(array, name: str) -> np.ndarray:
    """Converts [N, 28, 28, 1], [N, 28, 28] or [N, 784] input to float32 [N, 28, 28, 1]."""
    try:
        array = np.asarray(array, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{name}: cannot be read as a float32 array ({exc})") from None
    if array.ndim == 2 and array.shape[1] == 784:
        array = array.reshape(-1, *IMAGE_SHAPE)
    elif array.ndim == 3 and array.shape[1:] == (28, 28):
        array = array[..., None]
    if array.ndim != 4 or array.shape[1:] != IMAGE_SHAPE:
        raise InvalidInputError(
            f"{name}: expected shape [batch, 28, 28, 1] (or [batch, 28, 28] / [batch, 784]), "
            f"got {list(np.shape(array))}")
    return array


def check_images_and_mask(images, mask) -> tuple[np.ndarray, np.ndarray]:
    """Validates an (images, mask) pair; returns float32 [N, 28, 28, 1] arrays.

    images: finite values in [0, 1] (missing entries may hold anything finite in
    [0, 1]; they are ignored). mask: exactly 0 or 1, 1 = observed.
    """
    images = as_image_batch(images, "images")
    mask = as_image_batch(mask, "mask")
    if images.shape != mask.shape:
        raise InvalidInputError(
            f"images {list(images.shape)} and mask {list(mask.shape)} must have the same shape")
    if not np.all(np.isfinite(images)):
        raise InvalidInputError("images: contains NaN or infinite values")
    if images.size and (images.min() < 0.0 or images.max() > 1.0):
        raise InvalidInputError(
            f"images: pixel values must be in [0, 1], got range [{images.min():g}, {images.max():g}]")
    if not np.all((mask == 0.0) | (mask == 1.0)):
        bad = mask[(mask != 0.0) & (mask != 1.0)][0]
        raise InvalidInputError(f"mask: values must be 0 (missing) or 1 (observed), found {float(bad)!r}")
    return images, mask
