"""Machinery shared by the GANs of the zoo: Wasserstein losses, gradient penalty, networks.

Losses are written for ``tf.distribute``: a per-example quantity is summed and
divided by the GLOBAL batch size (``replica_mean``, from :mod:`tfimpute.models.replicas`,
exact for uneven splits), so that gradients summed across replicas equal the
single-device gradient of the batch mean; the gradient penalty is per example.

The convolutional generator and critic are the MNIST networks of WGAN-GP that
MisGAN uses (Li et al. 2019; Gulrajani et al. 2017), generalised to any image shape
(H, W, C): the generator maps a latent vector through a dense layer to
h₀ x w₀ x 4·width, then transposed convolutions to (2h₀ + 20) x (2w₀ + 20) x C, cropped
to H x W, with h₀ = max(1, ⌈(H − 20) / 2⌉) (MNIST: 4x4 → 28x28, nothing cropped);
the critic is three stride-2 5x5 convolutions and a linear output. For vectors (D,)
(tables) MisGAN uses the fully connected :func:`dense_generator` and :func:`dense_critic`.
The DCGAN networks (:func:`dcgan_generator`, :func:`dcgan_discriminator`) are images only.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers

from tfimpute import precision
from tfimpute.models.replicas import replica_mean


def non_batch_axes(tensor: tf.Tensor) -> list[int]:
    """[1, ..., rank − 1]: the axes of one example ([1, 2, 3] for images [B, H, W, C], [1] for vectors)."""
    return list(range(1, tensor.shape.rank))


def critic_scores(critic: keras.Model, images: tf.Tensor) -> tf.Tensor:
    """The critic's scores [B] in float32 (under any dtype policy)."""
    return tf.reshape(precision.to_float32(critic(images, training=True)), [-1])


def gradient_penalty(critic: keras.Model, real: tf.Tensor, fake: tf.Tensor,
                     interpolation: tf.Tensor) -> tf.Tensor:
    """Per-example (‖∇D(x̂)‖₂ − 1)² at x̂ = εx + (1 − ε)x̃ (WGAN-GP, Gulrajani et al. 2017).

    ``interpolation`` holds ε ~ U(0, 1), one per example, shaped [B, 1, ...] of the data's rank
    ([B, 1, 1, 1] for images, [B, 1] for vectors); the norm is over all non-batch axes.
    """
    mixed = interpolation * real + (1.0 - interpolation) * fake
    with tf.GradientTape() as tape:
        tape.watch(mixed)
        scores = critic_scores(critic, mixed)
    gradients = tape.gradient(scores, mixed)
    # The small constant keeps the norm differentiable where the gradient vanishes.
    norms = tf.sqrt(tf.reduce_sum(tf.square(gradients), axis=non_batch_axes(gradients)) + 1e-12)
    return tf.square(norms - 1.0)


