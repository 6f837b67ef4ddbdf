"""Shared fixtures: the real MNIST directory beside the repo and small helpers.

The host CPU is split into two logical devices here, at import, because TensorFlow fixes
its devices when first used and the distributed tests (test_distribute.py) mirror over
them; every other test runs on the default strategy (the first CPU) as before.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from tfimpute import distribute  # noqa: E402

CPU_REPLICAS = 2
distribute.split_cpu(CPU_REPLICAS)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MNIST_DIR = os.environ.get("TFIMPUTE_DATA_DIR") or os.path.join(REPO, "..", "shared", "data", "mnist")


@pytest.fixture(scope="session")
def mnist_dir() -> str:
    if not os.path.exists(os.path.join(MNIST_DIR, "train-images-idx3-ubyte.gz")):
        pytest.fail(f"MNIST IDX files not found in {MNIST_DIR}; set TFIMPUTE_DATA_DIR")
    return MNIST_DIR


@pytest.fixture(scope="session")
def classifier_dir(mnist_dir, tmp_path_factory) -> str:
    """A stand-in for the real FID classifier: one epoch on 600 digits (for plumbing, not figures)."""
    from tfimpute import classifier
    from tfimpute.data import load_mnist

    path = str(tmp_path_factory.mktemp("classifier"))
    classifier.train_classifier(load_mnist(mnist_dir, 600, 200), path, epochs=1, batch_size=64,
                                log=lambda message: None)
    return path
