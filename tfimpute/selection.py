"""Choosing an inference setting without looking at the test split (the paper's Section 5: validation
"in a leave-one-out style" when no complete data exist).

A share of the entries that the training data OBSERVED is hidden as well; the trained model imputes
the training examples under their training masks minus those entries, and the RMSE over the hidden
entries (whose true values are known) scores each candidate value of the setting. No test example
is used.

The hidden entries are scattered one by one (``block`` 1) or, for images, hidden in ``block`` x
``block`` squares, so that they look like the holes a model meets at test time: a pixel whose
neighbours are all observed is an easy interpolation, a patch is not, and a setting chosen on
scattered pixels can be the wrong one for patches (docs/results/beyond, P.M. 0.9).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tfimpute import experiment, masks, metrics, workdir
from tfimpute.datasets import Dataset, rescaled
from tfimpute.errors import InvalidInputError
from tfimpute.training import model_inputs

# The hidden entries add to the examples' holes: validation runs at the missing rate r + f (1 - r)
# instead of the model's r, and the better inference setting can differ between the two (the RBMs'
# --mean_field_steps do; docs/results/beyond). So f is small, and the examples many enough that
# about 20,000 entries are hidden even at r = 0.9.
DEFAULT_HIDE_FRACTION = 0.05
DEFAULT_EXAMPLES = 5000

_HIDE_STREAM = 0x5E1EC7  # second key of the hidden entries' generator


def hide_observed(mask: np.ndarray, fraction: float, seed: int, block: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(the mask with a seeded ``fraction`` of its observed entries hidden too, the hidden entries),
    both float32 like ``mask``; an image's channels of one pixel are hidden together.

    ``block`` > 1 (images [N, H, W, C] only) hides ``block`` x ``block`` squares of pixels instead of
    single pixels: each square's top-left corner is a pixel of the image padded by ``block`` - 1 rows
    above and ``block`` - 1 columns to the left, chosen independently with probability
    1 - (1 - fraction)^(1 / block²), so that every pixel, at the border too, is hidden with probability
    ``fraction`` (independently of the mask).
    """
    if not 0.0 < fraction < 1.0:
        raise InvalidInputError(f"hide_fraction must be in (0, 1), got {fraction}")
    if block < 1:
        raise InvalidInputError(f"hide_block must be >= 1, got {block}")
    if block > 1 and (mask.ndim != 4 or block > min(mask.shape[1:3])):
        raise InvalidInputError(f"hide_block={block} needs images of at least {block}x{block} pixels; "
                                f"the data are {'x'.join(map(str, mask.shape[1:]))}")
    draw_shape = mask.shape[:-1] + (1,) if mask.ndim == 4 else mask.shape
    # Keyed apart from the mask generators' streams: an independent mask drawn from the same seed
    # would otherwise be made of the very same uniforms, and no observed entry would be hidden.
    rng = np.random.default_rng([seed, _HIDE_STREAM])
    if block == 1:
        hidden = rng.random(draw_shape) < fraction
    else:
        corner_probability = 1.0 - (1.0 - fraction) ** (1.0 / block ** 2)
        n, height, width, _ = draw_shape
        corners = rng.random((n, height + block - 1, width + block - 1)) < corner_probability
        # Pixel (r, c) is hidden when a corner lies in rows r..r+block-1, columns c..c+block-1 of the
        # padded grid: the squares that cover it.
        windows = np.lib.stride_tricks.sliding_window_view(corners, (block, block), axis=(1, 2))
        hidden = windows.any(axis=(-2, -1))[..., None]
    held = (np.broadcast_to(hidden, mask.shape) & (mask > 0.5)).astype(np.float32)
    return (mask * (1.0 - held)).astype(np.float32), held


def hide_block_like_holes(data: dict[str, Any], data_shape: tuple[int, ...]) -> int:
    """The ``hide_block`` whose squares look like the training holes: for ``patch`` masks on images
    the side of their rectangles (the calibrated scale, rounded: 3, 5, 8 on MNIST at rates 0.3, 0.6,
    0.9), else 1 (single entries). A pixel hidden alone among observed ones is an easy interpolation,
    a patch is not (docs/results/beyond, "Hidden squares for patch holes")."""
    if not experiment.synthetic_training_holes(data) or data["missingness"] != "patch" or len(data_shape) != 3:
        return 1
    scale = masks.patch_scale(float(data["missing_rate"]), int(data["num_patches"]), tuple(data_shape[:2]))
    return max(1, round(scale))


def leave_out_rmse(workdir_path: str, dataset: Dataset, setting: str, values: list[Any], examples: int,
                   hide_fraction: float = DEFAULT_HIDE_FRACTION, seed: int = 0,
                   fixed: dict[str, Any] | None = None, hide_block: int = 1) -> list[dict[str, Any]]:
    """For each value of inference ``setting``: the RMSE over a ``hide_fraction`` of the observed
    entries of the first ``examples`` training examples (their training masks, as in training), hidden
    in ``hide_block`` x ``hide_block`` squares (:func:`hide_observed`).
    ``fixed``: other inference settings given the same value for every candidate.

    ``dataset`` is the workdir's dataset (read with its ``data`` options). Returns one dict per value:
    ``value``, ``validation_rmse``, ``hidden_entries``.
    """
    config = workdir.read_config(workdir_path)
    if config is None:
        raise InvalidInputError(f"{workdir_path}: no {workdir.CONFIG_FILE}; is this a tfimpute training workdir?")
    data = config["data"]
    count = min(examples, data["train_size"], len(dataset.train_x))
    if count < 1:
        raise InvalidInputError(f"examples must be >= 1, got {examples}")
    shaped = experiment.prepared(rescaled(dataset, experiment.codec_of(config, dataset.shape)), data)
    train_mask = experiment.training_mask(shaped, data)[:count]
    values_true = shaped.train_x[:count]
    mask, held = hide_observed(train_mask, hide_fraction, seed, hide_block)
    if not held.any():
        raise InvalidInputError("no observed entry was hidden; raise --examples or --hide_fraction")
    results = []
    for value in values:
        model, _ = workdir.load_trained(workdir_path, {**(fixed or {}), setting: value})
        imputed = model.impute(model_inputs(values_true) * mask, mask, seed=seed)
        results.append({"value": value, "hidden_entries": int(held.sum()),
                        "validation_rmse": metrics.missing_rmse(values_true, imputed, mask, held)})
    return results
