"""One training run as the programs describe it: mask the data, build and compile the model, claim
the workdir and train (library side of ``tfimpute.train``; evaluation trains missing cells through
it too).

The ``data`` section of a workdir's ``config.json`` says which dataset (``dataset``, absent for
MNIST) and which synthetic missingness the model was trained with; ``codec`` (absent for MNIST)
how raw values map to the [0, 1] scale the model sees (:class:`tfimpute.datasets.Codec`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import tensorflow as tf

from tfimpute import distribute, masks, precision, workdir
from tfimpute.data import Mnist
from tfimpute.errors import InvalidInputError
from tfimpute.datasets import MNIST, Codec, Dataset, as_dataset
from tfimpute.models import registry
from tfimpute.training import TrainingOptions, run_training

def prepared(dataset: Dataset, data: dict[str, Any]) -> Dataset:
    """``dataset`` as ``data`` says: images thresholded at 0.5 with ``binarize`` (binarised MNIST)."""
    if not data.get("binarize"):
        return dataset
    if not dataset.is_image:
        raise ValueError("--binarize applies to images only")
    return dataclasses.replace(dataset, train_x=(dataset.train_x >= 0.5).astype(np.float32),
                               test_x=(dataset.test_x >= 0.5).astype(np.float32))


def own_holes(mask: np.ndarray, dataset: Dataset) -> np.ndarray | None:
    """``mask``, one of ``dataset``'s own masks, when the data have holes of their own (None: complete)."""
    return mask if dataset.has_own_holes else None


def _known(values: np.ndarray, mask: np.ndarray, mechanism: str) -> np.ndarray | None:
    """For MAR / MNAR, what they condition on: ``values`` with NaN where the data miss them."""
    return np.where(mask > 0.5, values, np.nan) if mechanism in masks.VALUE_MECHANISMS else None


def synthetic_training_holes(data: dict[str, Any]) -> bool:
    """False for runs that train on complete data (``complete_training_data``) or on the data's own
    holes alone (``own_holes_only``); the test split is masked either way."""
    return not (data.get("complete_training_data") or data.get("own_holes_only"))


def training_mask(dataset: Dataset, data: dict[str, Any]) -> np.ndarray:
    """The mask of the training examples a model is trained with: the data's own holes and, unless
    ``complete_training_data`` or ``own_holes_only``, the synthetic mechanism of ``data`` on top
    (seed ``mask_seed``).

    Evaluation calls it too, to impute exactly the incomplete training data a model saw.
    """
    if not synthetic_training_holes(data):
        return dataset.train_mask
    synthetic = masks.generate_masks(data["missingness"], data["missing_rate"], len(dataset.train_x),
                                     data["mask_seed"], data["num_patches"], dataset.shape,
                                     _known(dataset.train_x, dataset.train_mask, data["missingness"]))
    return masks.combine(own_holes(dataset.train_mask, dataset), synthetic)


def test_mask(dataset: Dataset, data: dict[str, Any], seed: int) -> np.ndarray:
    """The mask the test examples are imputed under: their own holes and the synthetic mechanism
    (its hidden entries that the data observed are the ones scored)."""
    synthetic = masks.generate_masks(data["missingness"], data["missing_rate"], len(dataset.test_x), seed,
                                     data["num_patches"], dataset.shape,
                                     _known(dataset.test_x, dataset.test_mask, data["missingness"]))
    return masks.combine(own_holes(dataset.test_mask, dataset), synthetic)


def scored_test_mask(dataset: Dataset, data: dict[str, Any]) -> np.ndarray:
    """The test mask a training run scores (and records in ``metrics.json``): seed ``mask_seed`` + 1."""
    return test_mask(dataset, data, data["mask_seed"] + 1)


def codec_of(config: dict[str, Any], data_shape: tuple[int, ...]) -> Codec:
    """The workdir's codec; MNIST workdirs (and those of 0.1) have none: images in [0, 1]."""
    if "codec" in config:
        return Codec.from_json(config["codec"])
    return Codec.identity(data_shape)


def train(model_name: str, dataset: Dataset | Mnist, data: dict[str, Any], settings: dict[str, Any],
          options: TrainingOptions, workdir_path: str,
          strategy: tf.distribute.Strategy | None = None) -> dict[str, Any]:
    """Masks ``dataset`` as ``data`` says, builds ``model_name`` and trains (or resumes) it in ``workdir_path``.

    ``data``: train_size, test_size, missingness, missing_rate, mask_seed, num_patches and
    optionally dataset (with its reading options), binarize / complete_training_data /
    own_holes_only (data with holes of their own: no synthetic holes on the training split).
    ``settings``: the model's settings (absent or None: its defaults; settings of other
    models are ignored). The model and its optimizers are built in ``strategy.scope()``
    (default: the current strategy) under ``options.dtype_policy`` (:mod:`tfimpute.precision`).
    Returns the content of ``metrics.json``.
    """
    strategy = strategy or tf.distribute.get_strategy()
    if options.batch_size < strategy.num_replicas_in_sync:
        raise InvalidInputError(f"--batch_size={options.batch_size} is smaller than the "
                                f"{strategy.num_replicas_in_sync} replicas it is split across")
    workdir_path = distribute.worker_workdir(strategy, workdir_path)
    spec = registry.get(model_name)
    dataset = as_dataset(dataset)
    spec.check_data_shape(dataset.shape)
    try:
        dataset = prepared(dataset, data)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None
    if spec.cls.trainable_imputer and len(dataset.train_x) < options.batch_size:
        raise InvalidInputError(
            f"{data.get('dataset', MNIST)}: {len(dataset.train_x)} training examples, fewer than one batch "
            f"(--batch_size={options.batch_size}); lower --batch_size")
    train_mask = training_mask(dataset, data)
    evaluation_mask = scored_test_mask(dataset, data)
    train_data = masks.make_incomplete(dataset.train_x, train_mask, dataset.train_labels)
    train_missing = masks.realised_missing_fraction(train_mask)
    test_missing = masks.realised_missing_fraction(evaluation_mask)
    own = (f"; the data's own holes: {masks.realised_missing_fraction(dataset.train_mask):.4f} (train)"
           if dataset.has_own_holes else "")
    print(f"{data['missingness']} missingness at rate {data['missing_rate']}"
          f"{'' if synthetic_training_holes(data) else ' (test only)'}: realised missing fraction {train_missing:.4f} (train, {len(train_mask)} examples), {test_missing:.4f} "
          f"(test, {len(evaluation_mask)} examples){own}")

    settings = spec.settings_for_data(settings, train_data)
    with strategy.scope(), precision.policy_scope(options.dtype_policy):
        model = spec.build(settings, data_shape=dataset.shape)
        model.compile()
    config = {
        "model": model_name,
        "model_config": model.get_config(),
        "data": data,
        "training": {"batch_size": options.batch_size, "seed": options.seed},
    }
    if dataset.name != MNIST:
        config["codec"] = dataset.codec.to_json()
    adjusted = workdir.claim(workdir_path, config, adjustable=model.inference_settings)
    for change in adjusted:
        print(f"inference setting changed: {change}")
    run_info = {"model": model_name, **data, "replicas": strategy.num_replicas_in_sync,
                "dtype_policy": options.dtype_policy,
                "train_missing_fraction": train_missing, "test_missing_fraction": test_missing}
    return run_training(model, train_data, dataset.test_x, evaluation_mask, workdir_path, options, run_info,
                        strategy=strategy, test_data_mask=own_holes(dataset.test_mask, dataset),
                        reevaluate=bool(adjusted))  # a changed inference setting is worth a new figure
