"""Datasets beyond MNIST: TFDS image datasets, NumPy archives, CSV tables and folders of images.

``load_dataset(spec)`` turns every source into a :class:`Dataset` of float32 arrays on the
[0, 1] scale the models see, with the data's own holes in masks (1 = observed, 0 = missing),
and a :class:`Codec` that maps that scale back to raw values (JSON-serialisable, so workdirs
and exports can store it). Specs: ``mnist``, ``tfds:NAME``, ``npz:PATH``, ``csv:PATH``,
``images:DIR``. Scaling and one-hot categories are fitted on the training split only.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from typing import IO, Any, NamedTuple

import numpy as np
from PIL import Image

from tfimpute import data
from tfimpute.errors import DataError, InvalidInputError

MNIST = "mnist"  # the --dataset of the paper's data (and of every workdir without a ``dataset``)
MNIST_SHAPE = data.MNIST_SHAPE
SPEC_FORMS = "mnist, tfds:NAME, npz:PATH, csv:PATH or images:DIR"
MISSING_CELLS = frozenset({"", "na", "nan"})  # compared stripped and lower-cased
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_TFDS_BATCH = 1024


def _is_missing(cell: str) -> bool:
    return cell.strip().lower() in MISSING_CELLS


def _parse_number(cell: str) -> float | None:
    """The cell's finite value, or None when it is not a number."""
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _min_max(values: np.ndarray) -> tuple[float, float]:
    """(offset, scale) as float32 values rounded outwards: ``values`` scale into [0, 1], their min and max
    to within float32 rounding of 0 and 1."""
    low, high = float(np.min(values)), float(np.max(values))
    offset = np.float32(low)
    if float(offset) > low:  # Python floats: NumPy would compare in float32
        offset = np.nextafter(offset, np.float32(-np.inf))
    span = high - float(offset)
    scale = np.float32(span) if span > 0 else np.float32(1.0)
    if float(scale) < span:
        scale = np.nextafter(scale, np.float32(np.inf))
    return float(offset), float(scale)


def _constant_or_list(values: np.ndarray) -> float | list[float]:
    return float(values[0]) if values.size and np.all(values == values[0]) else values.tolist()


