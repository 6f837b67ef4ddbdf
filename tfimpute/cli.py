"""Flags and helpers shared by the command-line programs (train, bench, evaluate, export).

Importing this module quiets TensorFlow's C++ start-up logs unless the user set
TF_CPP_MIN_LOG_LEVEL; it must therefore be imported before TensorFlow by CLIs.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

from tfimpute.errors import TfImputeError  # noqa: E402

FLAGS = flags.FLAGS


def define_data_flags() -> None:
    flags.DEFINE_string("data_dir", None,
                        "Directory of the MNIST IDX gzip files; default: $TFIMPUTE_DATA_DIR, else TFDS.")
    flags.DEFINE_integer("train_size", 50_000, "Number of training digits (paper: the first 50,000).")
    flags.DEFINE_integer("test_size", 10_000, "Number of test digits (paper: all 10,000).")
    flags.DEFINE_enum("missingness", "independent", ["independent", "square", "patch"],
                      "Missingness mechanism: I.M., S.O. or P.M. (see tfimpute/masks.py).")
    flags.DEFINE_float("missing_rate", 0.6, "Missing rate in (0, 1).")
    flags.DEFINE_integer("mask_seed", 0, "Seed of the training masks (test masks use mask_seed + 1).")
    flags.DEFINE_integer("num_patches", 8, "Rectangles per image for --missingness=patch.")


def define_model_flags() -> None:
    flags.DEFINE_string("model", "lmrbm", "Model name (lmrbm, rbm).")
    flags.DEFINE_integer("hidden_units", 4096, "RBM hidden units (paper: 4096).")
    flags.DEFINE_string("rank", "full",
                        "RBM weight rank: 'full', 'auto' (expected number of observed pixels, the "
                        "paper's rule of thumb) or an integer.")
    flags.DEFINE_enum("impute_mode", "mean_field", ["mean_field", "sample"],
                      "RBM imputation: probabilities throughout, or a sampled hidden layer.")
    flags.DEFINE_integer("batch_size", 128, "Minibatch size (paper: 128).")
    flags.DEFINE_float("learning_rate", 1e-4, "Learning rate η (paper: 1e-4 on batch-summed updates).")
    flags.DEFINE_float("momentum", 0.0, "SGD momentum (paper: none).")
    flags.DEFINE_integer("seed", 0, "Seed of initialisation, shuffling and training draws.")


def model_settings() -> dict[str, Any]:
    """The flag values model builders read."""
    return {"hidden_units": FLAGS.hidden_units, "rank": FLAGS.rank, "impute_mode": FLAGS.impute_mode,
            "seed": FLAGS.seed, "learning_rate": FLAGS.learning_rate, "momentum": FLAGS.momentum}


def quiet_logs() -> None:
    """Keeps absl INFO chatter (e.g. checkpoint sharding) out of the progress output."""
    from absl import logging

    logging.set_verbosity(logging.WARNING)


def run_main(main: Callable[[list[str]], Any]) -> Callable[[list[str]], Any]:
    """Wraps an absl main so that user errors print one line and exit with status 2."""

    def wrapped(argv: list[str]) -> Any:
        quiet_logs()
        try:
            return main(argv)
        except TfImputeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapped
