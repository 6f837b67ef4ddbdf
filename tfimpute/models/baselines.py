"""The paper's two "untrained" imputers (Section 4): mean imputation and fast diffusion inpainting.

Both implement :class:`tfimpute.models.base.Imputer` in TensorFlow, so they are
checkpointed, evaluated and exported like the trained models.

* :class:`MeanImputer` fills each missing pixel with that pixel's mean over
  the training images in which it is observed. The means come from the
  incomplete training data only (``prepare``) and live in a non-trainable
  weight, so checkpoints and exports carry them.
* :class:`DiffusionInpainter` is the fast digital inpainting of Oliveira,
  Bowen, McKenna and Chang (VIIP 2001; the paper's ref. [18]). The missing
  region is first cleared (filled with 0, "clearing its color information";
  for MNIST this is also the background value), then repeatedly convolved with
  the paper's SECOND diffusion kernel, the 3x3 kernel with weight
  c = 0.125 on all eight neighbours and 0 at the centre::

      0.125  0.125  0.125
      0.125  0      0.125
      0.125  0.125  0.125

  (its first kernel weighs edge neighbours 0.176765 and corners 0.073235).
  After every convolution the observed pixels are re-imposed, and the LM-RBM
  paper runs exactly 200 iterations. Outside the 28x28 image counts as 0
  (zero padding, the usual boundary of ``imfilter``-style filtering), which is
  again MNIST's background.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfimpute.masks import TrainingExamples
from tfimpute.models.base import Imputer, keep_observed
from tfimpute.models.registry import register_model

PAPER_INPAINTING_ITERATIONS = 200
NEIGHBOUR_WEIGHT = 0.125  # Oliveira et al.'s second kernel: c on the 8 neighbours


def diffusion_kernel() -> np.ndarray:
    """Oliveira et al.'s second diffusion kernel, shaped [3, 3, 1, 1] for ``tf.nn.conv2d``."""
    kernel = np.full((3, 3), NEIGHBOUR_WEIGHT, dtype=np.float32)
    kernel[1, 1] = 0.0
    return kernel[:, :, None, None]


@register_model("mean", summary="per-pixel mean of the observed training pixels")
class MeanImputer(Imputer):
    """Mean imputation: missing pixel i <- mean of pixel i where observed in the training set.

    A pixel never observed in the training data gets the mean of all observed
    training pixels.
    """

    trainable_imputer = False
    renamed_settings = {"image_shape": "data_shape"}  # 0.1 knew images only

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.pixel_means = self.add_weight(shape=self.data_shape, initializer="zeros",
                                           trainable=False, name="pixel_means")
        self.built = True

    def prepare(self, train_data: TrainingExamples) -> None:
        """Sets the per-pixel observed means from the incomplete training data."""
        self.pixel_means.assign(train_data.observed_pixel_means().astype(np.float32))

    def impute_batch(self, images: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        filled = tf.broadcast_to(self.pixel_means, tf.shape(images))
        return keep_observed(images, mask, filled)


@register_model("inpaint", summary="fast diffusion inpainting (Oliveira et al. 2001), 200 iterations")
class DiffusionInpainter(Imputer):
    """Fast digital inpainting (Oliveira et al. 2001) with its second kernel; see the module docstring."""

    trainable_imputer = False
    accepts_vectors = False

    def __init__(self, iterations: int = PAPER_INPAINTING_ITERATIONS, **kwargs):
        super().__init__(**kwargs)
        if iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {iterations}")
        self.iterations = iterations
        self.kernel = tf.constant(diffusion_kernel())
        self.built = True

    def get_config(self) -> dict:
        return {**super().get_config(), "iterations": self.iterations}

    def impute_batch(self, images: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        # Every (image, channel) pair is moved to the channel axis ([1, H, W, B*C]) so that one
        # depthwise convolution diffuses them all at once: about 8x faster on CPU than a
        # single-channel conv2d over [B, H, W, 1], with the same result.
        height, width, channels = self.data_shape

        def to_channels(batch: tf.Tensor) -> tf.Tensor:
            return tf.reshape(tf.transpose(batch, [1, 2, 0, 3]), [1, height, width, -1])

        def from_channels(stacked: tf.Tensor) -> tf.Tensor:
            return tf.transpose(tf.reshape(stacked, [height, width, -1, channels]), [2, 0, 1, 3])

        observed_mask = to_channels(mask) > 0.5
        observed = tf.where(observed_mask, to_channels(images), 0.0)  # missing cleared
        kernel = tf.tile(self.kernel, [1, 1, tf.shape(observed)[3], 1])

        def diffuse(step: tf.Tensor, current: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            blurred = tf.nn.depthwise_conv2d(current, kernel, strides=[1, 1, 1, 1], padding="SAME")
            return step + 1, tf.where(observed_mask, observed, blurred)

        _, inpainted = tf.while_loop(lambda step, _: step < self.iterations, diffuse,
                                     (tf.constant(0), observed))
        return keep_observed(images, mask, from_channels(inpainted))
