"""Trains a model of the zoo on incomplete MNIST.

    python -m tfimpute.train --model=lmrbm --data_dir=../shared/data/mnist \
        --missingness=independent --missing_rate=0.6 --epochs=20 --workdir=/tmp/run1

Writes to ``--workdir``: ``config.json`` (what was trained), ``checkpoints/``
(the same command resumes from the last one), ``tensorboard/``,
``imputations.png`` (observed / imputed / true test digits) and
``metrics.json`` (``test_rmse``, ``epochs``, ``train_seconds``, ...).
``--flagfile=configs/lmrbm.cfg`` loads the paper's settings.

``--model=mnist_classifier`` trains instead the CNN whose features define the
FID (see :mod:`tfimpute.classifier`) on the complete training digits; it reads
``--data_dir``, ``--train_size``, ``--test_size``, ``--epochs``, ``--batch_size``,
``--seed`` and ``--workdir`` (Adam at 1e-3, not ``--learning_rate``).

``--strategy=mirrored|multi_worker|tpu`` trains under that ``tf.distribute``
strategy (:mod:`tfimpute.distribute`), the global batch ``--batch_size`` split
across the replicas; ``--cpu_replicas=N`` with ``--strategy=mirrored`` mirrors
over N logical CPUs.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from tfimpute import cli  # noqa: F401  (quiets TensorFlow's start-up logs; import first)

import numpy as np
import tensorflow as tf
from absl import app, flags

from tfimpute import classifier, distribute, masks, workdir
from tfimpute.data import Mnist, load_mnist
from tfimpute.errors import InvalidInputError
from tfimpute.models import registry
from tfimpute.training import TrainingOptions, run_training

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defined only when run as a program, so that `train` can be imported next to other CLIs' flags."""
    cli.define_data_flags()
    cli.define_model_flags()
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results (required).")
    flags.DEFINE_integer("epochs", 20, "Training epochs (paper: 500).")
    flags.DEFINE_float("checkpoint_minutes", 10.0, "Also checkpoint mid-epoch at this interval.")
    flags.DEFINE_integer("eval_size", 1000, "Test digits imputed after every epoch for TensorBoard.")
    flags.DEFINE_string("strategy", "default",
                        f"tf.distribute strategy: {', '.join(distribute.STRATEGIES)} (see README, "
                        "'Training on several devices'); --batch_size is the global batch.")
    flags.DEFINE_integer("cpu_replicas", 0, "With --strategy=mirrored: split the CPU into this many "
                         "logical devices and mirror over them (0: off).")


def data_settings() -> dict[str, Any]:
    settings = {"train_size": FLAGS.train_size, "test_size": FLAGS.test_size,
                "missingness": FLAGS.missingness, "missing_rate": FLAGS.missing_rate,
                "mask_seed": FLAGS.mask_seed, "num_patches": FLAGS.num_patches}
    # Recorded only when set, so that workdirs written before these options existed still resume.
    settings.update({name: True for name in ("binarize",) if FLAGS[name].value})
    if trains_on_complete_data():
        settings["complete_training_data"] = True
    return settings


def trains_on_complete_data() -> bool:
    """``--complete_training_data``; for the GANs that learn complete digits by default (DCGAN,
    CGAN) also true when it is not given and no missingness flag (``--missingness``,
    ``--missing_rate``, ``--num_patches``) is given either."""
    flag = FLAGS["complete_training_data"]
    if flag.present or FLAGS.model not in registry.COMPLETE_DATA_BY_DEFAULT:
        return flag.value
    complete = not any(FLAGS[name].present for name in ("missingness", "missing_rate", "num_patches"))
    print(f"{FLAGS.model}: training on {'complete digits (no missingness flag given)' if complete else 'incomplete digits (AmbientGAN)'}")
    return complete


def training_dataset(mnist: Mnist, data: dict[str, Any]) -> tuple[Mnist, np.ndarray]:
    """MNIST as ``data`` says (binarised or not) and the training masks a model is trained with.

    Evaluation calls it too, to impute exactly the incomplete training data a model saw.
    """
    if data.get("binarize"):
        mnist = dataclasses.replace(mnist, train_images=(mnist.train_images >= 0.5).astype(np.float32),
                                    test_images=(mnist.test_images >= 0.5).astype(np.float32))
    if data.get("complete_training_data"):
        return mnist, np.ones_like(mnist.train_images)
    return mnist, masks.generate_masks(data["missingness"], data["missing_rate"], len(mnist.train_images),
                                       data["mask_seed"], data["num_patches"])


