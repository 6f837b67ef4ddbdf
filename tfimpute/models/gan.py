"""Machinery shared by the GANs of the zoo: Wasserstein losses, gradient penalty, networks.

Losses are written for ``tf.distribute``: a per-example quantity is summed and
divided by the GLOBAL batch size (``replica_mean``, from :mod:`tfimpute.models.replicas`,
exact for uneven splits), so that gradients summed across replicas equal the
single-device gradient of the batch mean; the gradient penalty is per example.

The convolutional generator and critic are the MNIST networks of WGAN-GP that
MisGAN uses (Li et al. 2019; Gulrajani et al. 2017): the generator maps a
latent vector through a dense layer to 4x4x256, then transposed convolutions to
28x28; the critic is three stride-2 5x5 convolutions and a linear output.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from tfimpute.models.replicas import replica_mean


def critic_scores(critic: keras.Model, images: tf.Tensor) -> tf.Tensor:
    return tf.reshape(critic(images, training=True), [-1])


def gradient_penalty(critic: keras.Model, real: tf.Tensor, fake: tf.Tensor,
                     interpolation: tf.Tensor) -> tf.Tensor:
    """Per-example (‖∇D(x̂)‖₂ − 1)² at x̂ = εx + (1 − ε)x̃ (WGAN-GP, Gulrajani et al. 2017).

    ``interpolation`` holds ε ~ U(0, 1), one per example, shaped [B, 1, 1, 1].
    """
    mixed = interpolation * real + (1.0 - interpolation) * fake
    with tf.GradientTape() as tape:
        tape.watch(mixed)
        scores = critic_scores(critic, mixed)
    gradients = tape.gradient(scores, mixed)
    # The small constant keeps the norm differentiable where the gradient vanishes.
    norms = tf.sqrt(tf.reduce_sum(tf.square(gradients), axis=[1, 2, 3]) + 1e-12)
    return tf.square(norms - 1.0)


def critic_step(critic: keras.Model, optimizer: keras.optimizers.Optimizer, real: tf.Tensor,
                fake: tf.Tensor, interpolation: tf.Tensor, penalty_weight: float) -> tf.Tensor:
    """One WGAN-GP critic update: minimise E[D(fake)] − E[D(real)] + λ·GP. Returns the loss."""
    real, fake = tf.stop_gradient(real), tf.stop_gradient(fake)
    with tf.GradientTape() as tape:
        loss = replica_mean(
            critic_scores(critic, fake) - critic_scores(critic, real)
            + penalty_weight * gradient_penalty(critic, real, fake, interpolation))
    optimizer.apply_gradients(zip(tape.gradient(loss, critic.trainable_variables),
                                  critic.trainable_variables))
    return loss


def generator_loss(critic: keras.Model, fake: tf.Tensor) -> tf.Tensor:
    """Wasserstein generator loss −E[D(fake)]."""
    return -replica_mean(critic_scores(critic, fake))


def straight_line(start: tf.Tensor, end: tf.Tensor, steps: int) -> tf.Tensor:
    """``steps`` points evenly spaced on the straight line from vector ``start`` to ``end``,
    [steps, D]: latents (and CGAN conditions) for latent interpolation (seed 002 §2: smooth
    transitions mean the generator did not memorise)."""
    weights = tf.linspace(0.0, 1.0, steps)[:, None]
    return (1.0 - weights) * start[None] + weights * end[None]


def seeded(seed: int, index: int) -> keras.initializers.Initializer:
    """Glorot-uniform kernel initialiser for layer ``index`` of a network seeded by ``seed``."""
    return keras.initializers.GlorotUniform(seed=seed * 1000 + index)


def conv_generator(latent_size: int, width: int, name: str, seed: int) -> keras.Sequential:
    """Latent [B, latent] → logits [B, 28, 28, 1] (apply the output transform outside)."""
    return keras.Sequential([
        keras.Input((latent_size,)),
        layers.Dense(4 * 4 * 4 * width, activation="relu", kernel_initializer=seeded(seed, 0)),
        layers.Reshape((4, 4, 4 * width)),
        layers.Conv2DTranspose(2 * width, 5, activation="relu", kernel_initializer=seeded(seed, 1)),  # 8x8
        layers.Cropping2D(((0, 1), (0, 1))),  # 7x7
        layers.Conv2DTranspose(width, 5, activation="relu", kernel_initializer=seeded(seed, 2)),  # 11x11
        layers.Conv2DTranspose(1, 8, strides=2, kernel_initializer=seeded(seed, 3)),  # 28x28
    ], name=name)


def conv_critic(width: int, name: str, seed: int) -> keras.Sequential:
    """Images [B, 28, 28, 1] → scores [B, 1] (no sigmoid: a Wasserstein critic)."""
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(width, 5, strides=2, padding="same", activation="relu",
                      kernel_initializer=seeded(seed, 0)),
        layers.Conv2D(2 * width, 5, strides=2, padding="same", activation="relu",
                      kernel_initializer=seeded(seed, 1)),
        layers.Conv2D(4 * width, 5, strides=2, padding="same", activation="relu",
                      kernel_initializer=seeded(seed, 2)),
        layers.Flatten(),
        layers.Dense(1, kernel_initializer=seeded(seed, 3)),
    ], name=name)


# -- DCGAN family (seed 001: Radford et al.; seed 002 §2; seed 004 §5.1) ---------------------------

def discriminator_cross_entropy(real_logits: tf.Tensor, fake_logits: tf.Tensor) -> tf.Tensor:
    """−E[log D(x)] − E[log(1 − D(G(z)))] on logits (softplus form, stable for large |logit|)."""
    return replica_mean(tf.nn.softplus(-real_logits) + tf.nn.softplus(fake_logits))


def non_saturating_generator_loss(fake_logits: tf.Tensor) -> tf.Tensor:
    """−E[log D(G(z))]: the generator loss of seed 002 §2 (strong gradients early in training)."""
    return replica_mean(tf.nn.softplus(-fake_logits))


def _dcgan_init(seed: int, index: int) -> keras.initializers.Initializer:
    """N(0, 0.02) weights, as in DCGAN (seed 001 §4), seeded per layer."""
    return keras.initializers.RandomNormal(stddev=0.02, seed=seed * 1000 + index)


def _batch_norm() -> layers.BatchNormalization:
    # Synchronized: under tf.distribute the statistics are those of the global batch.
    return layers.BatchNormalization(synchronized=True)


def dcgan_generator(input_size: int, width: int, name: str, seed: int) -> keras.Sequential:
    """[B, input_size] → logits [B, 28, 28, 1]: a projection to 7x7x4w, then two fractionally
    strided 5x5 convolutions (7 → 14 → 28) with batch norm and ReLU, no pooling or hidden
    fully connected layers (DCGAN's guidelines, seed 001 §3, sized for 28x28 MNIST)."""
    return keras.Sequential([
        keras.Input((input_size,)),
        layers.Dense(7 * 7 * 4 * width, use_bias=False, kernel_initializer=_dcgan_init(seed, 0)),
        _batch_norm(), layers.ReLU(),
        layers.Reshape((7, 7, 4 * width)),
        layers.Conv2DTranspose(2 * width, 5, strides=2, padding="same", use_bias=False,
                               kernel_initializer=_dcgan_init(seed, 1)),
        _batch_norm(), layers.ReLU(),
        layers.Conv2DTranspose(1, 5, strides=2, padding="same", kernel_initializer=_dcgan_init(seed, 2)),
    ], name=name)


def dcgan_discriminator(channels: int, width: int, name: str, seed: int) -> keras.Sequential:
    """[B, 28, 28, channels] → logit [B, 1]: strided 5x5 convolutions with LeakyReLU(0.2), batch
    norm on all but the input layer (seed 001 §3)."""
    return keras.Sequential([
        keras.Input((28, 28, channels)),
        layers.Conv2D(width, 5, strides=2, padding="same", kernel_initializer=_dcgan_init(seed, 0)),
        layers.LeakyReLU(0.2),
        layers.Conv2D(2 * width, 5, strides=2, padding="same", use_bias=False,
                      kernel_initializer=_dcgan_init(seed, 1)),
        _batch_norm(), layers.LeakyReLU(0.2),
        layers.Flatten(),
        layers.Dense(1, kernel_initializer=_dcgan_init(seed, 2)),
    ], name=name)