def critic_step(critic: keras.Model, optimizer: keras.optimizers.Optimizer, real: tf.Tensor,
                fake: tf.Tensor, interpolation: tf.Tensor, penalty_weight: float) -> tf.Tensor:
    """One WGAN-GP critic update: minimise E[D(fake)] − E[D(real)] + λ·GP. Returns the loss."""
    real, fake = tf.stop_gradient(real), tf.stop_gradient(fake)
    with tf.GradientTape() as tape:
        loss = replica_mean(
            critic_scores(critic, fake) - critic_scores(critic, real)
            + penalty_weight * gradient_penalty(critic, real, fake, interpolation))
        scaled_loss = optimizer.scale_loss(loss)  # float16's loss scale (tfimpute.precision); else loss
    optimizer.apply_gradients(zip(tape.gradient(scaled_loss, critic.trainable_variables),
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


def centre_crop(size: tuple[int, int], target: tuple[int, int]) -> list[layers.Layer]:
    """A ``Cropping2D`` from ``size`` (h, w) to ``target`` around the centre (the extra row or
    column of an odd excess at the bottom / right); no layer when the sizes agree."""
    (height, width), (target_height, target_width) = size, target
    extra_height, extra_width = height - target_height, width - target_width
    if extra_height == extra_width == 0:
        return []
    return [layers.Cropping2D(((extra_height // 2, extra_height - extra_height // 2),
                               (extra_width // 2, extra_width - extra_width // 2)))]


def checked_image_shape(image_shape) -> tuple[int, int, int]:
    shape = tuple(int(size) for size in image_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"a convolutional network needs an image shape [H, W, C], got {list(shape)}")
    return shape


def conv_generator_start(side: int) -> int:
    """Side h₀ of the dense layer's grid for an output side H (height or width): the
    transposed convolutions grow h₀ to 2h₀ + 20 ≥ H (MNIST's 28: h₀ = 4, exactly 28)."""
    return max(1, -(-(side - 20) // 2))


def conv_generator(image_shape, latent_size: int, width: int, name: str, seed: int) -> keras.Sequential:
    """Latent [B, latent] → logits [B, H, W, C] (apply the output transform outside).

    WGAN-GP's MNIST generator for any (H, W, C): Dense → h₀ x w₀ x 4w, 5x5 transposed
    convolution (+4), crop one row and column (−1), 5x5 transposed convolution (+4), 8x8
    stride-2 transposed convolution to C channels (s → 2s + 6), i.e. (2h₀ + 20) x (2w₀ + 20),
    centre-cropped to H x W (:func:`conv_generator_start`). For (28, 28, 1) these are
    exactly the layers, variable shapes and initialiser seeds of the MNIST network
    (4x4 → 8x8 → 7x7 → 11x11 → 28x28, nothing cropped), so its checkpoints load.
    """
    image_height, image_width, channels = checked_image_shape(image_shape)
    start_height, start_width = conv_generator_start(image_height), conv_generator_start(image_width)
    generated = (2 * start_height + 20, 2 * start_width + 20)
    return keras.Sequential([
        keras.Input((latent_size,)),
        layers.Dense(start_height * start_width * 4 * width, activation="relu",
                     kernel_initializer=seeded(seed, 0)),
        layers.Reshape((start_height, start_width, 4 * width)),
        layers.Conv2DTranspose(2 * width, 5, activation="relu", kernel_initializer=seeded(seed, 1)),  # h₀+4
        layers.Cropping2D(((0, 1), (0, 1))),  # h₀+3
        layers.Conv2DTranspose(width, 5, activation="relu", kernel_initializer=seeded(seed, 2)),  # h₀+7
        layers.Conv2DTranspose(channels, 8, strides=2, kernel_initializer=seeded(seed, 3)),  # 2h₀+20
        *centre_crop(generated, (image_height, image_width)),  # H
    ], name=name)


def conv_critic(image_shape, width: int, name: str, seed: int) -> keras.Sequential:
    """Images [B, H, W, C] → scores [B, 1] (no sigmoid: a Wasserstein critic): three stride-2
    5x5 "same" convolutions (⌈H/8⌉ x ⌈W/8⌉ x 4w), flattened into a linear output."""
    return keras.Sequential([
        keras.Input(checked_image_shape(image_shape)),
        layers.Conv2D(width, 5, strides=2, padding="same", activation="relu",
                      kernel_initializer=seeded(seed, 0)),
        layers.Conv2D(2 * width, 5, strides=2, padding="same", activation="relu",
                      kernel_initializer=seeded(seed, 1)),
        layers.Conv2D(4 * width, 5, strides=2, padding="same", activation="relu",
                      kernel_initializer=seeded(seed, 2)),
        layers.Flatten(),
        layers.Dense(1, kernel_initializer=seeded(seed, 3)),
    ], name=name)


def dense_generator(size: int, latent_size: int, width: int, name: str, seed: int) -> keras.Sequential:
    """Latent [B, latent] → logits [B, size] for vectors (tables): two ReLU layers of 4·width
    units and a linear output (apply the output transform outside)."""
    return keras.Sequential([
        keras.Input((latent_size,)),
        layers.Dense(4 * width, activation="relu", kernel_initializer=seeded(seed, 0)),
        layers.Dense(4 * width, activation="relu", kernel_initializer=seeded(seed, 1)),
        layers.Dense(size, kernel_initializer=seeded(seed, 2)),
    ], name=name)


def dense_critic(size: int, width: int, name: str, seed: int) -> keras.Sequential:
    """Vectors [B, size] → scores [B, 1] (a Wasserstein critic): two ReLU layers of 4·width
    units and a linear output."""
    return keras.Sequential([
        keras.Input((size,)),
        layers.Dense(4 * width, activation="relu", kernel_initializer=seeded(seed, 0)),
        layers.Dense(4 * width, activation="relu", kernel_initializer=seeded(seed, 1)),
        layers.Dense(1, kernel_initializer=seeded(seed, 2)),
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


def dcgan_generator(image_shape, input_size: int, width: int, name: str, seed: int) -> keras.Sequential:
    """[B, input_size] → logits [B, H, W, C]: a projection to ⌈H/4⌉ x ⌈W/4⌉ x 4w, then two
    fractionally strided 5x5 convolutions (x2 each, the second to C channels) with batch norm and
    ReLU, no pooling or hidden fully connected layers (DCGAN's guidelines, seed 001 §3), centre-cropped
    from 4⌈H/4⌉ x 4⌈W/4⌉ to H x W. MNIST (28, 28, 1): 7x7 → 14x14 → 28x28, nothing cropped."""
    image_height, image_width, channels = checked_image_shape(image_shape)
    start_height, start_width = -(-image_height // 4), -(-image_width // 4)
    return keras.Sequential([
        keras.Input((input_size,)),
        layers.Dense(start_height * start_width * 4 * width, use_bias=False,
                     kernel_initializer=_dcgan_init(seed, 0)),
        _batch_norm(), layers.ReLU(),
        layers.Reshape((start_height, start_width, 4 * width)),
        layers.Conv2DTranspose(2 * width, 5, strides=2, padding="same", use_bias=False,
                               kernel_initializer=_dcgan_init(seed, 1)),
        _batch_norm(), layers.ReLU(),
        layers.Conv2DTranspose(channels, 5, strides=2, padding="same", kernel_initializer=_dcgan_init(seed, 2)),
        *centre_crop((4 * start_height, 4 * start_width), (image_height, image_width)),
    ], name=name)


def dcgan_discriminator(input_shape, width: int, name: str, seed: int) -> keras.Sequential:
    """[B, H, W, channels] → logit [B, 1]: two strided 5x5 "same" convolutions with LeakyReLU(0.2),
    batch norm on all but the input layer (seed 001 §3), flattened into a linear output.
    ``input_shape`` is what it sees: the image's (H, W, C), plus CGAN's label planes in channels."""
    return keras.Sequential([
        keras.Input(checked_image_shape(input_shape)),
        layers.Conv2D(width, 5, strides=2, padding="same", kernel_initializer=_dcgan_init(seed, 0)),
        layers.LeakyReLU(0.2),
        layers.Conv2D(2 * width, 5, strides=2, padding="same", use_bias=False,
                      kernel_initializer=_dcgan_init(seed, 1)),
        _batch_norm(), layers.LeakyReLU(0.2),
        layers.Flatten(),
        layers.Dense(1, kernel_initializer=_dcgan_init(seed, 2)),
    ], name=name)


def latent_encoder(image_shape, output_size: int, width: int, name: str, seed: int) -> keras.Sequential:
    """[B, H, W, 2C] (masked image and mask) → [B, output_size]: three stride-2 5x5 "same"
    convolutions with LeakyReLU(0.2) (the discriminator's, without batch norm, so that a digit's
    code does not depend on its batch), flattened into a linear output. Inverts the generator for
    the fast latent search (:mod:`tfimpute.models.dcgan`)."""
    height, image_width, channels = checked_image_shape(image_shape)
    return keras.Sequential([
        keras.Input((height, image_width, 2 * channels)),
        layers.Conv2D(width, 5, strides=2, padding="same", kernel_initializer=_dcgan_init(seed, 0)),
        layers.LeakyReLU(0.2),
        layers.Conv2D(2 * width, 5, strides=2, padding="same", kernel_initializer=_dcgan_init(seed, 1)),
        layers.LeakyReLU(0.2),
        layers.Conv2D(4 * width, 5, strides=2, padding="same", kernel_initializer=_dcgan_init(seed, 2)),
        layers.LeakyReLU(0.2),
        layers.Flatten(),
        layers.Dense(output_size, kernel_initializer=_dcgan_init(seed, 3)),
    ], name=name)
