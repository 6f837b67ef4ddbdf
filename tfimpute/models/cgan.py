"""Conditional GAN (seed ``004_*.txt`` §5.1; Mirza & Osindero 2014) on the DCGAN networks.

Generator and discriminator are both fed the digit's class: the generator the
one-hot label appended to z, the discriminator the one-hot label as 10
constant image channels. Training, AmbientGAN masking for incomplete data and
latent-search imputation are DCGAN's (:mod:`tfimpute.models.dcgan`); the
search can be told a digit's class (``impute_with_labels``) or, by default,
spread its restarts over the classes (cycling through them from a random class).
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from tfimpute import visualize
from tfimpute.masks import IncompleteData
from tfimpute.models.dcgan import DCGAN, check_labels_known

NUM_CLASSES = 10



def checked_classes(labels: tf.Tensor, num_classes: int) -> tf.Tensor:
    """``labels`` (int32), with a graph assertion that every one is a class 0..num_classes − 1."""
    check = tf.debugging.Assert(tf.reduce_all((labels >= 0) & (labels < num_classes)),
                                [f"labels: values must be classes 0..{num_classes - 1}"])
    with tf.control_dependencies([check]):
        return tf.identity(labels)


class CGAN(DCGAN):
    """DCGAN conditioned on the MNIST class."""

    num_classes = NUM_CLASSES

    def prepare(self, train_data: IncompleteData) -> None:
        check_labels_known(train_data, self.name)
        super().prepare(train_data)

    def generate_labelled(self, labels: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """One digit of class ``labels[i]`` per row, latents drawn from ``seed``."""
        labels = tf.cast(labels, tf.int32)
        return self.generate(self.draw_latents(tf.shape(labels)[0], seed), labels)

    def impute_with_labels(self, images: tf.Tensor, mask: tf.Tensor, labels: tf.Tensor,
                           seed: tf.Tensor) -> tf.Tensor:
        """Latent search with every restart of digit i conditioned on class ``labels[i]`` (0-9)."""
        labels = checked_classes(tf.cast(labels, tf.int32), self.num_classes)
        return self.latent_search(images * mask, mask, self.row_seeds(seed, tf.shape(images)[0]), labels)

    def class_grid(self, columns: int = 10) -> np.ndarray:
        """One row per class 0-9; column j uses the same latent in every row (style kept, class varied)."""
        latent = self.draw_latents(tf.constant(columns), tf.constant([0, 0]))
        rows = [self.generate(latent, tf.fill([columns], digit)).numpy() for digit in range(self.num_classes)]
        return visualize.image_grid(rows)

    def end_of_epoch(self, epoch: int, epochs: int, train_logs: dict[str, float],
                     images: np.ndarray, mask: np.ndarray, workdir: str) -> None:
        """The one-row-per-class grid, in TensorBoard and as ``samples_epoch_NNNN.png``."""
        grid = self.class_grid()
        tf.summary.image("samples_by_class", grid[None], step=epoch)
        visualize.save_png(grid, os.path.join(workdir, f"samples_epoch_{epoch:04d}.png"))
