"""MNIST loading with the paper's split (Section 4): 50,000 training, 10,000 test digits.

Reads the four standard IDX gzip files from a directory (``--data_dir`` or the
``TFIMPUTE_DATA_DIR`` environment variable); with neither, falls back to
``tensorflow_datasets`` (which downloads MNIST on machines with internet).
Pixels are float32 in [0, 1], shaped [N, 28, 28, 1].
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import zlib

import numpy as np

from tfimpute.errors import DataError

DATA_DIR_ENV = "TFIMPUTE_DATA_DIR"
MNIST_SHAPE = (28, 28, 1)  # one digit: [height, width, channels]
PAPER_TRAIN_SIZE = 50_000

_FILES = {
    "train_images": ("train-images-idx3-ubyte.gz", 2051, 60_000),
    "train_labels": ("train-labels-idx1-ubyte.gz", 2049, 60_000),
    "test_images": ("t10k-images-idx3-ubyte.gz", 2051, 10_000),
    "test_labels": ("t10k-labels-idx1-ubyte.gz", 2049, 10_000),
}


@dataclasses.dataclass(frozen=True)
class Mnist:
    """Complete MNIST arrays. Only evaluation code may look at these pixels."""

    train_images: np.ndarray  # [N, 28, 28, 1] float32 in [0, 1]
    train_labels: np.ndarray  # [N] int64
    test_images: np.ndarray
    test_labels: np.ndarray


def resolve_data_dir(data_dir: str | None) -> str | None:
    """The flag wins over the environment variable; None means 'use TFDS'."""
    if data_dir:
        return data_dir
    return os.environ.get(DATA_DIR_ENV) or None


def _read_idx(path: str, expected_magic: int, expected_count: int) -> np.ndarray:
    """Parses one gzipped IDX file, checking magic number, dimensions and length."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: not a readable gzip file ({exc})") from None
    if len(raw) < 8:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes)")
    magic = int.from_bytes(raw[0:4], "big")
    if magic != expected_magic:
        raise DataError(f"{path}: bad IDX magic number {magic}, expected {expected_magic}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    if dims[0] != expected_count:
        raise DataError(f"{path}: holds {dims[0]} items, expected {expected_count}")
    if ndim == 3 and dims[1:] != list(MNIST_SHAPE[:2]):
        raise DataError(f"{path}: images are {dims[1]}x{dims[2]}, expected "
                        f"{MNIST_SHAPE[0]}x{MNIST_SHAPE[1]}")
    expected_bytes = header + int(np.prod(dims))
    if len(raw) != expected_bytes:
        raise DataError(f"{path}: {len(raw)} bytes, expected {expected_bytes} (truncated or corrupt)")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _load_idx_dir(data_dir: str) -> dict[str, np.ndarray]:
    if not os.path.isdir(data_dir):
        raise DataError(f"{data_dir}: data directory does not exist")
    arrays = {}
    for key, (name, magic, count) in _FILES.items():
        arrays[key] = _read_idx(os.path.join(data_dir, name), magic, count)
    return arrays


def _load_tfds() -> dict[str, np.ndarray]:
    try:
        import tensorflow_datasets as tfds

        train, test = tfds.as_numpy(
            tfds.load("mnist", split=["train", "test"], batch_size=-1, as_supervised=True)
        )
    except Exception as exc:  # TFDS raises many types (network, checksum, ...)
        raise DataError(
            f"tensorflow_datasets could not provide MNIST ({type(exc).__name__}: {exc}); "
            f"pass --data_dir or set {DATA_DIR_ENV} to a directory of the IDX gzip files"
        ) from None
    return {
        "train_images": train[0][..., 0], "train_labels": train[1],
        "test_images": test[0][..., 0], "test_labels": test[1],
    }


def load_mnist(data_dir: str | None = None, train_size: int = PAPER_TRAIN_SIZE,
               test_size: int | None = None) -> Mnist:
    """Loads MNIST: the first ``train_size`` training digits and the first ``test_size`` test digits."""
    if not 0 < train_size <= 60_000:
        raise DataError(f"train_size must be in [1, 60000], got {train_size}")
    if test_size is not None and not 0 < test_size <= 10_000:
        raise DataError(f"test_size must be in [1, 10000], got {test_size}")
    resolved = resolve_data_dir(data_dir)
    arrays = _load_idx_dir(resolved) if resolved else _load_tfds()

    def images(raw: np.ndarray) -> np.ndarray:
        return (raw.astype(np.float32) / 255.0)[..., None]

    test_n = test_size or 10_000
    return Mnist(
        train_images=images(arrays["train_images"][:train_size]),
        train_labels=arrays["train_labels"][:train_size].astype(np.int64),
        test_images=images(arrays["test_images"][:test_n]),
        test_labels=arrays["test_labels"][:test_n].astype(np.int64),
    )
