"""Fills the holes of raw data (NaN = missing) with a trained model or an export (the library side
of ``python -m tfimpute.impute``).

Both paths run the same computation, :func:`tfimpute.signatures.impute_nan_signature`: raw values
are scaled to the model's [0, 1] by the dataset's :class:`~tfimpute.datasets.Codec`, imputed, scaled
back, one-hot blocks of categorical columns made one-hot again, and observed entries returned
unchanged. From a workdir it is traced here; from an export it is the SavedModel's ``impute_nan``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from tfimpute import datasets, experiment, savedmodel, workdir
from tfimpute.datasets import Codec
from tfimpute.errors import InvalidInputError, WorkdirError
from tfimpute.signatures import NAN_SIGNATURE

NanImputer = Callable[[np.ndarray], np.ndarray]


def from_workdir(path: str) -> tuple[NanImputer, Codec, str]:
    """The trained model of workdir ``path`` as raw-in, raw-out function, its codec and its name."""
    model, config = workdir.load_trained(path)
    codec = experiment.codec_of(config, model.data_shape)
    signature = savedmodel.all_signatures(model, codec)[NAN_SIGNATURE]
    function = tf.function(lambda x: signature.function(x=x)["imputed"],
                           input_signature=[tf.TensorSpec([None, *model.data_shape], tf.float32)])
    limit = model.max_impute_batch  # e.g. DCGAN's search: memory grows fast with the batch

    def impute(x: np.ndarray) -> np.ndarray:
        step = limit or max(len(x), 1)
        return np.concatenate([function(x[start:start + step]).numpy() for start in range(0, len(x), step)]
                              or [np.asarray(x, np.float32)])

    return impute, codec, config["model"]


def from_export(path: str) -> tuple[NanImputer, Codec, str]:
    """An exported version directory (``EXPORT_DIR/NAME/VERSION``) as raw-in, raw-out function."""
    info_path = os.path.join(path, "assets.extra", savedmodel.EXPORT_INFO_FILE)
    if not os.path.exists(info_path):
        raise WorkdirError(f"{path}: no assets.extra/{savedmodel.EXPORT_INFO_FILE}; is this a version "
                           "directory written by tfimpute.export (EXPORT_DIR/NAME/VERSION)?")
    with open(info_path) as f:
        info = json.load(f)
    loaded = tf.saved_model.load(path)
    if NAN_SIGNATURE not in loaded.signatures:
        raise WorkdirError(f"{path}: the export has no {NAN_SIGNATURE} signature (exported before "
                           "tfimpute knew one); export the workdir again")
    signature = loaded.signatures[NAN_SIGNATURE]
    return (lambda x: signature(x=tf.constant(x))["imputed"].numpy()), Codec.from_json(info["codec"]), info["name"]


def fill(imputer: NanImputer, x: np.ndarray, batch_size: int = 256, verbose: bool = True) -> np.ndarray:
    """``x`` (float32 raw values, NaN = missing) with every NaN filled, batch by batch with a progress bar."""
    if batch_size < 1:
        raise InvalidInputError(f"--batch_size must be >= 1, got {batch_size}")
    x = np.asarray(x, np.float32)
    if np.isinf(x).any():
        raise InvalidInputError("the input holds infinite values (NaN marks a missing entry)")
    progbar = keras.utils.Progbar(len(x), unit_name="example", verbose=(1 if sys.stdout.isatty() else 2)
                                  if verbose else 0)
    outputs = []
    for start in range(0, len(x), batch_size):
        outputs.append(imputer(x[start:start + batch_size]))
        progbar.update(min(start + batch_size, len(x)))
    return np.concatenate(outputs) if outputs else x.copy()


def file_kind(path: str) -> str:
    """``csv``, ``npz`` or ``images`` (a folder), from the path; anything else is refused."""
    if os.path.isdir(path):
        return "images"
    extension = os.path.splitext(path)[1].lower()
    if extension in (".csv", ".npz"):
        return extension[1:]
    raise InvalidInputError(f"{path}: expected a .csv file, a .npz file or a folder of images")


def fill_csv(input_path: str, output_path: str, codec: Codec, fill: Callable[[np.ndarray], np.ndarray]) -> tuple[int, int]:
    """Fills the empty / NA / NaN cells of the codec's columns; other cells and columns are copied as
    they are. Returns (rows, cells filled)."""
    if codec.kind != "table":
        raise InvalidInputError(f"{input_path}: the model imputes {codec.kind}s, not CSV rows")
    header, rows, scaled, mask = datasets.read_table_for_imputation(input_path, codec)
    raw = np.where(mask > 0.5, codec.unscale_values(scaled), np.nan).astype(np.float32)
    decoded = codec.decode_rows(codec.scale_values(fill(raw)))
    filled_rows, holes = [list(row) for row in rows], 0
    for j, column in enumerate(codec.columns):
        position = header.index(column["name"])
        block = mask[:, column["start"]:column["start"] + column["width"]]
        for i in np.flatnonzero(block.min(axis=1) < 0.5):
            filled_rows[i][position] = decoded[i][j]
            holes += 1
    datasets.write_csv_atomically(output_path, header, filled_rows)
    return len(rows), holes


def _pixel_bytes(x: np.ndarray, codec: Codec) -> bool:
    """Whether an npz array holds uint8 pixels (read as pixel / 255, as when loaded, and written back so)."""
    return x.dtype == np.uint8 and codec.kind == "image"


def _raw_examples(path: str, x: np.ndarray, mask: np.ndarray | None, codec: Codec) -> np.ndarray:
    """An npz's ``x`` (and ``mask``) as float32 raw values [N, *codec.shape], NaN where missing."""
    values = x.astype(np.float32) / 255.0 if _pixel_bytes(x, codec) else x.astype(np.float32)
    if values.ndim == len(codec.shape) and codec.kind == "image" and codec.shape[2] == 1:
        values = values[..., None]
    if values.shape[1:] != codec.shape:
        raise InvalidInputError(f"{path}: x is shaped {list(x.shape)}; the model takes "
                                f"[N, {', '.join(map(str, codec.shape))}]")
    if mask is not None:
        if mask.shape != x.shape:
            raise InvalidInputError(f"{path}: mask is shaped {list(mask.shape)}, x {list(x.shape)}")
        values = np.where(mask.reshape(values.shape) > 0.5, values, np.nan)
    return values


