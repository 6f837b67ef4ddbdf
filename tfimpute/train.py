"""Trains a model of the zoo on incomplete MNIST.

    python -m tfimpute.train --model=lmrbm --data_dir=../shared/data/mnist \
        --missingness=independent --missing_rate=0.6 --epochs=20 --workdir=/tmp/run1

Writes to ``--workdir``: ``config.json`` (what was trained), ``checkpoints/``
(the same command resumes from the last one), ``tensorboard/``,
``imputations.png`` (observed / imputed / true test digits) and
``metrics.json`` (``test_rmse``, ``epochs``, ``train_seconds``, ...).
``--flagfile=configs/lmrbm.cfg`` loads the paper's settings.
"""

from __future__ import annotations

import json
from typing import Any

from tfimpute import cli  # noqa: F401  (quiets TensorFlow's start-up logs; import first)

from absl import app, flags

from tfimpute import masks, workdir
from tfimpute.data import Mnist, load_mnist
from tfimpute.errors import InvalidInputError
from tfimpute.models import registry
from tfimpute.training import TrainingOptions, run_training

FLAGS = flags.FLAGS
cli.define_data_flags()
cli.define_model_flags()
flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results (required).")
flags.DEFINE_integer("epochs", 20, "Training epochs (paper: 500).")
flags.DEFINE_float("checkpoint_minutes", 10.0, "Also checkpoint mid-epoch at this interval.")
flags.DEFINE_integer("eval_size", 1000, "Test digits imputed after every epoch for TensorBoard.")


def data_settings() -> dict[str, Any]:
    return {"train_size": FLAGS.train_size, "test_size": FLAGS.test_size,
            "missingness": FLAGS.missingness, "missing_rate": FLAGS.missing_rate,
            "mask_seed": FLAGS.mask_seed, "num_patches": FLAGS.num_patches}


def train(model_name: str, mnist: Mnist, data: dict[str, Any], settings: dict[str, Any],
          options: TrainingOptions, workdir_path: str) -> dict[str, Any]:
    """Masks MNIST as ``data`` says, builds ``model_name`` and trains (or resumes) it in ``workdir_path``.

    ``data`` holds the keys of :func:`data_settings`; ``settings`` those of
    :func:`tfimpute.cli.model_settings`. Returns the content of ``metrics.json``.
    """
    registry.check_model_name(model_name)
    train_mask = masks.generate_masks(data["missingness"], data["missing_rate"],
                                      len(mnist.train_images), data["mask_seed"], data["num_patches"])
    test_mask = masks.generate_masks(data["missingness"], data["missing_rate"], len(mnist.test_images),
                                     data["mask_seed"] + 1, data["num_patches"])
    train_data = masks.make_incomplete(mnist.train_images, train_mask)
    train_missing = masks.realised_missing_fraction(train_mask)
    test_missing = masks.realised_missing_fraction(test_mask)
    print(f"{data['missingness']} missingness at rate {data['missing_rate']}: realised missing "
          f"fraction {train_missing:.4f} (train, {len(train_mask)} digits), {test_missing:.4f} "
          f"(test, {len(test_mask)} digits)")

    settings = dict(settings, expected_observed_units=784 * (1.0 - train_missing))
    model = registry.build_model(model_name, settings)
    model.compile(optimizer=registry.make_optimizer(settings))
    workdir.claim(workdir_path, {
        "model": model_name,
        "model_config": model.get_config(),
        "data": data,
        "training": {"batch_size": options.batch_size, "learning_rate": settings["learning_rate"],
                     "momentum": settings["momentum"], "seed": options.seed},
    })
    run_info = {"model": model_name, **data,
                "train_missing_fraction": train_missing, "test_missing_fraction": test_missing}
    return run_training(model, train_data, mnist.test_images, test_mask, workdir_path, options, run_info)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise InvalidInputError(f"unexpected arguments: {' '.join(argv[1:])}")
    registry.check_model_name(FLAGS.model)
    if not FLAGS.workdir:
        raise InvalidInputError("--workdir is required")
    if FLAGS.epochs < 0 or FLAGS.batch_size < 1:
        raise InvalidInputError("--epochs must be >= 0 and --batch_size >= 1")
    mnist = load_mnist(FLAGS.data_dir, FLAGS.train_size, FLAGS.test_size)
    options = TrainingOptions(epochs=FLAGS.epochs, batch_size=FLAGS.batch_size, seed=FLAGS.seed,
                              checkpoint_minutes=FLAGS.checkpoint_minutes, eval_size=FLAGS.eval_size)
    result = train(FLAGS.model, mnist, data_settings(), cli.model_settings(), options, FLAGS.workdir)
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    app.run(cli.run_main(main))