def train(model_name: str, mnist: Mnist, data: dict[str, Any], settings: dict[str, Any],
          options: TrainingOptions, workdir_path: str,
          strategy: tf.distribute.Strategy | None = None) -> dict[str, Any]:
    """Masks MNIST as ``data`` says, builds ``model_name`` and trains (or resumes) it in ``workdir_path``.

    ``data`` holds the keys of :func:`data_settings`; ``settings`` those of
    :func:`tfimpute.cli.model_settings`. The model and its optimizer are built in
    ``strategy.scope()`` (default: the current strategy). Returns the content of ``metrics.json``.
    """
    strategy = strategy or tf.distribute.get_strategy()
    workdir_path = distribute.worker_workdir(strategy, workdir_path)
    registry.check_model_name(model_name)
    if registry.CLASSES[model_name].owns_optimizers and settings.get("optimizer"):
        raise InvalidInputError(f"--optimizer does not apply to {model_name}: it builds its own Adam optimizers")
    mnist, train_mask = training_dataset(mnist, data)
    test_mask = masks.generate_masks(data["missingness"], data["missing_rate"], len(mnist.test_images),
                                     data["mask_seed"] + 1, data["num_patches"])
    train_data = masks.make_incomplete(mnist.train_images, train_mask, mnist.train_labels)
    train_missing = masks.realised_missing_fraction(train_mask)
    test_missing = masks.realised_missing_fraction(test_mask)
    print(f"{data['missingness']} missingness at rate {data['missing_rate']}: realised missing "
          f"fraction {train_missing:.4f} (train, {len(train_mask)} digits), {test_missing:.4f} "
          f"(test, {len(test_mask)} digits)")

    settings = dict(settings, expected_observed_units=784 * (1.0 - train_missing))
    with strategy.scope():
        model = registry.build_model(model_name, settings)
        if not model.owns_optimizers:
            model.compile(optimizer=registry.make_optimizer(model_name, settings))
    training = {"batch_size": options.batch_size, "learning_rate": registry.learning_rate(model_name, settings),
                "momentum": settings["momentum"], "seed": options.seed}
    optimizer = registry.optimizer_name(model_name, settings)
    if optimizer != "sgd":  # recorded only when not SGD, so that older RBM workdirs still resume
        training["optimizer"] = optimizer
    adjusted = workdir.claim(workdir_path, {
        "model": model_name,
        "model_config": model.get_config(),
        "data": data,
        "training": training,
    }, adjustable=model.inference_settings)
    for change in adjusted:
        print(f"inference setting changed: {change}")
    run_info = {"model": model_name, **data, "replicas": strategy.num_replicas_in_sync,
                "train_missing_fraction": train_missing, "test_missing_fraction": test_missing}
    return run_training(model, train_data, mnist.test_images, test_mask, workdir_path, options, run_info,
                        strategy=strategy)


def main(argv: list[str]) -> None:
    # First: --cpu_replicas must split the CPU before anything touches a TensorFlow device.
    strategy = distribute.make_strategy(FLAGS.strategy, FLAGS.cpu_replicas)
    if FLAGS.model != classifier.MODEL_NAME:
        registry.check_model_name(FLAGS.model)
    if not FLAGS.workdir:
        raise InvalidInputError("--workdir is required")
    if FLAGS.epochs < 0 or FLAGS.batch_size < 1:
        raise InvalidInputError("--epochs must be >= 0 and --batch_size >= 1")
    mnist = load_mnist(FLAGS.data_dir, FLAGS.train_size, FLAGS.test_size)
    if FLAGS.model == classifier.MODEL_NAME:
        if FLAGS.epochs < 1:
            raise InvalidInputError(f"--model={classifier.MODEL_NAME} needs --epochs >= 1")
        with strategy.scope():  # Keras's fit distributes over the strategy it was built under
            result = classifier.train_classifier(mnist, distribute.worker_workdir(strategy, FLAGS.workdir),
                                                 FLAGS.epochs, FLAGS.batch_size, FLAGS.seed)
        print(json.dumps(result, sort_keys=True))
        return
    options = TrainingOptions(epochs=FLAGS.epochs, batch_size=FLAGS.batch_size, seed=FLAGS.seed,
                              checkpoint_minutes=FLAGS.checkpoint_minutes, eval_size=FLAGS.eval_size)
    result = train(FLAGS.model, mnist, data_settings(), cli.model_settings(), options, FLAGS.workdir,
                   strategy)
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    define_flags()
    app.run(cli.run_main(main))
