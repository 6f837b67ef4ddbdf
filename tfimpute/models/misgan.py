"""MisGAN: learning a data generator, a mask generator and an imputer from incomplete data.

Li, Jiang & Marlin (2019), the LM-RBM paper's ref. [14]; written for Keras from
the paper and the authors' public code (steveli/misgan). Three Wasserstein GANs
with gradient penalty share one training step:

* data:   critic D_x sees real incomplete data x ⊙ m + τ(1 − m) against
          G_x(z) ⊙ G_m(ε) + τ(1 − G_m(ε));
* mask:   critic D_m sees real masks against G_m(ε);
* imputer: critic D_i sees G_x(z) (complete samples) against imputations
          x ⊙ m + I(x ⊙ m + ω ⊙ (1 − m)) ⊙ (1 − m), ω ~ U(0, 1).

Every batch updates the three critics; every ``critic_steps``-th batch also
updates the generators and the imputer with the joint objective
L_m + α·L_x (mask generator), L_x + β·L_i (data generator; the β term is
E[D_i(G_x(z))], the generator's side of the imputer game — the authors' code
back-propagates a term that does not depend on G_x, so there β has no effect),
and L_i + γ·(observed-pixel reconstruction) (imputer). Paper settings (its
footnote 1): τ = 0, α = 0.1, β = 0.1, γ = 0, λ_GP = 10, 5 critic steps,
latent size 128, batch 64, Adam(1e-4, β=(0.5, 0.9)) and 2e-4 for the imputer
and its critic, "fusion" mask output, imputer with three 784-unit layers.

Beyond the paper, ``misgan_holdout_weight`` (γ_h, 0 by default) adds a leave-out
reconstruction loss to the imputer's: a fraction ``misgan_holdout_rate`` of each
example's observed pixels is hidden from a second imputer pass and scored on it,
the "leave-one-out style" loss of the LM-RBM paper's §5. It is this model's knob on
the perception–distortion frontier (``tfimpute.evaluate --frontier`` fine-tunes a
trained MisGAN with it): γ_h = 0 is the paper's MisGAN.

The networks follow the data's shape (``data_shape``): images (H, W, C) get WGAN-GP's
convolutional generators and critics (:func:`tfimpute.models.gan.conv_generator` /
``conv_critic``; for MNIST's (28, 28, 1) the paper's networks), vectors (D,) (tables)
fully connected ones (``dense_generator`` / ``dense_critic``). The imputer is fully
connected on the flattened example in both cases (H·W·C or D values in and out).

Under ``tf.distribute`` the schedule lives in :meth:`MisGAN.distributed_train_step`:
the critic updates run on every replica, then a ``tf.cond`` in cross-replica context
decides whether the generator updates run. (A ``tf.cond`` around ``apply_gradients``
inside a replica function fails under MirroredStrategy: the gradient all-reduce is a
``merge_call``, which cannot sit in a control-flow branch.)
"""

from __future__ import annotations

from typing import Annotated

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from tfimpute import precision, signatures, visualize
from tfimpute.models import gan
from tfimpute.models.base import Imputer, keep_observed, sum_over_replicas
from tfimpute.models.capabilities import EpochImage, FrontierPoint
from tfimpute.models.registry import Setting, register_model
from tfimpute.models.replicas import StepDraws

OPTIMIZER_ATTRIBUTES = ("data_generator_optimizer", "mask_generator_optimizer", "imputer_optimizer",
                        "data_critic_optimizer", "mask_critic_optimizer", "imputer_critic_optimizer")


def adam(learning_rate: float, loss_scale_factor: float | None = None) -> keras.optimizers.Adam:
    """The MisGAN authors' Adam: β = (0.5, 0.9) (``loss_scale_factor``: float16's, see :mod:`tfimpute.precision`)."""
    return keras.optimizers.Adam(learning_rate=learning_rate, beta_1=0.5, beta_2=0.9,
                                 loss_scale_factor=loss_scale_factor)


