"""Checks applied where user arrays enter the library, so bad input fails with a clear message."""

from __future__ import annotations

import numpy as np

from tfimpute.errors import InvalidInputError


def describe_shape(data_shape: tuple[int, ...]) -> str:
    return f"[batch, {', '.join(str(size) for size in data_shape)}]"


def as_batch(array, name: str, data_shape: tuple[int, ...]) -> np.ndarray:
    """Converts ``array`` to float32 [N, *data_shape]; images may also come as [N, H, W] (one
    channel) or flattened [N, H*W*C]."""
    data_shape = tuple(data_shape)
    try:
        array = np.asarray(array, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{name}: cannot be read as a float32 array ({exc})") from None
    if len(data_shape) == 3:
        if array.ndim == 2 and array.shape[1] == int(np.prod(data_shape)):
            array = array.reshape(-1, *data_shape)
        elif array.ndim == 3 and data_shape[2] == 1 and array.shape[1:] == data_shape[:2]:
            array = array[..., None]
    if array.shape[1:] != data_shape or array.ndim != len(data_shape) + 1:
        accepted = describe_shape(data_shape)
        if len(data_shape) == 3:
            accepted += f" (or [batch, {int(np.prod(data_shape))}]"
            accepted += f" / [batch, {data_shape[0]}, {data_shape[1]}])" if data_shape[2] == 1 else ")"
        raise InvalidInputError(f"{name}: expected shape {accepted}, got {list(np.shape(array))}")
    return array


def check_images_and_mask(images, mask, data_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Validates an (images, mask) pair of the model's scale; returns float32 [N, *data_shape] arrays.

    images: finite values in [0, 1] (missing entries may hold anything finite in
    [0, 1]; they are ignored). mask: exactly 0 or 1, 1 = observed.
    """
    images = as_batch(images, "images", data_shape)
    mask = as_batch(mask, "mask", data_shape)
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
