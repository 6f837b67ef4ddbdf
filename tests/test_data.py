import gzip
import os
import shutil

import numpy as np
import pytest

from tfimpute import data
from tfimpute.errors import DataError


def test_loads_paper_split_as_unit_floats(mnist_dir):
    mnist = data.load_mnist(mnist_dir, train_size=50_000)
    assert mnist.train_images.shape == (50_000, 28, 28, 1)
    assert mnist.test_images.shape == (10_000, 28, 28, 1)
    assert mnist.train_images.dtype == np.float32
    assert mnist.train_images.min() == 0.0 and mnist.train_images.max() == 1.0
    assert mnist.train_labels.shape == (50_000,) and set(np.unique(mnist.test_labels)) == set(range(10))
    # The first digits of the standard files are a 5 and a 7.
    assert mnist.train_labels[0] == 5 and mnist.test_labels[0] == 7


def test_train_size_takes_the_first_digits(mnist_dir):
    small = data.load_mnist(mnist_dir, train_size=100, test_size=10)
    assert small.train_images.shape[0] == 100 and small.test_images.shape[0] == 10
    full = data.load_mnist(mnist_dir, train_size=200, test_size=10)
    np.testing.assert_array_equal(small.train_images, full.train_images[:100])


def test_environment_variable_is_used(mnist_dir, monkeypatch):
    monkeypatch.setenv(data.DATA_DIR_ENV, mnist_dir)
    assert data.resolve_data_dir(None) == mnist_dir
    assert data.resolve_data_dir("/elsewhere") == "/elsewhere"
    assert data.load_mnist(None, train_size=10, test_size=10).train_images.shape == (10, 28, 28, 1)


def test_missing_directory_names_the_path(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(DataError, match="nope: data directory does not exist"):
        data.load_mnist(missing)


@pytest.fixture
def copied_dir(mnist_dir, tmp_path):
    target = tmp_path / "mnist"
    shutil.copytree(mnist_dir, target)
    return target


def test_missing_file_names_it(copied_dir):
    os.remove(copied_dir / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: file not found"):
        data.load_mnist(str(copied_dir))


def test_corrupt_gzip_is_reported(copied_dir):
    (copied_dir / "train-images-idx3-ubyte.gz").write_bytes(b"not a gzip file at all")
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: not a readable gzip"):
        data.load_mnist(str(copied_dir))


def test_truncated_file_is_reported(copied_dir):
    path = copied_dir / "t10k-images-idx3-ubyte.gz"
    with gzip.open(path) as f:
        raw = f.read()
    with gzip.open(path, "wb") as f:
        f.write(raw[:-100])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: .*truncated or corrupt"):
        data.load_mnist(str(copied_dir))


def test_swapped_files_fail_on_magic_number(copied_dir):
    shutil.copy(copied_dir / "train-labels-idx1-ubyte.gz", copied_dir / "train-images-idx3-ubyte.gz")
    with pytest.raises(DataError, match="bad IDX magic number 2049, expected 2051"):
        data.load_mnist(str(copied_dir))


def test_tfds_fallback_converts_to_the_same_layout(monkeypatch):
    import tensorflow_datasets as tfds

    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    images = np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28, 1)

    def fake_load(name, split, batch_size, as_supervised):
        assert name == "mnist" and split == ["train", "test"] and batch_size == -1 and as_supervised
        return [(images, np.array([1, 2, 3])), (images[:2], np.array([4, 5]))]

    monkeypatch.setattr(tfds, "load", fake_load)
    monkeypatch.setattr(tfds, "as_numpy", lambda x: x)
    mnist = data.load_mnist(None, train_size=2)
    assert mnist.train_images.shape == (2, 28, 28, 1) and mnist.test_images.shape == (2, 28, 28, 1)
    np.testing.assert_allclose(mnist.train_images, images[:2] / 255.0)
    np.testing.assert_array_equal(mnist.test_labels, [4, 5])


def test_tfds_failure_says_how_to_fix_it(monkeypatch):
    import tensorflow_datasets as tfds

    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)

    def offline(*args, **kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(tfds, "load", offline)
    with pytest.raises(DataError, match="ConnectionError: no route to host.*TFIMPUTE_DATA_DIR"):
        data.load_mnist(None)
