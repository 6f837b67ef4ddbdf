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

from tfimpute import distribute, masks, precision, streaming, workdir
from tfimpute.data import Mnist
from tfimpute.errors import InvalidInputError
from tfimpute.datasets import MNIST, Codec, Dataset, StreamedDataset, as_dataset
from tfimpute.models import registry
from tfimpute.streaming import StreamedData, StreamedTestSplit
from tfimpute.training import ArrayTestSplit, TrainingOptions, run_training

PER_EXAMPLE_MASKS = "per_example"  # data["masks"] of a streamed run (absent: one generator per split)

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


def holes_per_example(data: dict[str, Any]) -> bool:
    """Whether ``data``'s synthetic masks are drawn per example (a streamed run's, :mod:`tfimpute.streaming`)."""
    return data.get("masks") == PER_EXAMPLE_MASKS


def synthetic_holes(data: dict[str, Any], shape: tuple[int, ...], seed: int) -> streaming.Holes:
    return streaming.Holes(data["missingness"], data["missing_rate"], seed, tuple(shape), data["num_patches"])


def _synthetic_masks(dataset: Dataset, data: dict[str, Any], values: np.ndarray, mask: np.ndarray,
                     seed: int) -> np.ndarray:
    if holes_per_example(data):
        return streaming.example_masks(synthetic_holes(data, dataset.shape, seed), len(values))
    return masks.generate_masks(data["missingness"], data["missing_rate"], len(values), seed,
                                data["num_patches"], dataset.shape, _known(values, mask, data["missingness"]))


def training_mask(dataset: Dataset, data: dict[str, Any]) -> np.ndarray:
    """The mask of the training examples a model is trained with: the data's own holes and, unless
    ``complete_training_data`` or ``own_holes_only``, the synthetic mechanism of ``data`` on top
    (seed ``mask_seed``).

    Evaluation calls it too, to impute exactly the incomplete training data a model saw.
    """
    if not synthetic_training_holes(data):
        return dataset.train_mask
    synthetic = _synthetic_masks(dataset, data, dataset.train_x, dataset.train_mask, data["mask_seed"])
    return masks.combine(own_holes(dataset.train_mask, dataset), synthetic)


def test_mask(dataset: Dataset, data: dict[str, Any], seed: int) -> np.ndarray:
    """The mask the test examples are imputed under: their own holes and the synthetic mechanism
    (its hidden entries that the data observed are the ones scored)."""
    synthetic = _synthetic_masks(dataset, data, dataset.test_x, dataset.test_mask, seed)
    return masks.combine(own_holes(dataset.test_mask, dataset), synthetic)


def scored_test_mask(dataset: Dataset, data: dict[str, Any]) -> np.ndarray:
    """The test mask a training run scores (and records in ``metrics.json``): seed ``mask_seed`` + 1."""
    return test_mask(dataset, data, data["mask_seed"] + 1)


def codec_of(config: dict[str, Any], data_shape: tuple[int, ...]) -> Codec:
    """The workdir's codec; MNIST workdirs (and those of 0.1) have none: images in [0, 1]."""
    if "codec" in config:
        return Codec.from_json(config["codec"])
    return Codec.identity(data_shape)


def streamed_splits(dataset: StreamedDataset, data: dict[str, Any]) -> tuple[StreamedData, StreamedTestSplit]:
    """The training and test splits of a streamed dataset under ``data``'s synthetic holes
    (seeds ``mask_seed`` and ``mask_seed`` + 1, drawn per example)."""
    if data.get("binarize"):
        raise InvalidInputError("--binarize applies to data held in memory; leave out --stream")
    seed = data["mask_seed"]
    train_holes = synthetic_holes(data, dataset.shape, seed) if synthetic_training_holes(data) else None
    return (StreamedData(dataset.train_examples, dataset.train_size, dataset.shape, train_holes),
            StreamedTestSplit(dataset.test_examples, dataset.test_size, dataset.shape,
                              synthetic_holes(data, dataset.shape, seed + 1)))


def in_memory_splits(dataset: Dataset, data: dict[str, Any]) -> tuple[masks.IncompleteData, ArrayTestSplit]:
    """The incomplete training examples and the masked test split of ``dataset`` as ``data`` says."""
    try:
        dataset = prepared(dataset, data)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None
    train_data = masks.make_incomplete(dataset.train_x, training_mask(dataset, data), dataset.train_labels)
    return train_data, ArrayTestSplit(dataset.test_x, scored_test_mask(dataset, data),
                                      own_holes(dataset.test_mask, dataset))


def train(model_name: str, dataset: Dataset | StreamedDataset | Mnist, data: dict[str, Any], settings: dict[str, Any],
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
    streamed = isinstance(dataset, StreamedDataset)
    dataset = dataset if streamed else as_dataset(dataset)
    spec.check_data_shape(dataset.shape)
    if streamed != holes_per_example(data):
        raise InvalidInputError(f"data settings with masks={data.get('masks')!r} for a "
                                f"{'streamed' if streamed else 'in-memory'} dataset")
    train_data, test_data = streamed_splits(dataset, data) if streamed else in_memory_splits(dataset, data)
    if spec.cls.trainable_imputer and len(train_data) < options.batch_size:
        raise InvalidInputError(
            f"{data.get('dataset', MNIST)}: {len(train_data)} training examples, fewer than one batch "
            f"(--batch_size={options.batch_size}); lower --batch_size")
    train_missing, test_missing = train_data.missing_fraction(), test_data.missing_fraction()
    own = (f"; the data's own holes: {masks.realised_missing_fraction(dataset.train_mask):.4f} (train)"
           if dataset.has_own_holes else "")
    print(f"{data['missingness']} missingness at rate {data['missing_rate']}"
          f"{'' if synthetic_training_holes(data) else ' (test only)'}: realised missing fraction {train_missing:.4f} (train, {len(train_data)} examples), {test_missing:.4f} "
          f"(test, {len(test_data)} examples){own}")

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
    return run_training(model, train_data, test_data, workdir_path, options, run_info, strategy=strategy,
                        reevaluate=bool(adjusted))  # a changed inference setting is worth a new figure