@register_model("misgan", summary="MisGAN (Li et al. 2019): data, mask and imputer WGAN-GPs")
class MisGAN(Imputer):
    """MisGAN with generators and critics for the data's shape (convolutional for images, fully
    connected for vectors) and a fully connected imputer on the flattened example.

    ``compile()`` creates the six players' Adam optimizers (``learning_rate``; the imputer
    and its critic ``imputer_learning_rate``), or takes them as arguments named as
    :data:`OPTIMIZER_ATTRIBUTES`. ``mask_temperature`` (T of the "fusion" mask output) is not a flag.
    """

    num_classes = 0  # unconditional, like DCGAN: tfimpute.gan_report reads both
    renamed_settings = {"width": "gan_width", "tau": "misgan_tau", "alpha": "misgan_alpha",
                        "beta": "misgan_beta", "gamma": "misgan_gamma", "penalty_weight": "gradient_penalty"}
    tiny_settings = {"latent_size": 8, "gan_width": 4, "imputer_units": 16, "critic_steps": 2}
    added_settings = ("misgan_holdout_weight", "misgan_holdout_rate")
    frontier_points = tuple(FrontierPoint(f"γ_h={weight:g}", {"misgan_holdout_weight": weight})
                            for weight in (0.0, 1.0, 10.0, 100.0))

    def __init__(self,
                 latent_size: Annotated[int, Setting("GAN latent vector size.")] = 128,
                 gan_width: Annotated[int, Setting("Channels of the first discriminator/critic "
                                                   "convolution.")] = 64,
                 imputer_units: Annotated[int, Setting("Units in each of MisGAN's three imputer "
                                                       "layers.")] = 784,
                 misgan_tau: Annotated[float, Setting("MisGAN τ: value given to missing pixels seen by "
                                                      "the critic.")] = 0.0,
                 misgan_alpha: Annotated[float, Setting("MisGAN α: weight of the data loss in the mask "
                                                        "generator's.")] = 0.1,
                 misgan_beta: Annotated[float, Setting("MisGAN β: weight of the imputer game in the data "
                                                       "generator's.")] = 0.1,
                 misgan_gamma: Annotated[float, Setting("MisGAN γ: weight of the imputer's observed-pixel "
                                                        "loss.")] = 0.0,
                 misgan_holdout_weight: Annotated[float, Setting(
                     "MisGAN γ_h: weight of a leave-out reconstruction loss on observed pixels hidden from the "
                     "imputer (LM-RBM paper §5; 0: the paper's MisGAN).")] = 0.0,
                 misgan_holdout_rate: Annotated[float, Setting(
                     "MisGAN: fraction of each example's observed pixels hidden for --misgan_holdout_weight's "
                     "loss.")] = 0.2,
                 gradient_penalty: Annotated[float, Setting("WGAN-GP gradient penalty weight λ.")] = 10.0,
                 critic_steps: Annotated[int, Setting("Critic updates per generator update.")] = 5,
                 learning_rate: Annotated[float, Setting("Adam learning rate of the generators and "
                                                         "critics.")] = 1e-4,
                 imputer_learning_rate: Annotated[float, Setting("MisGAN imputer and imputer-critic "
                                                                 "learning rate.")] = 2e-4,
                 mask_temperature: float = 0.66,
                 seed: Annotated[int, Setting("Seed of initialisation, shuffling and training draws.")] = 0,
                 **kwargs):
        super().__init__(**kwargs)
        width, tau, alpha, beta, gamma = gan_width, misgan_tau, misgan_alpha, misgan_beta, misgan_gamma
        penalty_weight = gradient_penalty
        if critic_steps < 1 or latent_size < 1 or width < 1 or imputer_units < 1:
            raise ValueError("critic_steps, latent_size, width and imputer_units must be >= 1")
        if misgan_holdout_weight < 0 or not 0.0 < misgan_holdout_rate < 1.0:
            raise ValueError(f"misgan_holdout_weight must be >= 0 and misgan_holdout_rate in (0, 1), got "
                             f"{misgan_holdout_weight} and {misgan_holdout_rate}")
        self.holdout_weight, self.holdout_rate = misgan_holdout_weight, misgan_holdout_rate
        self.latent_size, self.width, self.imputer_units = latent_size, width, imputer_units
        self.tau, self.alpha, self.beta, self.gamma = tau, alpha, beta, gamma
        self.penalty_weight, self.critic_steps = penalty_weight, critic_steps
        self.learning_rate, self.imputer_learning_rate = learning_rate, imputer_learning_rate
        self.mask_temperature, self.seed = mask_temperature, seed

        # Every network's initialisation is seeded from `seed`, so a config reproduces a run.
        network_seed = 6 * seed
        self.num_values = int(np.prod(self.data_shape))  # values of one example (MNIST: 784)
        self.data_generator = self._generator("data_generator", network_seed)
        self.mask_generator = self._generator("mask_generator", network_seed + 1)
        self.imputer_network = keras.Sequential([
            keras.Input((self.num_values,)),
            *(layers.Dense(imputer_units, activation="relu",
                           kernel_initializer=gan.seeded(network_seed + 2, i)) for i in range(3)),
            layers.Dense(self.num_values, kernel_initializer=gan.seeded(network_seed + 2, 3)),
        ], name="imputer_network")
        self.data_critic = self._critic("data_critic", network_seed + 3)
        self.mask_critic = self._critic("mask_critic", network_seed + 4)
        self.imputer_critic = self._critic("imputer_critic", network_seed + 5)
        self.built = True

    def _generator(self, name: str, seed: int) -> keras.Sequential:
        """Latents → logits of one example's shape: convolutional for images, dense for vectors."""
        if self.is_image_model:
            return gan.conv_generator(self.data_shape, self.latent_size, self.width, name, seed)
        return gan.dense_generator(self.num_values, self.latent_size, self.width, name, seed)

    def _critic(self, name: str, seed: int) -> keras.Sequential:
        """Examples → Wasserstein scores [B, 1]: convolutional for images, dense for vectors."""
        if self.is_image_model:
            return gan.conv_critic(self.data_shape, self.width, name, seed)
        return gan.dense_critic(self.num_values, self.width, name, seed)

    def get_config(self) -> dict:
        return {**super().get_config(), "latent_size": self.latent_size, "gan_width": self.width,
                "imputer_units": self.imputer_units, "misgan_tau": self.tau, "misgan_alpha": self.alpha,
                "misgan_beta": self.beta, "misgan_gamma": self.gamma, "misgan_holdout_weight": self.holdout_weight,
                "misgan_holdout_rate": self.holdout_rate, "gradient_penalty": self.penalty_weight,
                "critic_steps": self.critic_steps, "learning_rate": self.learning_rate,
                "imputer_learning_rate": self.imputer_learning_rate,
                "mask_temperature": self.mask_temperature, "seed": self.seed}

    def compile(self, **optimizers: keras.optimizers.Optimizer) -> None:
        """One optimizer per player (keyword names: :data:`OPTIMIZER_ATTRIBUTES`); by default the
        authors' Adam at ``learning_rate``, ``imputer_learning_rate`` for the imputer and its critic."""
        unknown = set(optimizers) - set(OPTIMIZER_ATTRIBUTES)
        if unknown:
            raise TypeError(f"MisGAN.compile takes {', '.join(OPTIMIZER_ATTRIBUTES)}; got {sorted(unknown)}")
        scale = precision.loss_scale_factor(self.dtype_policy.name)
        for attribute in OPTIMIZER_ATTRIBUTES:
            rate = self.imputer_learning_rate if attribute.startswith("imputer") else self.learning_rate
            setattr(self, attribute, optimizers.get(attribute) or adam(rate, scale))
        super().compile()

    def _pairs(self):
        """(network, its optimizer) for the six players."""
        return [(self.data_generator, self.data_generator_optimizer),
                (self.mask_generator, self.mask_generator_optimizer),
                (self.imputer_network, self.imputer_optimizer),
                (self.data_critic, self.data_critic_optimizer),
                (self.mask_critic, self.mask_critic_optimizer),
                (self.imputer_critic, self.imputer_critic_optimizer)]

    def optimizers(self) -> list[keras.optimizers.Optimizer]:
        return [getattr(self, name) for name in OPTIMIZER_ATTRIBUTES if hasattr(self, name)]

    def build_optimizers(self) -> None:
        """Creates every optimizer's slots before tracing or restoring a checkpoint."""
        for network, optimizer in self._pairs():
            optimizer.build(network.trainable_variables)

    @property
    def training_step_counter(self) -> tf.Variable:
        return self.data_critic_optimizer.iterations

    # -- the networks as functions ------------------------------------------------------------

    def draw_latents(self, count: int | tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """``count`` latents z ~ N(0, I), stateless in ``seed``."""
        return tf.random.stateless_normal(tf.stack([tf.cast(count, tf.int32), self.latent_size]), seed)

    def generate(self, latent: tf.Tensor) -> tf.Tensor:
        """G_x: examples in [0, 1], [B, *data_shape], from latents [B, latent_size]."""
        return tf.sigmoid(precision.to_float32(self.data_generator(latent, training=True)))

    def generate_masks(self, latent: tf.Tensor) -> tf.Tensor:
        """The "fusion" output: sigmoid(x / T) stretched to [−0.1, 1.1], then clipped to [0, 1]."""
        soft = tf.sigmoid(precision.to_float32(self.mask_generator(latent, training=True)) / self.mask_temperature)
        return tf.clip_by_value(soft * 1.2 - 0.1, 0.0, 1.0)

    def masked(self, images: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
        """x ⊙ m + τ(1 − m): what the data critic sees of an incomplete image."""
        return images * mask + self.tau * (1.0 - mask)

    def imputer_output(self, observed: tf.Tensor, mask: tf.Tensor, noise: tf.Tensor) -> tf.Tensor:
        """I(x ⊙ m + ω ⊙ (1 − m)) for every entry, observed ones included (for γ > 0); the imputer
        sees the example flattened to its ``num_values`` values."""
        filled = observed * mask + noise * (1.0 - mask)
        logits = precision.to_float32(self.imputer_network(tf.reshape(filled, [-1, self.num_values]), training=True))
        return tf.reshape(tf.sigmoid(logits), tf.shape(observed))

    def complete(self, observed: tf.Tensor, mask: tf.Tensor, noise: tf.Tensor) -> tf.Tensor:
        """Imputation: observed entries kept exactly, missing ones from the imputer."""
        return keep_observed(observed, mask, self.imputer_output(observed, mask, noise))

    # -- training -------------------------------------------------------------------------------

    def _draws(self, batch_size: tf.Tensor, step: tf.Tensor, stream: int) -> tuple[tf.Tensor, ...]:
        """Latents, imputer noise and GP interpolation weights of (step, stream): the global
        batch's draws, this replica's rows."""
        draws = StepDraws(self.seed, step, batch_size, stream)
        ones = [1] * len(self.data_shape)  # ε: one per example, [B, 1, ...] of the data's rank
        return (draws.normal([self.latent_size]), draws.normal([self.latent_size]),
                draws.uniform(list(self.data_shape)), draws.uniform(ones), draws.uniform(ones),
                draws.uniform(ones))

    def critic_updates(self, observed: tf.Tensor, mask: tf.Tensor, step: tf.Tensor) -> dict[str, tf.Tensor]:
        """One gradient-penalty step for each of the three critics (replica context)."""
        batch_size = tf.shape(observed)[0]
        data_latent, mask_latent, noise, eps_data, eps_mask, eps_imputer = self._draws(batch_size, step, 0)
        fake_data = self.generate(data_latent)
        fake_mask = self.generate_masks(mask_latent)
        imputed = self.complete(observed, mask, noise)
        return {
            "data_critic_loss": gan.critic_step(
                self.data_critic, self.data_critic_optimizer, self.masked(observed, mask),
                self.masked(fake_data, fake_mask), eps_data, self.penalty_weight),
            "mask_critic_loss": gan.critic_step(
                self.mask_critic, self.mask_critic_optimizer, mask, fake_mask, eps_mask,
                self.penalty_weight),
            "imputer_critic_loss": gan.critic_step(
                self.imputer_critic, self.imputer_critic_optimizer, fake_data, imputed, eps_imputer,
                self.penalty_weight),
        }

    def generator_losses(self, observed: tf.Tensor, mask: tf.Tensor, data_latent: tf.Tensor,
                         mask_latent: tf.Tensor, noise: tf.Tensor,
                         holdout: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
        """The generator-side objectives for the draws given (z for G_x, ε for G_m, imputer noise ω,
        and U(0, 1) draws ``holdout`` like the data that pick the left-out pixels when γ_h > 0):

        * ``mask_generator_loss`` = L_m + α·L_x, with L_m = −E[D_m(G_m(ε))] and
          L_x = −E[D_x(G_x(z) ⊙ G_m(ε) + τ(1 − G_m(ε)))];
        * ``data_generator_loss`` = L_x + β·E[D_i(G_x(z))] (the generator's side of the imputer game);
        * ``imputer_loss`` = L_i + γ·E[Σ m (I(·) − x)² / max(Σ m, 1)] + γ_h·E[Σ h (I(x ⊙ k, k) − x)² / max(Σ h, 1)],
          with L_i = −E[D_i(imputation)], h = m ⊙ [holdout < misgan_holdout_rate] the left-out pixels
          and k = m − h the ones the second pass sees.

        Pure: no variable changes (call it under a tape to differentiate).
        """
        fake_data = self.generate(data_latent)
        fake_mask = self.generate_masks(mask_latent)
        data_loss = gan.generator_loss(self.data_critic, self.masked(fake_data, fake_mask))
        mask_loss = gan.generator_loss(self.mask_critic, fake_mask)
        # Generator side of the imputer game: β·E[D_i(G_x(z))].
        imputer_game = -gan.generator_loss(self.imputer_critic, fake_data)
        raw_imputation = self.imputer_output(observed, mask, noise)
        imputer_loss = gan.generator_loss(
            self.imputer_critic, keep_observed(observed, mask, raw_imputation))
        if self.gamma > 0:
            axes = gan.non_batch_axes(mask)
            per_image = (tf.reduce_sum(tf.square(raw_imputation - observed) * mask, axis=axes)
                         / tf.maximum(tf.reduce_sum(mask, axis=axes), 1.0))
            imputer_loss += self.gamma * gan.replica_mean(per_image)
        if self.holdout_weight > 0:
            if holdout is None:
                raise ValueError("misgan_holdout_weight > 0 needs the holdout draws")
            left_out = mask * tf.cast(holdout < self.holdout_rate, mask.dtype)
            kept = mask - left_out
            reconstruction = self.imputer_output(observed * kept, kept, noise)
            axes = gan.non_batch_axes(mask)
            per_image = (tf.reduce_sum(tf.square(reconstruction - observed) * left_out, axis=axes)
                         / tf.maximum(tf.reduce_sum(left_out, axis=axes), 1.0))
            imputer_loss += self.holdout_weight * gan.replica_mean(per_image)
        return {"mask_generator_loss": mask_loss + self.alpha * data_loss,
                "data_generator_loss": data_loss + self.beta * imputer_game,
                "imputer_loss": imputer_loss}

    def generator_updates(self, observed: tf.Tensor, mask: tf.Tensor, step: tf.Tensor) -> None:
        """Updates G_m, G_x and the imputer against the current critics (replica context)."""
        batch_size = tf.shape(observed)[0]
        data_latent, mask_latent, noise, *_ = self._draws(batch_size, step, 1)
        holdout = (StepDraws(self.seed, step, batch_size, 2).uniform(list(self.data_shape))
                   if self.holdout_weight > 0 else None)
        players = (("mask_generator_loss", self.mask_generator, self.mask_generator_optimizer),
                   ("data_generator_loss", self.data_generator, self.data_generator_optimizer),
                   ("imputer_loss", self.imputer_network, self.imputer_optimizer))
        with tf.GradientTape(persistent=True) as tape:
            losses = self.generator_losses(observed, mask, data_latent, mask_latent, noise, holdout)
            scaled = {name: optimizer.scale_loss(losses[name]) for name, _, optimizer in players}
        for name, network, optimizer in players:
            variables = network.trainable_variables
            optimizer.apply_gradients(zip(tape.gradient(scaled[name], variables), variables))
        del tape

    def distributed_train_step(self, strategy: tf.distribute.Strategy, batch) -> dict[str, tf.Tensor]:
        """Critics on every batch; generators and imputer on every ``critic_steps``-th (MisGAN's
        schedule), decided here in cross-replica context (see the module docstring)."""
        observed, mask = batch[0], batch[1]
        step = tf.identity(self.training_step_counter)
        logs = strategy.run(self.critic_updates, args=(observed, mask, step))
        tf.cond((step + 1) % self.critic_steps == 0,
                lambda: strategy.run(self.generator_updates, args=(observed, mask, step)),
                lambda: None)
        return sum_over_replicas(strategy, logs)

    def train_step(self, data):
        """One step on the current strategy (the default one: a single device)."""
        return self.distributed_train_step(tf.distribute.get_strategy(), data)

    def epoch_images(self, epoch: int, epochs: int) -> list[EpochImage]:
        """Grids of generated images (top two rows) and generated masks (bottom two, white =
        observed) from fixed latents, in TensorBoard and as ``samples_epoch_NNNN.png``; none for
        vectors (no picture of a table row)."""
        if not self.is_image_model:
            return []
        data, masks = (x.numpy() for x in self.sample(16, tf.constant([0, 0])))
        grid = visualize.image_grid([data[:8], data[8:], masks[:8], masks[8:]])
        return [EpochImage(grid, tag="generated_data_and_masks", file=f"samples_epoch_{epoch:04d}.png", step=epoch)]

    def serving_signatures(self) -> dict[str, signatures.ServingSignature]:
        """Stochastic imputation signatures and ``sample`` (a generated example and mask per seed)."""
        return {**super().serving_signatures(),
                **signatures.stochastic_impute_signatures(self.impute_batch, self.data_shape),
                "sample": signatures.sample_signature(
                    self.sample, ["images", "masks"],
                    "model.sample(1, (seed, 0)) per seed: example and mask (1 = observed)", self.data_shape)}

    # -- inference ------------------------------------------------------------------------------

    def impute_batch(self, images: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """One stochastic imputation; the imputer noise ω is drawn from ``seed``."""
        noise = tf.random.stateless_uniform(tf.shape(images), seed)
        return self.complete(images * mask, mask, noise)

    def sample(self, count: int | tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """``count`` generated examples and masks (1 = observed), [count, *data_shape] each, from
        latents drawn by ``seed``."""
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2)
        return (self.generate(self.draw_latents(count, seeds[0])),
                self.generate_masks(self.draw_latents(count, seeds[1])))

    def sample_grid(self, side: int = 8) -> np.ndarray:
        """side x side generated images from fixed latents (the same every call); images only."""
        if not self.is_image_model:
            raise ValueError(f"the sample grid shows images; {self.name} models vectors of "
                             f"{self.num_values} values")
        return visualize.square_grid(self.sample(side * side, tf.constant([0, 0]))[0].numpy())

    def interpolate(self, start: tf.Tensor, end: tf.Tensor, steps: int = 9) -> tf.Tensor:
        """``steps`` examples along the straight line from latent ``start`` to ``end``."""
        return self.generate(gan.straight_line(start, end, steps))
