"""Image grids of digits (masked / imputed / true), for PNG files and TensorBoard."""

from __future__ import annotations

import os
import tempfile

import numpy as np
from PIL import Image

MISSING_COLOR = np.array([0.15, 0.25, 0.75], dtype=np.float32)  # missing pixels shown in blue


def image_grid(rows: list[np.ndarray], masks: list[np.ndarray | None] | None = None,
               padding: int = 2) -> np.ndarray:
    """Tiles rows of [N, H, W, C] images (C = 1 gray or 3 RGB) into one RGB float array in [0, 1].

    ``masks[i]`` (1 = observed), when given, paints row i's missing pixels blue.
    """
    masks = masks or [None] * len(rows)
    columns = max(len(r) for r in rows)
    height, width = rows[0].shape[1:3]
    grid = np.ones((len(rows) * (height + padding) + padding,
                    columns * (width + padding) + padding, 3), dtype=np.float32)
    for i, (row, mask) in enumerate(zip(rows, masks)):
        for j, image in enumerate(row):
            pixels = np.clip(image, 0.0, 1.0)
            rgb = pixels[..., :3] if pixels.shape[-1] >= 3 else np.repeat(pixels[..., :1], 3, axis=-1)
            if mask is not None:
                rgb = np.where(mask[j][..., :1] > 0.5, rgb, MISSING_COLOR)
            top, left = padding + i * (height + padding), padding + j * (width + padding)
            grid[top:top + height, left:left + width] = rgb
    return grid


def square_grid(images: np.ndarray) -> np.ndarray:
    """Tiles side² images [side², H, W, C] into a side × side grid (image k at row k mod side)."""
    side = int(round(np.sqrt(len(images))))
    if side * side != len(images):
        raise ValueError(f"square_grid needs a square number of images, got {len(images)}")
    return image_grid([images[i::side] for i in range(side)])


def save_png(grid: np.ndarray, path: str, scale: int = 3) -> None:
    """Writes an RGB float grid as an upscaled PNG, atomically."""
    image = Image.fromarray((np.clip(grid, 0.0, 1.0) * 255).astype(np.uint8))
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".tmp-", suffix=".png")
    with os.fdopen(handle, "wb") as f:
        image.resize((image.width * scale, image.height * scale), Image.NEAREST).save(f, format="PNG")
    os.replace(temporary, path)  # readers never see half a PNG