def fill_npz(input_path: str, output_path: str, codec: Codec, fill: Callable[[np.ndarray], np.ndarray]) -> tuple[int, int]:
    """Fills ``x`` (NaN or ``mask == 0`` entries) and ``x_test`` if present, in their own shape (uint8
    images stay uint8, anything else becomes float32); every other array, ``mask`` included (it
    still says what was observed), is copied. Returns (examples, entries filled)."""
    try:
        with np.load(input_path, allow_pickle=False) as stored:
            arrays = {key: stored[key] for key in stored.files}
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"{input_path}: not a readable .npz file ({exc})") from None
    if "x" not in arrays:
        raise InvalidInputError(f"{input_path}: no array 'x' (found: {', '.join(sorted(arrays)) or 'none'})")
    count = holes = 0
    for key, mask_key in (("x", "mask"), ("x_test", "mask_test")):
        if key not in arrays:
            continue
        x = arrays[key]
        raw = _raw_examples(input_path, x, arrays.get(mask_key), codec)
        filled = fill(raw)
        count, holes = count + len(raw), holes + int(np.isnan(raw).sum())
        as_bytes = _pixel_bytes(x, codec)
        if as_bytes:  # observed pixels keep their exact byte
            filled = np.where(np.isnan(raw), np.rint(np.clip(filled, 0.0, 1.0) * 255.0), x.reshape(raw.shape))
        arrays[key] = filled.reshape(x.shape).astype(np.uint8 if as_bytes else np.float32)
    datasets.write_npz_atomically(output_path, **arrays)
    return count, holes


def _image_with_holes(path: str, codec: Codec) -> np.ndarray:
    """One image file as float32 [H, W, C] in [0, 1], NaN where its alpha is 0 (transparent)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            alpha = np.asarray(image.getchannel("A")) if "A" in image.getbands() else None
            pixels = np.asarray(image.convert("L" if codec.shape[2] == 1 else "RGB"), np.float32) / 255.0
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"{path}: not a readable image ({exc})") from None
    pixels = pixels.reshape(*pixels.shape[:2], -1)
    if pixels.shape != codec.shape:
        raise InvalidInputError(f"{path}: the image is {pixels.shape[0]}x{pixels.shape[1]}, the model takes "
                                f"{codec.shape[0]}x{codec.shape[1]} images")
    if alpha is not None:
        pixels = np.where((alpha > 0)[..., None], pixels, np.nan)
    return pixels


def fill_image_folder(input_dir: str, output_dir: str, codec: Codec,
                      fill: Callable[[np.ndarray], np.ndarray]) -> tuple[int, int]:
    """Fills the transparent pixels of every PNG/JPEG under ``input_dir``; writes PNGs under
    ``output_dir`` at the same relative paths. Returns (images, pixels filled)."""
    if codec.kind != "image":
        raise InvalidInputError(f"{input_dir}: the model imputes table rows, not images")
    files = datasets.image_files(input_dir)
    raw = np.stack([_image_with_holes(os.path.join(input_dir, name), codec) for name in files])
    filled = fill(raw)
    for name, image in zip(files, filled):
        target = os.path.join(output_dir, os.path.splitext(name)[0] + ".png")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        datasets.write_png_atomically(target, image)
    return len(files), int(np.isnan(raw[..., 0]).sum())
