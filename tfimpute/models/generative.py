"""Pieces shared by the likelihood-based imputers (VAE and RealNVP, seed ``002_*.txt`` §1 and §3).

:class:`GenerativeImputer`: a model with a validation loss (``HasValidationLoss``: the
training loop's curves callback plots it against the training loss, seed Q1.13 / Q3.8), a
``sample`` method and the ``sample`` serving signature. After each epoch it shows a sample
grid in TensorBoard, and as PNGs the samples before, half way through and after training
(seed Q1.14); the training loop's callbacks write them.
"""

from __future__ import annotations

from typing import Annotated

import numpy as np
import tensorflow as tf

from tfimpute import signatures, visualize
from tfimpute.models.base import OPTIMIZERS, Imputer, OptimizerSettings
from tfimpute.models.capabilities import EpochImage
from tfimpute.models.registry import Setting

OptimizerSetting = Annotated[str, Setting("Optimizer of the training updates.", choices=OPTIMIZERS)]
LearningRateSetting = Annotated[float, Setting("Learning rate (Adam's usual 1e-3).")]
MomentumSetting = Annotated[float, Setting("SGD momentum (with --optimizer=sgd).")]
SeedSetting = Annotated[int, Setting("Seed of initialisation, shuffling and training draws.")]


class GenerativeImputer(OptimizerSettings, Imputer):
    """An imputer that is also a generative model with a validation loss.

    Subclasses set ``loss_name`` (the ``train_step`` log plotted against its
    validation value) and ``loss_title`` (the curve's y label), implement
    :meth:`validation_losses` and :meth:`sample`, and store their optimizer settings
    through :meth:`set_optimizer_settings`.
    """

    loss_name: str
    loss_title: str
    num_samples_shown = 64  # an 8 x 8 grid

    def sample(self, num: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """``num`` examples [num, *data_shape] in [0, 1] from the model, stateless in ``seed``."""
        raise NotImplementedError

    def validation_losses(self, images: np.ndarray, mask: np.ndarray) -> dict[str, float]:
        """Losses on held-out digits; must contain ``loss_name``."""
        raise NotImplementedError

    def sample_grid(self, seed: int = 0) -> np.ndarray:
        side = int(np.sqrt(self.num_samples_shown))
        images = self.sample(tf.constant(side * side), tf.constant([seed, 0], tf.int32)).numpy()
        return visualize.image_grid([images[i * side:(i + 1) * side] for i in range(side)])

    def epoch_images(self, epoch: int, epochs: int) -> list[EpochImage]:
        """The sample grid in TensorBoard; as PNG before training (epoch 1 only: the initial
        weights are a function of the config), half way through and at the end."""
        grid = self.sample_grid()
        images = [EpochImage(grid, tag="samples")]
        if epoch == 1:
            untrained = type(self).from_config(self.get_config())
            images.append(EpochImage(untrained.sample_grid(), file="samples_epoch_000.png"))
        if epoch in (max(1, epochs // 2), epochs):
            images.append(EpochImage(grid, file=f"samples_epoch_{epoch:03d}.png"))
        return images

    def serving_signatures(self) -> dict[str, signatures.ServingSignature]:
        """``sample``: one generated digit per seed."""
        return {**super().serving_signatures(),
                "sample": signatures.sample_signature(self.sample, ["images"],
                                                      "model.sample(1, (seed, 0)) per seed", self.data_shape)}
