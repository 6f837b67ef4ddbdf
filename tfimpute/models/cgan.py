"""Conditional GAN (seed ``004_*.txt`` §5.1; Mirza & Osindero 2014) on the DCGAN networks.

Generator and discriminator are both fed the example's class: the generator the
one-hot label appended to z, the discriminator the one-hot label as ``num_classes``
constant image channels after the image's C. The number of classes comes from the
training labels (MNIST: 10). Images of any shape (H, W, C), as
DCGAN; no vectors (``accepts_vectors = False``, inherited). Training, AmbientGAN
masking for incomplete data and latent-search imputation are DCGAN's
(:mod:`tfimpute.models.dcgan`); the search can be told a digit's class
(``impute_with_labels``) or, by default, spread its restarts over the classes
(cycling through them from a random class).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfimpute import signatures, visualize
from tfimpute.masks import TrainingExamples
from tfimpute.models.capabilities import EpochImage
from tfimpute.models.dcgan import DCGAN, check_labels_known
from tfimpute.models.registry import register_model
from tfimpute.signatures import checked_classes

MNIST_CLASSES = 10  # what workdirs written before num_classes was stored were trained on


@register_model("cgan", summary="conditional GAN on the DCGAN networks (seed 004 §5.1)")
class CGAN(DCGAN):
    """DCGAN conditioned on the class (one of ``num_classes``, from the data: MNIST's 10 digits)."""

    data_settings = ("num_classes",)

    def __init__(self, num_classes: int = MNIST_CLASSES, **kwargs):
        if num_classes < 1:
            raise ValueError(f"cgan needs at least one class, got num_classes={num_classes}")
        self.num_classes = int(num_classes)  # read by DCGAN's constructor to size the networks
        super().__init__(**kwargs)

    def get_config(self) -> dict:
        return {**super().get_config(), "num_classes": self.num_classes}

    @classmethod
    def upgraded_config(cls, config: dict) -> dict:
        """Workdirs written before ``num_classes`` was stored were trained on MNIST's digits."""
        return {"num_classes": MNIST_CLASSES, **super().upgraded_config(config)}

    @classmethod
    def settings_for_data(cls, settings: dict, train_data: TrainingExamples) -> dict:
        """``num_classes``: one more than the largest training label (the labels must be known)."""
        check_labels_known(train_data, "cgan")
        return {**settings, "num_classes": train_data.label_count()}

    def prepare(self, train_data: TrainingExamples) -> None:
        check_labels_known(train_data, self.name)
        super().prepare(train_data)

    def generate_labelled(self, labels: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """One digit of class ``labels[i]`` per row, latents drawn from ``seed``."""
        labels = tf.cast(labels, tf.int32)
        return self.generate(self.draw_latents(tf.shape(labels)[0], seed), labels)

    def impute_with_labels(self, images: tf.Tensor, mask: tf.Tensor, labels: tf.Tensor,
                           seed: tf.Tensor) -> tf.Tensor:
        """Latent search with every restart of example i conditioned on class ``labels[i]``."""
        labels = checked_classes(tf.cast(labels, tf.int32), self.num_classes)
        return self.latent_search(images * mask, mask, self.row_seeds(seed, tf.shape(images)[0]), labels)

    def class_grid(self, columns: int = 10) -> np.ndarray:
        """One row per class; column j uses the same latent in every row (style kept, class varied)."""
        latent = self.draw_latents(tf.constant(columns), tf.constant([0, 0]))
        rows = [self.generate(latent, tf.fill([columns], digit)).numpy() for digit in range(self.num_classes)]
        return visualize.image_grid(rows)

    def epoch_images(self, epoch: int, epochs: int) -> list[EpochImage]:
        """The one-row-per-class grid, in TensorBoard and as ``samples_epoch_NNNN.png``."""
        return [EpochImage(self.class_grid(), tag="samples_by_class", file=f"samples_epoch_{epoch:04d}.png",
                           step=epoch)]

    def serving_signatures(self) -> dict[str, signatures.ServingSignature]:
        """DCGAN's, plus ``impute_with_labels`` (search conditioned on the class) and ``generate``
        (class-conditional samples)."""

        def impute_with_labels(images: tf.Tensor, mask: tf.Tensor, labels: tf.Tensor,
                               seed: tf.Tensor) -> dict[str, tf.Tensor]:
            images, mask = signatures.checked_images_and_mask(images, mask)
            labels = signatures.checked_labels(labels, images, self.num_classes)
            seeds = signatures.per_row_seeds(signatures.checked_seed(seed, images))
            return {"imputed": self.latent_search(images * mask, mask, seeds, labels)}

        def generate(labels: tf.Tensor, seed: tf.Tensor) -> dict[str, tf.Tensor]:
            labels = signatures.checked_labels(labels, seed, self.num_classes)
            latent = tf.map_fn(lambda s: self.draw_latents(tf.constant(1), tf.stack([s, 0]))[0], seed,
                               fn_output_signature=tf.TensorSpec([self.latent_size], tf.float32))
            return {"images": self.generate(latent, labels)}

        labelled = {**signatures.image_inputs(self.data_shape), **signatures.label_input(), **signatures.seed_input()}
        return {**super().serving_signatures(),
                "impute_with_labels": signatures.ServingSignature(
                    labelled, impute_with_labels,
                    "latent search with every restart of a digit conditioned on its class, from its seed"),
                "generate": signatures.ServingSignature(
                    {**signatures.label_input(), **signatures.seed_input()}, generate,
                    "one digit of class labels[i] per row, row i = "
                    "model.generate_labelled(labels[i:i+1], (seed[i], 0))")}