@dataclasses.dataclass(frozen=True)
class Codec:
    """Maps raw values <-> the [0, 1] scale models see; JSON-serialisable (stored in workdirs and exports).

    ``raw = scaled * scale + offset`` element-wise over one flattened example. Tables list their
    input columns (label excluded) in file order; a categorical column is a one-hot block.
    """

    kind: str
    shape: tuple[int, ...]
    offset: np.ndarray
    scale: np.ndarray
    columns: tuple[dict, ...] = ()
    label_column: str | None = None
    label_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        assign = object.__setattr__
        assign(self, "shape", tuple(int(n) for n in self.shape))
        size = math.prod(self.shape)
        assign(self, "offset", np.array(self.offset, np.float32).reshape(-1))
        assign(self, "scale", np.array(self.scale, np.float32).reshape(-1))
        assign(self, "columns", tuple(_canonical_column(column) for column in self.columns))
        assign(self, "label_names", tuple(str(name) for name in self.label_names))
        if self.kind not in ("image", "table"):
            raise InvalidInputError(f"codec kind must be 'image' or 'table', got {self.kind!r}")
        if self.offset.shape != (size,) or self.scale.shape != (size,):
            raise InvalidInputError(f"codec offset/scale must hold {size} values for shape {self.shape}")
        if not np.all(self.scale > 0):
            raise InvalidInputError("codec scale must be positive")
        start = 0
        for column in self.columns:
            if column["start"] != start:
                raise InvalidInputError(f"codec column {column['name']!r} starts at {column['start']}, "
                                        f"expected {start}")
            start += column["width"]
        if self.kind == "table" and (len(self.shape) != 1 or start != self.shape[0]):
            raise InvalidInputError(f"codec columns cover {start} values, the table shape is {self.shape}")

    @classmethod
    def identity(cls, shape: tuple[int, ...]) -> Codec:
        """Data already on the models' [0, 1] scale (images; vectors of probabilities)."""
        return _image_codec(shape) if len(shape) == 3 else cls(
            "table", shape, np.zeros(math.prod(shape)), np.ones(math.prod(shape)),
            tuple({"name": f"x{j}", "kind": "numeric", "start": j, "width": 1} for j in range(shape[0])))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Codec) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_json(), sort_keys=True))

    def to_json(self) -> dict[str, Any]:
        """A plain dict; a constant offset or scale is stored as one number."""
        return {
            "kind": self.kind, "shape": list(self.shape),
            "offset": _constant_or_list(self.offset), "scale": _constant_or_list(self.scale),
            "columns": [dict(column) for column in self.columns],
            "label_column": self.label_column, "label_names": list(self.label_names),
        }

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> Codec:
        try:
            size = math.prod(payload["shape"])

            def values(stored: float | list[float]) -> np.ndarray:
                return np.full(size, stored, np.float32) if isinstance(stored, (int, float)) else np.array(stored)

            return cls(kind=payload["kind"], shape=tuple(payload["shape"]), offset=values(payload["offset"]),
                       scale=values(payload["scale"]), columns=tuple(payload["columns"]),
                       label_column=payload["label_column"], label_names=tuple(payload["label_names"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"malformed codec JSON ({type(exc).__name__}: {exc})") from None

    def _flat(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, np.float64)
        if values.shape[1:] != self.shape:
            raise InvalidInputError(f"values shaped {values.shape}, expected [N, {', '.join(map(str, self.shape))}]")
        return values.reshape(len(values), -1)

    def scale_values(self, raw: np.ndarray) -> np.ndarray:
        """Raw float [N, *shape] -> the model's scale (no clipping); NaN stays NaN."""
        scaled = (self._flat(raw) - self.offset) / self.scale
        return scaled.astype(np.float32).reshape((-1, *self.shape))

    def unscale_values(self, scaled: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`scale_values`."""
        raw = self._flat(scaled) * self.scale + self.offset
        return raw.astype(np.float32).reshape((-1, *self.shape))

    def categorical_blocks(self) -> list[tuple[int, int]]:
        """(start, width) of each one-hot block."""
        return [(c["start"], c["width"]) for c in self.columns if c["kind"] == "categorical"]

    def _require_table(self) -> None:
        if self.kind != "table":
            raise InvalidInputError(f"this dataset holds {self.kind}s, not table rows")

    def encode_rows(self, rows: list[list[str]], source: str,
                    row_numbers: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Text cells (one per column, label excluded) -> (scaled float32 [N, D], 0 where missing; mask [N, D]).

        Missing cells (empty, NA, NaN) and unknown categories (their whole block) are masked.
        ``row_numbers`` are the rows' numbers in ``source`` for errors (default: header is row 1).
        """
        self._require_table()
        numbers = list(row_numbers) if row_numbers is not None else list(range(2, len(rows) + 2))
        for row, number in zip(rows, numbers):
            if len(row) != len(self.columns):
                raise DataError(f"{source}: row {number} has {len(row)} cells, expected {len(self.columns)}")
        raw = np.full((len(rows), self.shape[0]), np.nan)
        for j, column in enumerate(self.columns):
            start, name = column["start"], column["name"]
            lookup = {category: start + k for k, category in enumerate(column.get("categories", ()))}
            for i, (row, number) in enumerate(zip(rows, numbers)):
                cell = row[j].strip()
                if cell.lower() in MISSING_CELLS:
                    continue
                if column["kind"] == "numeric":
                    value = _parse_number(cell)
                    if value is None:
                        raise DataError(f"{source}: row {number}, column '{name}': {cell!r} is not a number")
                    raw[i, start] = value
                elif cell in lookup:
                    raw[i, start:start + column["width"]] = 0.0
                    raw[i, lookup[cell]] = 1.0
        scaled = self.scale_values(raw)
        observed = ~np.isnan(scaled)
        return np.where(observed, scaled, 0.0).astype(np.float32), observed.astype(np.float32)

    def decode_rows(self, scaled: np.ndarray) -> list[list[str]]:
        """Complete scaled rows [N, D] -> text cells: numbers unscaled, categories by their block's largest entry."""
        self._require_table()
        scaled = np.asarray(scaled, np.float32)
        if np.isnan(scaled).any():
            raise InvalidInputError("decode_rows needs complete rows (found NaN)")
        raw = self.unscale_values(scaled)
        cells = []
        for column in self.columns:
            start, width = column["start"], column["width"]
            if column["kind"] == "numeric":
                cells.append([format(float(value), ".6g") for value in raw[:, start]])
            else:
                picks = np.argmax(scaled[:, start:start + width], axis=1)
                cells.append([column["categories"][k] for k in picks])
        return [list(row) for row in zip(*cells)]


def _canonical_column(column: dict) -> dict:
    try:
        canonical = {"name": str(column["name"]), "kind": str(column["kind"]),
                     "start": int(column["start"]), "width": int(column["width"])}
        if canonical["kind"] == "categorical":
            canonical["categories"] = [str(category) for category in column["categories"]]
            valid = canonical["width"] == len(canonical["categories"]) > 0
        else:
            valid = canonical["kind"] == "numeric" and canonical["width"] == 1
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInputError(f"malformed codec column {column!r} ({type(exc).__name__}: {exc})") from None
    if not valid:
        raise InvalidInputError(f"malformed codec column {column!r}")
    return canonical


def _image_codec(shape: tuple[int, ...], label_names: Sequence[str] = ()) -> Codec:
    size = math.prod(shape)
    return Codec("image", shape, np.zeros(size, np.float32), np.ones(size, np.float32), label_names=tuple(label_names))


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """One dataset's splits on the models' scale; masks are the data's OWN holes (1 = observed)."""

    name: str
    train_x: np.ndarray
    train_mask: np.ndarray
    train_labels: np.ndarray | None
    test_x: np.ndarray
    test_mask: np.ndarray
    test_labels: np.ndarray | None
    codec: Codec

    @property
    def shape(self) -> tuple[int, ...]:
        return self.codec.shape

    @property
    def is_image(self) -> bool:
        return len(self.shape) == 3

    @property
    def num_classes(self) -> int | None:
        if self.train_labels is None:
            return None
        if self.codec.label_names:
            return len(self.codec.label_names)
        return int(max(self.train_labels.max(initial=-1), self.test_labels.max(initial=-1))) + 1

    @property
    def has_own_holes(self) -> bool:
        return bool(self.train_mask.min(initial=1.0) < 1.0 or self.test_mask.min(initial=1.0) < 1.0)


@dataclasses.dataclass(frozen=True, eq=False)
class StreamedDataset:
    """A dataset whose splits are read through ``tf.data`` when needed, never held as float32 arrays
    (:mod:`tfimpute.streaming`): ``train_examples()`` / ``test_examples()`` give (image uint8
    [H, W, C], label int64, −1 when unknown) in the split's stored order. Its images are complete."""

    name: str
    codec: Codec
    train_size: int
    test_size: int
    train_examples: Callable[[], Any]
    test_examples: Callable[[], Any]
    labelled: bool

    @property
    def shape(self) -> tuple[int, ...]:
        return self.codec.shape

    @property
    def is_image(self) -> bool:
        return True

    @property
    def has_own_holes(self) -> bool:
        return False


def float32_bytes(count: int, shape: Sequence[int]) -> int:
    """Bytes of ``count`` examples of ``shape`` as float32."""
    return 4 * count * math.prod(shape)


def memory_bytes() -> int:
    """This machine's physical memory."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


STREAM_CHOICES = ("auto", "always", "never")
STREAM_AUTO_SHARE = 0.25  # --stream=auto streams a split whose float32 copy would exceed this share of memory


class _Split(NamedTuple):
    """Examples with NaN at missing entries, and their labels."""

    values: np.ndarray
    labels: np.ndarray | None

    def take(self, index: np.ndarray) -> _Split:
        return _Split(self.values[index], None if self.labels is None else self.labels[index])


def _count(available: int, size: int | None, split: str, source: str) -> int:
    """How many leading examples of a split to keep."""
    if size is None:
        return available
    if not 1 <= size <= available:
        raise DataError(f"{source}: {split}_size={size}, but the {split} split holds {available} examples")
    return size


def _split_indices(source: str, n: int, train_size: int | None, test_size: int | None,
                   test_fraction: float, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Holds out a seeded random ``test_fraction`` (at least one example); each split keeps file order."""
    if n < 2:
        raise DataError(f"{source}: {n} example(s); at least 2 are needed to hold out a test split")
    num_test = min(n - 1, max(1, int(round(test_fraction * n))))
    order = np.random.default_rng(split_seed).permutation(n)
    train, test = np.sort(order[num_test:]), np.sort(order[:num_test])
    return train[:_count(len(train), train_size, "train", source)], test[:_count(len(test), test_size, "test", source)]


def _image_dataset(name: str, train: _Split, test: _Split, label_names: Sequence[str] = ()) -> Dataset:
    def arrays(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        observed = ~np.isnan(values)
        return np.where(observed, values, 0.0).astype(np.float32), observed.astype(np.float32)

    return Dataset(name, *arrays(train.values), train.labels, *arrays(test.values), test.labels,
                   _image_codec(train.values.shape[1:], label_names))


def rescaled(dataset: Dataset, codec: Codec) -> Dataset:
    """``dataset`` on the scale of ``codec`` (a model's, fitted on the rows it was trained on), which
    must have the same layout (columns, categories) as the dataset's own codec."""
    if codec == dataset.codec:
        return dataset
    same_layout = (codec.kind, codec.shape, codec.columns) == (dataset.codec.kind, dataset.codec.shape,
                                                               dataset.codec.columns)
    if not same_layout:
        raise DataError(f"{dataset.name}: its columns or categories differ from those the model was trained "
                        "with; give the dataset flags the model was trained with")

    def recoded(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return np.where(mask > 0.5, codec.scale_values(dataset.codec.unscale_values(values)), 0.0).astype(np.float32)

    return dataclasses.replace(dataset, train_x=recoded(dataset.train_x, dataset.train_mask),
                               test_x=recoded(dataset.test_x, dataset.test_mask), codec=codec)


def as_dataset(dataset: Dataset | data.Mnist) -> Dataset:
    """A :class:`Dataset` as it is; complete MNIST arrays as the ``mnist`` dataset (masks all ones)."""
    if isinstance(dataset, Dataset):
        return dataset
    return Dataset(MNIST, dataset.train_images, np.ones_like(dataset.train_images), dataset.train_labels,
                   dataset.test_images, np.ones_like(dataset.test_images), dataset.test_labels,
                   _image_codec(MNIST_SHAPE))


def _load_tfds(name: str, data_dir: str | None, train_size: int | None, test_size: int | None,
               test_fraction: float, split_seed: int, stream: str) -> Dataset | StreamedDataset:
    source = f"tfds:{name}"
    try:
        import tensorflow_datasets as tfds

        builder = tfds.builder(name, data_dir=data_dir)
        builder.download_and_prepare()
        features, splits = builder.info.features, builder.info.splits
    except Exception as exc:  # TFDS raises many types (unknown name, network, checksum, ...)
        raise DataError(f"{source}: tensorflow_datasets could not provide it ({_one_line(exc)})") from None
    image_key = next((key for key, feature in features.items() if isinstance(feature, tfds.features.Image)), None)
    if image_key is None:
        raise DataError(f"{source}: no image feature (features: {', '.join(features.keys())})")
    image = features[image_key]
    if None in image.shape or image.np_dtype != np.uint8:
        raise DataError(f"{source}: images shaped {image.shape} of {image.np_dtype}; "
                        "only fixed-size uint8 images are supported")
    label = features["label"] if "label" in features.keys() else None
    if not isinstance(label, tfds.features.ClassLabel):
        label = None
    if "train" not in splits:
        raise DataError(f"{source}: no 'train' split (splits: {', '.join(splits.keys())})")

    def read(split: str, count: int) -> _Split:
        images, labels = [], []
        try:
            for batch in tfds.as_numpy(builder.as_dataset(split=split).batch(_TFDS_BATCH)):
                images.append(batch[image_key])
                labels.append(batch["label"] if label is not None else None)
        except Exception as exc:  # reading can fail in TFDS or TensorFlow
            raise DataError(f"{source}: could not read split {split!r} ({_one_line(exc)})") from None
        values = np.concatenate(images)[:count].astype(np.float32) / 255.0
        return _Split(values, np.concatenate(labels)[:count].astype(np.int64) if label is not None else None)

    label_names = label.names if label is not None else ()
    total = splits["train"].num_examples
    streams = stream == "always" or (
        stream == "auto" and float32_bytes(train_size or total, image.shape) > STREAM_AUTO_SHARE * memory_bytes())
    if streams:
        return _streamed_tfds(source, builder, image_key, label is not None, image.shape, label_names,
                              train_size, test_size, test_fraction, "test" in splits)
    if "test" in splits:
        num_train = _count(splits["train"].num_examples, train_size, "train", source)
        num_test = _count(splits["test"].num_examples, test_size, "test", source)
        train, test = read(f"train[:{num_train}]", num_train), read(f"test[:{num_test}]", num_test)
    else:
        whole = read("train", splits["train"].num_examples)
        train_index, test_index = _split_indices(source, len(whole.values), train_size, test_size,
                                                 test_fraction, split_seed)
        train, test = whole.take(train_index), whole.take(test_index)
    return _image_dataset(source, train, test, label_names)


def _streamed_tfds(source: str, builder: Any, image_key: str, labelled: bool, shape: tuple[int, ...],
                   label_names: Sequence[str], train_size: int | None, test_size: int | None,
                   test_fraction: float, has_test_split: bool) -> StreamedDataset:
    """``builder``'s splits as a :class:`StreamedDataset`. Without a test split, the first
    ``test_fraction`` of 'train' (TFDS's percent slicing: stored order, not a random draw) is held out."""
    splits = builder.info.splits
    if has_test_split:
        train_split, test_split = "train", "test"
        available_train, available_test = splits["train"].num_examples, splits["test"].num_examples
    else:
        percent = min(99, max(1, int(round(100 * test_fraction))))
        train_split, test_split = f"train[{percent}%:]", f"train[:{percent}%]"
        available_train, available_test = splits[train_split].num_examples, splits[test_split].num_examples

    def examples(split: str) -> Callable[[], Any]:
        def read() -> Any:
            import tensorflow as tf

            try:
                stored = builder.as_dataset(split=split, shuffle_files=False)
            except Exception as exc:  # TFDS raises many types
                raise DataError(f"{source}: could not read split {split!r} ({_one_line(exc)})") from None
            return stored.map(lambda features: (
                features[image_key],
                features["label"] if labelled else tf.constant(-1, tf.int64)))
        return read

    return StreamedDataset(source, _image_codec(shape, label_names),
                           _count(available_train, train_size, "train", source),
                           _count(available_test, test_size, "test", source),
                           examples(train_split), examples(test_split), labelled)


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _npz_examples(path: str, arrays: dict[str, np.ndarray], key: str, mask_key: str) -> np.ndarray:
    """Array ``key`` as float32 with NaN where it is NaN or ``mask_key`` says missing; images scaled to [0, 1]."""
    x = arrays[key]
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim not in (2, 4) or x.size == 0 or x.dtype.kind not in "biuf":
        raise DataError(f"{path}: '{key}' is {x.dtype} shaped {x.shape}; expected numbers shaped [N, D] "
                        "(vectors) or [N, H, W] / [N, H, W, C] (images), none of them 0")
    values = x.astype(np.float32) / (255.0 if x.dtype == np.uint8 and x.ndim == 4 else 1.0)
    observed = ~np.isnan(values)
    if mask_key in arrays:
        mask = arrays[mask_key]
        if mask.ndim == 3 and x.ndim == 4:
            mask = mask[..., None]
        if mask.shape != x.shape:
            raise DataError(f"{path}: '{mask_key}' is shaped {arrays[mask_key].shape}, '{key}' {arrays[key].shape}")
        if mask.dtype.kind not in "biuf" or not np.isin(mask, (0, 1)).all():
            raise DataError(f"{path}: '{mask_key}' must hold only 0 (missing) and 1 (observed)")
        observed &= mask.astype(bool)
    seen = values[observed]
    if not np.isfinite(seen).all():
        raise DataError(f"{path}: '{key}' holds infinite values")
    if x.ndim == 4 and seen.size and (seen.min() < 0.0 or seen.max() > 1.0):
        raise DataError(f"{path}: '{key}' holds values in [{seen.min():.6g}, {seen.max():.6g}]; "
                        "float images must be in [0, 1] (or stored as uint8)")
    return np.where(observed, values, np.nan).astype(np.float32)


def _npz_labels(path: str, arrays: dict[str, np.ndarray], key: str, count: int) -> np.ndarray | None:
    if key not in arrays:
        return None
    y = arrays[key]
    if y.shape != (count,) or y.dtype.kind not in "iuf":
        raise DataError(f"{path}: '{key}' is {y.dtype} shaped {y.shape}; expected {count} integer labels")
    if np.isnan(y.astype(np.float64)).any():
        raise DataError(f"{path}: '{key}' holds NaN at index {int(np.flatnonzero(np.isnan(y))[0])}")
    if (y != np.round(y)).any() or (y < 0).any():
        raise DataError(f"{path}: '{key}' must hold non-negative integer class labels")
    return y.astype(np.int64)


def _load_npz(path: str, train_size: int | None, test_size: int | None, test_fraction: float,
              split_seed: int) -> Dataset:
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise DataError(f"{path}: a single .npy array; expected an .npz archive holding 'x'")
        with archive:
            if "x" not in archive.files:
                raise DataError(f"{path}: no array 'x' (found: {', '.join(archive.files) or 'nothing'})")
            arrays = {key: archive[key] for key in ("x", "mask", "y", "x_test", "mask_test", "y_test")
                      if key in archive.files}
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz archive ({_one_line(exc)})") from None
    source = f"npz:{path}"
    whole = _Split(_npz_examples(path, arrays, "x", "mask"), None)
    whole = whole._replace(labels=_npz_labels(path, arrays, "y", len(whole.values)))
    if "x_test" in arrays:
        test = _Split(_npz_examples(path, arrays, "x_test", "mask_test"), None)
        test = test._replace(labels=_npz_labels(path, arrays, "y_test", len(test.values)))
        if test.values.shape[1:] != whole.values.shape[1:]:
            raise DataError(f"{path}: 'x_test' examples are shaped {test.values.shape[1:]}, "
                            f"'x' examples {whole.values.shape[1:]}")
        if (test.labels is None) != (whole.labels is None):
            raise DataError(f"{path}: 'y' and 'y_test' must be given together")
        train = whole.take(slice(0, _count(len(whole.values), train_size, "train", path)))
        test = test.take(slice(0, _count(len(test.values), test_size, "test", path)))
    else:
        stray = [key for key in ("mask_test", "y_test") if key in arrays]
        if stray:
            raise DataError(f"{path}: '{stray[0]}' without 'x_test'")
        train_index, test_index = _split_indices(path, len(whole.values), train_size, test_size,
                                                 test_fraction, split_seed)
        train, test = whole.take(train_index), whole.take(test_index)
    if train.values.ndim == 4:
        return _image_dataset(source, train, test)
    return _vector_dataset(path, source, train, test)


def _vector_dataset(path: str, source: str, train: _Split, test: _Split) -> Dataset:
    """Min-max scales each column over its observed training entries."""
    width = train.values.shape[1]
    offsets, scales = np.zeros(width), np.ones(width)
    for d in range(width):
        column = train.values[:, d]
        column = column[~np.isnan(column)]
        if not column.size:
            raise DataError(f"{path}: column x{d} has no observed value among the {len(train.values)} training rows")
        offsets[d], scales[d] = _min_max(column)
    columns = tuple({"name": f"x{d}", "kind": "numeric", "start": d, "width": 1} for d in range(width))
    codec = Codec("table", (width,), offsets, scales, columns)

    def arrays(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scaled = codec.scale_values(values)
        observed = ~np.isnan(scaled)
        return np.where(observed, scaled, 0.0).astype(np.float32), observed.astype(np.float32)

    return Dataset(source, *arrays(train.values), train.labels, *arrays(test.values), test.labels, codec)


def _read_csv(path: str) -> tuple[list[str], list[list[str]], list[int]]:
    """(header, rows, row numbers in the file with the header as row 1); blank lines are skipped."""
    rows, numbers = [], []
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [name.strip() for name in next(reader, [])]
            for number, row in enumerate(reader, start=2):
                if not row:
                    continue
                if len(row) != len(header):
                    raise DataError(f"{path}: row {number} has {len(row)} cells, the header has {len(header)}")
                rows.append(row)
                numbers.append(number)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except csv.Error as exc:
        raise DataError(f"{path}: line {reader.line_num}: {exc}") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if not header:
        raise DataError(f"{path}: empty file; expected a header row of column names")
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise DataError(f"{path}: the header repeats column(s) {', '.join(map(repr, duplicates))}")
    if not rows:
        raise DataError(f"{path}: no data rows below the header")
    return header, rows, numbers


def _csv_labels(path: str, rows: list[list[str]], numbers: list[int], j: int,
                name: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Class indices of the label column: integers in numeric order, else text in sorted order."""
    cells = [row[j].strip() for row in rows]
    for cell, number in zip(cells, numbers):
        if cell.lower() in MISSING_CELLS:
            raise DataError(f"{path}: row {number}: the label column '{name}' is missing ({cell!r})")
    try:
        keys: list[Any] = [int(cell) for cell in cells]
    except ValueError:
        keys = cells
    distinct = sorted(set(keys))
    index = {key: k for k, key in enumerate(distinct)}
    return np.array([index[key] for key in keys], np.int64), tuple(str(key) for key in distinct)


def _check_csv_columns(path: str, header: list[str], rows: list[list[str]], numbers: list[int],
                       inputs: list[int], categorical: set[str]) -> None:
    """Refuses all-empty columns and text in columns not listed as categorical (all of them at once)."""
    texts = []
    for j in inputs:
        observed = [(row[j].strip(), number) for row, number in zip(rows, numbers) if not _is_missing(row[j])]
        if not observed:
            raise DataError(f"{path}: column '{header[j]}' is empty in every row")
        if header[j] not in categorical:
            text = next(((cell, number) for cell, number in observed if _parse_number(cell) is None), None)
            if text:
                texts.append(f"column '{header[j]}' holds text (row {text[1]}: '{text[0]}')")
    if texts:
        raise DataError(f"{path}: {'; '.join(texts)}; list {'it' if len(texts) == 1 else 'them'} "
                        "in --categorical_columns")


def _fit_table_codec(path: str, header: list[str], train_rows: list[list[str]], inputs: list[int],
                     categorical: set[str], label_column: str | None, label_names: tuple[str, ...]) -> Codec:
    columns, offsets, scales, start = [], [], [], 0
    for j in inputs:
        observed = [row[j].strip() for row in train_rows if not _is_missing(row[j])]
        if not observed:
            raise DataError(f"{path}: column '{header[j]}' has no value in the {len(train_rows)} training rows")
        if header[j] in categorical:
            categories = sorted(set(observed))
            columns.append({"name": header[j], "kind": "categorical", "start": start, "width": len(categories),
                            "categories": categories})
            offsets += [0.0] * len(categories)
            scales += [1.0] * len(categories)
        else:
            offset, scale = _min_max(np.array([float(cell) for cell in observed]))
            columns.append({"name": header[j], "kind": "numeric", "start": start, "width": 1})
            offsets.append(offset)
            scales.append(scale)
        start += columns[-1]["width"]
    return Codec("table", (start,), np.array(offsets), np.array(scales), tuple(columns), label_column, label_names)


def _load_csv(path: str, label_column: str | None, categorical_columns: Sequence[str], train_size: int | None,
              test_size: int | None, test_fraction: float, split_seed: int) -> Dataset:
    header, rows, numbers = _read_csv(path)
    if label_column is not None and label_column not in header:
        raise DataError(f"{path}: no label column '{label_column}' (columns: {', '.join(header)})")
    inputs = [j for j, name in enumerate(header) if name != label_column]
    if not inputs:
        raise DataError(f"{path}: no input column besides the label column '{label_column}'")
    unknown = [name for name in categorical_columns if name not in header or name == label_column]
    if unknown:
        raise DataError(f"{path}: --categorical_columns names {', '.join(map(repr, unknown))}, not an input column "
                        f"(columns: {', '.join(header[j] for j in inputs)})")
    labels, label_names = (None, ())
    if label_column is not None:
        labels, label_names = _csv_labels(path, rows, numbers, header.index(label_column), label_column)
    _check_csv_columns(path, header, rows, numbers, inputs, set(categorical_columns))
    train_index, test_index = _split_indices(path, len(rows), train_size, test_size, test_fraction, split_seed)
    codec = _fit_table_codec(path, header, [rows[i] for i in train_index], inputs, set(categorical_columns),
                             label_column, label_names)

    def split(index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        x, mask = codec.encode_rows([[rows[i][j] for j in inputs] for i in index], path, [numbers[i] for i in index])
        return x, mask, None if labels is None else labels[index]

    return Dataset(f"csv:{path}", *split(train_index), *split(test_index), codec)


def _image_pixels(image: Image.Image, image_size: tuple[int, int] | None) -> np.ndarray:
    """float32 [H, W, C] in [0, 1]: C = 1 for grayscale (16-bit too), else 3 (alpha dropped)."""
    if image.mode.startswith("I"):
        image = Image.fromarray(np.asarray(image, np.float32) / 65535.0)
    elif image.mode in ("1", "L", "LA"):
        image = image.convert("L")
    else:
        image = image.convert("RGB")
    if image_size is not None:
        image = image.resize((image_size[1], image_size[0]), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, np.float32) / (1.0 if image.mode == "F" else 255.0)
    return pixels[..., None] if pixels.ndim == 2 else pixels


def _read_images(paths: list[str], image_size: tuple[int, int] | None) -> np.ndarray:
    """Stacks the images; grayscale ones are repeated to RGB when the selection mixes both."""
    images = []
    for path in paths:
        try:
            with Image.open(path) as image:
                images.append(_image_pixels(image, image_size))
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise DataError(f"{path}: not a readable image ({_one_line(exc)})") from None
        if images[-1].shape[:2] != images[0].shape[:2]:
            (h0, w0), (h1, w1) = images[0].shape[:2], images[-1].shape[:2]
            raise DataError(f"{paths[0]} is {h0}x{w0} but {path} is {h1}x{w1} (height x width); "
                            "pass --image_size=HxW to resize them all")
    channels = max(image.shape[2] for image in images)
    return np.stack([np.repeat(image, channels // image.shape[2], axis=2) for image in images])


def image_files(directory: str) -> list[str]:
    """The PNG/JPEG files under ``directory`` (searched recursively), as sorted relative paths."""
    if not os.path.isdir(directory):
        raise DataError(f"{directory}: not a directory")
    files = sorted(
        os.path.relpath(os.path.join(root, name), directory)
        for root, _, names in os.walk(directory) for name in names if name.lower().endswith(IMAGE_EXTENSIONS)
    )
    if not files:
        raise DataError(f"{directory}: no PNG or JPEG files (searched recursively)")
    return files


def _load_images(directory: str, image_size: tuple[int, int] | None, train_size: int | None,
                 test_size: int | None, test_fraction: float, split_seed: int) -> Dataset:
    files = image_files(directory)
    folders = [name.split(os.sep, 1)[0] if os.sep in name else None for name in files]
    class_names: list[str] = sorted({folder for folder in folders if folder is not None})
    if class_names and None in folders:
        loose = files[folders.index(None)]
        raise DataError(f"{os.path.join(directory, loose)}: lies beside the class sub-folders of {directory}; "
                        "move it into one of them")
    train_index, test_index = _split_indices(directory, len(files), train_size, test_size, test_fraction, split_seed)
    chosen = np.concatenate([train_index, test_index])
    images = _read_images([os.path.join(directory, files[i]) for i in chosen], image_size)
    labels = np.array([class_names.index(folders[i]) for i in chosen], np.int64) if class_names else None
    whole = _Split(images, labels)
    train, test = whole.take(slice(0, len(train_index))), whole.take(slice(len(train_index), None))
    return _image_dataset(f"images:{directory}", train, test, class_names)


def parse_image_size(text: str) -> tuple[int, int]:
    """'32x48' -> (32, 48): height x width."""
    parts = text.strip().lower().split("x")
    if len(parts) == 2 and all(part.strip().isascii() and part.strip().isdigit() for part in parts):
        height, width = (int(part) for part in parts)
        if height > 0 and width > 0:
            return height, width
    raise InvalidInputError(f"image size must be HxW with positive integers (e.g. 32x32), got {text!r}")


def load_dataset(spec: str = MNIST, *, data_dir: str | None = None, train_size: int | None = None,
                 test_size: int | None = None, test_fraction: float = 0.1, split_seed: int = 0,
                 label_column: str | None = None, categorical_columns: Sequence[str] = (),
                 image_size: tuple[int, int] | None = None, stream: str = "never") -> Dataset | StreamedDataset:
    """Loads ``spec`` (mnist, tfds:NAME, npz:PATH, csv:PATH or images:DIR) as a :class:`Dataset`.

    ``data_dir`` is MNIST's IDX directory, or TFDS's data directory for tfds: specs. Sources without
    a test split of their own hold out a ``split_seed``-seeded ``test_fraction``; ``train_size`` and
    ``test_size`` keep the first examples of each split. ``stream`` (tfds: specs only): ``always``
    gives a :class:`StreamedDataset`, ``auto`` does so when the float32 training split would take
    more than :data:`STREAM_AUTO_SHARE` of this machine's memory, ``never`` reads it into memory.
    """
    if stream not in STREAM_CHOICES:
        raise InvalidInputError(f"stream must be one of {', '.join(STREAM_CHOICES)}, got {stream!r}")
    if stream == "always" and not spec.startswith("tfds:"):
        raise InvalidInputError(f"--stream=always applies to tfds: datasets; {spec} is read into memory")
    prefix, _, target = spec.partition(":")
    if spec != MNIST and (prefix not in ("tfds", "npz", "csv", "images") or not target):
        raise DataError(f"unknown dataset {spec!r}; expected {SPEC_FORMS}")
    if (label_column is not None or categorical_columns) and prefix != "csv":
        raise InvalidInputError("--label_column and --categorical_columns apply only to csv: datasets")
    if image_size is not None and prefix != "images":
        raise InvalidInputError("--image_size applies only to images: datasets")
    if image_size is not None and not (len(image_size) == 2 and all(int(n) >= 1 for n in image_size)):
        raise InvalidInputError(f"image_size must be (height, width) >= 1, got {image_size}")
    if not 0.0 < test_fraction < 1.0:
        raise InvalidInputError(f"test_fraction must be in (0, 1), got {test_fraction}")
    for split, size in (("train", train_size), ("test", test_size)):
        if size is not None and size < 1:
            raise DataError(f"{split}_size must be >= 1, got {size}")
    if spec == MNIST:
        train_size = data.PAPER_TRAIN_SIZE if train_size is None else train_size
        return as_dataset(data.load_mnist(data_dir, train_size, test_size))
    if prefix == "tfds":
        return _load_tfds(target, data_dir, train_size, test_size, test_fraction, split_seed, stream)
    if prefix == "npz":
        return _load_npz(target, train_size, test_size, test_fraction, split_seed)
    if prefix == "csv":
        return _load_csv(target, label_column, categorical_columns, train_size, test_size, test_fraction, split_seed)
    return _load_images(target, image_size, train_size, test_size, test_fraction, split_seed)


def read_table_for_imputation(path: str, codec: Codec) -> tuple[list[str], list[list[str]], np.ndarray, np.ndarray]:
    """(header, rows, scaled x, mask) of a CSV holding the codec's input columns in any order.

    Other columns (the label, say) are kept in ``rows`` and ignored; blank lines are dropped.
    """
    codec._require_table()
    header, rows, numbers = _read_csv(path)
    missing = [column["name"] for column in codec.columns if column["name"] not in header]
    if missing:
        raise DataError(f"{path}: no column(s) {', '.join(map(repr, missing))} "
                        f"(the model's columns: {', '.join(column['name'] for column in codec.columns)})")
    picks = [header.index(column["name"]) for column in codec.columns]
    x, mask = codec.encode_rows([[row[j] for j in picks] for row in rows], path, numbers)
    return header, rows, x, mask


def check_not_overwriting(input_path: str, output_path: str) -> None:
    """Refuses an output path that is the input itself (also through links)."""
    same = os.path.realpath(input_path) == os.path.realpath(output_path)
    if not same and os.path.exists(input_path) and os.path.exists(output_path):
        same = os.path.samefile(input_path, output_path)
    if same:
        raise DataError(f"{output_path}: is the input {input_path}; write the results elsewhere")


def _write_atomically(path: str, binary: bool, write: Callable[[IO], None]) -> None:
    """Writes a unique temporary file beside ``path``, syncs it, then renames it over ``path``."""
    try:
        handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".tmp-")
    except OSError as exc:
        raise DataError(f"{path}: cannot write it ({exc.strerror or exc})") from None
    try:
        with (os.fdopen(handle, "wb") if binary else os.fdopen(handle, "w", newline="", encoding="utf-8")) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException as exc:
        os.unlink(temporary)
        if isinstance(exc, OSError):
            raise DataError(f"{path}: cannot write it ({exc.strerror or exc})") from None
        raise


def write_csv_atomically(path: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    def write(f: IO) -> None:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)

    _write_atomically(path, False, write)


def write_npz_atomically(path: str, /, **arrays: np.ndarray) -> None:
    _write_atomically(path, True, lambda f: np.savez_compressed(f, **arrays))


def write_png_atomically(path: str, image: np.ndarray) -> None:
    """float [H, W, 1 or 3] in [0, 1] -> an 8-bit PNG (round(x * 255), clipped)."""
    image = np.asarray(image, np.float32)
    if image.ndim != 3 or image.shape[2] not in (1, 3) or np.isnan(image).any():
        raise InvalidInputError(f"a PNG needs a complete [H, W, 1 or 3] image, got shape {image.shape}")
    pixels = np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    picture = Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)
    _write_atomically(path, True, lambda f: picture.save(f, format="PNG"))

