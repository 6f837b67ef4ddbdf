"""The MNIST classifier whose features define this project's FID (the paper's Section 4).

The paper reports FID "as calculated using the implementation provided within
[20]" (MisGAN): no Inception network, but the Fréchet distance between Gaussians
fitted to the features of a small MNIST CNN (MisGAN: the 50 pre-activation units
of its first dense layer) for imputed digits and for the complete MNIST training
digits. This module trains such a classifier,

    python -m tfimpute.train --model=mnist_classifier --data_dir=../shared/data/mnist \
        --epochs=6 --workdir=/work/runs/mnist_classifier

and scores image sets with it (:class:`FeatureFid`). Our FIDs are on the scale of
neither Inception-based FID nor the paper's Table 1 (its classifier and feature
layer differ, and FID scales with the feature space): compare methods with each
other; orderings carry over, values do not.

A classifier directory holds ``classifier.keras``, ``reference_statistics.npz``
(mean and covariance of the features of the complete training digits it was
trained on: the paper's 50,000 by default) and ``metrics.json`` (test accuracy and
settings; written last, so its presence marks a finished directory).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import time
from typing import Any, Callable

import keras
import numpy as np

from tfimpute import metrics
from tfimpute.data import MNIST_SHAPE, Mnist
from tfimpute.datasets import MNIST, Dataset, as_dataset
from tfimpute.errors import InvalidInputError, WorkdirError
from tfimpute.masks import make_incomplete
from tfimpute.files import write_json_atomically

MODEL_NAME = "mnist_classifier"
CLASSIFIER_DIR_ENV = "TFIMPUTE_CLASSIFIER_DIR"
CLASSIFIER_FILE = "classifier.keras"
REFERENCE_FILE = "reference_statistics.npz"
METRICS_FILE = "metrics.json"
FEATURE_LAYER = "features"
FEATURE_UNITS = 128
LEARNING_RATE = 1e-3  # Adam; the classifier does not read --learning_rate (the RBMs' SGD rate)


def build_classifier(seed: int = 0, data_shape: tuple[int, ...] = MNIST_SHAPE,
                     num_classes: int = 10) -> keras.Model:
    """Images: two conv + max-pool blocks ("same" padding below 12 pixels a side), a 128-unit
    dense layer (the FID features, taken before its ReLU as in MisGAN) and a softmax over the
    classes; about 99.2% test accuracy on MNIST. Vectors: a 256-unit ReLU layer before the
    feature layer."""
    def init(offset: int) -> keras.initializers.Initializer:
        return keras.initializers.GlorotUniform(seed=seed + offset)

    inputs = keras.Input(tuple(data_shape), name="images")
    if len(data_shape) == 3:
        padding = "valid" if min(data_shape[:2]) >= 12 else "same"
        x = keras.layers.Conv2D(32, 3, activation="relu", padding=padding, kernel_initializer=init(0))(inputs)
        x = keras.layers.MaxPooling2D(padding=padding)(x)
        x = keras.layers.Conv2D(64, 3, activation="relu", padding=padding, kernel_initializer=init(1))(x)
        x = keras.layers.MaxPooling2D(padding=padding)(x)
        x = keras.layers.Flatten()(x)
        x = keras.layers.Dropout(0.25, seed=seed)(x)
    else:
        x = keras.layers.Dense(256, activation="relu", kernel_initializer=init(0))(inputs)
    features = keras.layers.Dense(FEATURE_UNITS, kernel_initializer=init(2), name=FEATURE_LAYER)(x)
    x = keras.layers.ReLU()(features)
    x = keras.layers.Dropout(0.5, seed=seed + 1)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", kernel_initializer=init(3), name="digits")(x)
    return keras.Model(inputs, outputs, name=MODEL_NAME)


def feature_extractor(classifier: keras.Model) -> keras.Model:
    """The classifier cut at its feature layer: examples [N, *shape] -> features [N, 128]."""
    return keras.Model(classifier.inputs, classifier.get_layer(FEATURE_LAYER).output)


def default_classifier_dir(workdir: str) -> str:
    """``$TFIMPUTE_CLASSIFIER_DIR`` if set, else ``WORKDIR/mnist_classifier``."""
    return os.environ.get(CLASSIFIER_DIR_ENV) or os.path.join(workdir, MODEL_NAME)


def _read_metrics(classifier_dir: str) -> dict[str, Any] | None:
    path = os.path.join(classifier_dir, METRICS_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def reference_examples(dataset: Dataset) -> np.ndarray:
    """The training examples the classifier learns from and the FID compares with: complete data
    as they are; entries the data never had filled with their column means (there is nothing better)."""
    if not dataset.has_own_holes:
        return dataset.train_x
    means = make_incomplete(dataset.train_x, dataset.train_mask).observed_pixel_means().astype(np.float32)
    return np.where(dataset.train_mask > 0.5, dataset.train_x, means).astype(np.float32)


def train_classifier(dataset: Dataset | Mnist, classifier_dir: str, epochs: int, batch_size: int, seed: int = 0,
                     log: Callable[[str], None] = print) -> dict[str, Any]:
    """Trains the classifier on the labelled training examples; writes and returns ``metrics.json``.

    A directory that already holds a finished classifier is left as it is if it was
    trained with the same settings, and refused otherwise (its features and reference
    statistics would not be the requested ones). The reference statistics are the
    features of the training examples (:func:`reference_examples`).
    """
    dataset = as_dataset(dataset)
    if dataset.train_labels is None:
        raise InvalidInputError(f"{dataset.name} has no labels: the FID classifier needs them "
                                "(csv: --label_column; images: one sub-folder per class; npz: y)")
    train_x, test_x = reference_examples(dataset), dataset.test_x
    finished = _read_metrics(classifier_dir)
    if finished is not None:
        requested = {"dataset": dataset.name, "train_size": len(train_x), "epochs": epochs,
                     "batch_size": batch_size, "seed": seed}
        trained = {**finished, "dataset": finished.get("dataset", MNIST)}  # older classifiers: MNIST
        differences = [f"{key}: {trained.get(key)!r} in the directory, {value!r} now"
                       for key, value in requested.items() if trained.get(key) != value]
        if differences:
            raise WorkdirError(f"{classifier_dir} holds a classifier trained otherwise ({'; '.join(differences)}); "
                               "use a new --workdir or the original settings")
        log(f"{classifier_dir} already holds a trained classifier (test accuracy "
            f"{finished['test_accuracy']:.4f}); nothing to do")
        return finished
    os.makedirs(classifier_dir, exist_ok=True)
    keras.utils.set_random_seed(seed)  # shuffling order of model.fit
    classifier = build_classifier(seed, dataset.shape, dataset.num_classes)
    classifier.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE),
                       loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])
    started = time.perf_counter()
    classifier.fit(train_x, dataset.train_labels, batch_size=batch_size, epochs=epochs,
                   shuffle=True, verbose=1 if sys.stdout.isatty() else 2)
    train_seconds = time.perf_counter() - started
    _, test_accuracy = classifier.evaluate(test_x, dataset.test_labels, batch_size=1000, verbose=0)

    temporary = os.path.join(classifier_dir, f"tmp.{CLASSIFIER_FILE}")
    classifier.save(temporary)
    os.replace(temporary, os.path.join(classifier_dir, CLASSIFIER_FILE))
    extractor = feature_extractor(classifier)
    mean, covariance = metrics.feature_statistics(extractor.predict(train_x, batch_size=1000, verbose=0))
    temporary = os.path.join(classifier_dir, f"tmp.{REFERENCE_FILE}")
    with open(temporary, "wb") as f:
        np.savez(f, mean=mean, covariance=covariance, count=len(train_x))
    os.replace(temporary, os.path.join(classifier_dir, REFERENCE_FILE))
    fid_of_test_digits = metrics.frechet_distance(
        *metrics.feature_statistics(extractor.predict(test_x, batch_size=1000, verbose=0)),
        mean, covariance)

    result = {"model": MODEL_NAME, "test_accuracy": float(test_accuracy), "epochs": epochs,
              "batch_size": batch_size, "learning_rate": LEARNING_RATE, "seed": seed,
              "train_size": len(train_x), "test_size": len(test_x), "dataset": dataset.name,
              "feature_layer": FEATURE_LAYER, "feature_units": FEATURE_UNITS,
              "fid_of_complete_test_digits": fid_of_test_digits,
              "train_seconds": round(train_seconds, 2)}
    write_json_atomically(os.path.join(classifier_dir, METRICS_FILE), result)
    log(f"test accuracy {test_accuracy:.4f}; FID of the complete test digits {fid_of_test_digits:.3f}")
    return result


class FeatureFid:
    """FID of example sets against the training examples, in the features of a classifier trained on
    ``dataset`` (its name; classifiers written before datasets were recorded are MNIST's)."""

    def __init__(self, classifier_dir: str, dataset: str = MNIST):
        self.info = _read_metrics(classifier_dir)
        if self.info is None:
            raise WorkdirError(
                f"{classifier_dir}: no trained feature classifier; train one with `python -m tfimpute.train "
                f"--model={MODEL_NAME} --dataset={dataset} --workdir={classifier_dir}`")
        trained_on = self.info.get("dataset", MNIST)
        if trained_on != dataset:
            raise WorkdirError(f"{classifier_dir}: its classifier was trained on {trained_on}, "
                               f"not on {dataset}; give another --classifier_dir")
        self.classifier_dir = classifier_dir
        self.classifier = keras.models.load_model(os.path.join(classifier_dir, CLASSIFIER_FILE))
        self.extractor = feature_extractor(self.classifier)
        self.features_and_probabilities = keras.Model(self.classifier.inputs,
                                                      [self.extractor.output, self.classifier.output])
        with np.load(os.path.join(classifier_dir, REFERENCE_FILE)) as reference:
            self.reference_mean = reference["mean"]
            self.reference_covariance = reference["covariance"]

    @functools.cached_property
    def identity(self) -> dict[str, Any]:
        """What the FID depends on: the dataset, the feature layer and a SHA-256 of the classifier's
        weights and reference statistics. Two classifiers trained alike on different machines share
        it only if their weights came out bit for bit the same."""
        digest = hashlib.sha256()
        for array in [*self.classifier.get_weights(), self.reference_mean, self.reference_covariance]:
            digest.update(np.ascontiguousarray(array).tobytes())
        return {"dataset": self.info.get("dataset", MNIST), "feature_layer": self.info["feature_layer"],
                "train_size": self.info["train_size"], "sha256": digest.hexdigest()}

    def features(self, images: np.ndarray) -> np.ndarray:
        return self.extractor.predict(np.asarray(images, dtype=np.float32), batch_size=1000, verbose=0)

    def classify(self, images: np.ndarray) -> np.ndarray:
        """The classifier's most probable digit for each image, int64 [N]."""
        probabilities = self.classifier.predict(np.asarray(images, dtype=np.float32), batch_size=1000, verbose=0)
        return np.argmax(probabilities, axis=1)

    def fid_and_classes(self, images: np.ndarray) -> tuple[float, np.ndarray]:
        """:meth:`fid` and :meth:`classify` of the same images from one pass through the classifier."""
        features, probabilities = self.features_and_probabilities.predict(
            np.asarray(images, dtype=np.float32), batch_size=1000, verbose=0)
        return self.fid_of_features(features), np.argmax(probabilities, axis=1)

    def fid(self, images: np.ndarray) -> float:
        return self.fid_of_features(self.features(images))

    def fid_of_features(self, features: np.ndarray) -> float:
        mean, covariance = metrics.feature_statistics(features)
        return metrics.frechet_distance(mean, covariance, self.reference_mean, self.reference_covariance)
