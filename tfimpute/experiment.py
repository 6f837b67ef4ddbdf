"""One training run on MNIST as the programs describe it: mask the data, build and compile the
model, claim the workdir and train (library side of ``tfimpute.train``; evaluation trains
missing cells through it too).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import tensorflow as tf

from tfimpute import distribute, masks, workdir
from tfimpute.data import Mnist
from tfimpute.models import registry
from tfimpute.training import TrainingOptions, run_training


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

    ``data``: train_size, test_size, missingness, missing_rate, mask_seed, num_patches and
    optionally binarize / complete_training_data. ``settings``: the model's settings (absent
    or None: its defaults; settings of other models are ignored). The model and its
    optimizers are built in ``strategy.scope()`` (default: the current strategy). Returns
    the content of ``metrics.json``.
    """
    strategy = strategy or tf.distribute.get_strategy()
    workdir_path = distribute.worker_workdir(strategy, workdir_path)
    spec = registry.get(model_name)
    mnist, train_mask = training_dataset(mnist, data)
    test_mask = masks.generate_masks(data["missingness"], data["missing_rate"], len(mnist.test_images),
                                     data["mask_seed"] + 1, data["num_patches"])
    train_data = masks.make_incomplete(mnist.train_images, train_mask, mnist.train_labels)
    train_missing = masks.realised_missing_fraction(train_mask)
    test_missing = masks.realised_missing_fraction(test_mask)
    print(f"{data['missingness']} missingness at rate {data['missing_rate']}: realised missing "
          f"fraction {train_missing:.4f} (train, {len(train_mask)} digits), {test_missing:.4f} "
          f"(test, {len(test_mask)} digits)")

    settings = spec.settings_for_data(settings, train_data)
    with strategy.scope():
        model = spec.build(settings)
        model.compile()
    adjusted = workdir.claim(workdir_path, {
        "model": model_name,
        "model_config": model.get_config(),
        "data": data,
        "training": {"batch_size": options.batch_size, "seed": options.seed},
    }, adjustable=model.inference_settings)
    for change in adjusted:
        print(f"inference setting changed: {change}")
    run_info = {"model": model_name, **data, "replicas": strategy.num_replicas_in_sync,
                "train_missing_fraction": train_missing, "test_missing_fraction": test_missing}
    return run_training(model, train_data, mnist.test_images, test_mask, workdir_path, options, run_info,
                        strategy=strategy)
