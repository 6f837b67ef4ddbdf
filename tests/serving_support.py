"""Tiny models and inputs shared by the export and serving tests (kept small: CPUs are shared)."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfimpute import masks
from tfimpute.models.rbm import RBM


def digits(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Observed pixels in [0, 1] (missing ones zeroed) and their 0/1 mask, float32 [count, 28, 28, 1]."""
    rng = np.random.default_rng(seed)
    images = rng.random((count, 28, 28, 1)).astype(np.float32)
    mask = (rng.random(images.shape) >= 0.5).astype(np.float32)
    return images * mask, mask


def tiny_trained_rbm(seed: int = 0, hidden_units: int = 16) -> RBM:
    """An LM-RBM prepared on 64 random digits and trained two CD-1 steps (large rate, so weights move)."""
    images, mask = digits(64, seed)
    model = RBM(hidden_units=hidden_units, seed=seed, name="lmrbm")
    model.prepare(masks.make_incomplete(images, mask))
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05))
    step = tf.function(model.train_step)
    for _ in range(2):
        step((tf.constant(images), tf.constant(mask)))
    return model


def rbm_sample(model: RBM, images: np.ndarray, mask: np.ndarray, seeds: list[int]) -> np.ndarray:
    """What ``impute_sample`` must return: each digit imputed alone with seed (seeds[i], 0)."""
    return np.concatenate([
        model.impute_batch(images[i:i + 1], mask[i:i + 1], tf.constant([seed, 0]), mode="sample").numpy()
        for i, seed in enumerate(seeds)])
