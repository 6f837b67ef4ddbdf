"""Variational autoencoder for incomplete data (seed ``002_*.txt`` §1; Kingma & Welling 2013).

Works on the data's shape ``data_shape``: images (H, W, C) or vectors (D,), over
D = prod(data_shape) values in [0, 1] (D = H·W·C for images; 784 for MNIST digits;
tables are min-max scaled to [0, 1] by the data layer). Both networks are fully
connected over the D values flattened, so nothing depends on the layout.

Encoder q(z | x_o, m) = N(μ, diag σ²): an MLP on the observed values (missing
ones zeroed) concatenated with the mask (2·D inputs), so that a missing pixel and
a black one differ. Decoder p(x | z): D independent Bernoulli values with
probabilities σ(decoder(z)). Prior p(z) = N(0, I).

Training maximises the ELBO of the OBSERVED pixels (seed Q1.10 with the
likelihood restricted to x_o, as in MIWAE / partial VAEs):

    ELBO(x_o) = E_q[Σ_i m_i log p(x_i | z)] - KL(q(z | x_o, m) || N(0, I)),

one reparameterised sample z = μ + σ ⊙ ε (seed Q1.11), the KL in closed form
(seed Q1.5b): KL = ½ Σ_l (σ_l² + μ_l² - 1 - log σ_l²). Missing pixels never
enter the loss (their values are zero and their terms are multiplied by m = 0).
On grey-level pixels the "Bernoulli" term is the usual cross-entropy with soft
targets; on binarised digits it is the exact log-likelihood.

Imputation (``impute_mode``):

* ``importance`` (default, MIWAE of Mattei & Frellsen 2019): K draws
  z_k ~ q(z | x_o, m), self-normalised weights w_k ∝ p(x_o | z_k) p(z_k) /
  q(z_k | x_o, m), missing pixels = Σ_k w_k σ(decoder(z_k)) — an estimate of
  E[x_m | x_o] under the model, the RMSE-optimal fill. Cost: K decoder passes.
* ``pseudo_gibbs`` (Rezende et al. 2014): start from the observed pixels,
  then repeat z ~ q(z | x̂), x̂_m = σ(decoder(z)) with observed pixels
  re-imposed; after the first step the completed digit is encoded as fully
  observed. Returns the last step's fill (one chain, hence noisier). Cost: T
  encoder and decoder passes. For a VAE trained on incomplete digits a
  completed digit is unlike anything its encoder saw, and the chain drifts
  (on MNIST I.M. 0.6, 10 steps impute worse than 1); prefer ``importance``.

Figures quoted for MNIST are for D = 784; for data_shape (28, 28, 1) the layers,
variable shapes and initialiser seeds are those of the versions that knew MNIST
only, so their checkpoints load and impute bit-identically.
"""

from __future__ import annotations

from typing import Annotated

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfimpute import precision, signatures, visualize
from tfimpute.models.base import keep_observed
from tfimpute.models.capabilities import EpochImage, FrontierPoint
from tfimpute.models.generative import (GenerativeImputer, LearningRateSetting, MomentumSetting,
                                        OptimizerSetting, SeedSetting)
from tfimpute.models.registry import Setting, register_model
from tfimpute.models.replicas import StepDraws, replica_mean

IMPUTE_MODES = ("importance", "pseudo_gibbs")


def gaussian_kl(mean: tf.Tensor, log_variance: tf.Tensor) -> tf.Tensor:
    """KL(N(μ, σ²) || N(0, 1)) summed over the last axis (seed Q1.5b, Q1.10)."""
    return 0.5 * tf.reduce_sum(tf.exp(log_variance) + tf.square(mean) - 1.0 - log_variance, axis=-1)


def bernoulli_log_likelihood(images: tf.Tensor, logits: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Σ_i m_i [x_i log p_i + (1 - x_i) log(1 - p_i)], p = σ(logits); inputs flat [..., D]."""
    return -tf.reduce_sum(
        mask * tf.nn.sigmoid_cross_entropy_with_logits(labels=images, logits=logits), axis=-1)


def _fold_in(seed: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
    return tf.random.experimental.stateless_fold_in(seed, index)


def _mlp(units: list[int], output_units: int, input_units: int, seed: int, name: str) -> keras.Sequential:
    layers = [keras.layers.Dense(u, activation="relu", name=f"{name}_hidden_{i}",
                                 kernel_initializer=keras.initializers.GlorotUniform(seed=seed + i))
              for i, u in enumerate(units)]
    layers.append(keras.layers.Dense(
        output_units, name=f"{name}_output",
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed + len(units))))
    network = keras.Sequential(layers, name=name)
    network.build((None, input_units))
    return network


@register_model("vae", summary="VAE of seed 002 §1, ELBO over the observed pixels")
class VAE(GenerativeImputer):
    """VAE with a Bernoulli decoder, trained on the observed values of incomplete examples.

    Images [H, W, C] or vectors [D] (``data_shape``); encoder and decoder are MLPs over the
    D = prod(data_shape) values.

    ``vae_impute_mode``: "importance" (K = ``vae_impute_samples`` draws) or "pseudo_gibbs"
    (T = ``vae_gibbs_steps`` iterations); see the module docstring.
    """

    loss_name = "neg_elbo"
    loss_title = "negative ELBO (nats per digit)"
    renamed_settings = {"hidden_units": "vae_hidden_units", "impute_mode": "vae_impute_mode",
                        "impute_samples": "vae_impute_samples", "gibbs_steps": "vae_gibbs_steps"}
    tiny_settings = {"latent_dim": 2, "vae_hidden_units": [8], "vae_impute_samples": 3}
    inference_settings = ("vae_impute_mode", "vae_impute_samples", "vae_gibbs_steps")
    # K importance samples: many estimate the posterior mean E[x_m | x_o] (lowest RMSE); K = 1 is a
    # single draw's decoder mean (a sharper, less averaged digit).
    frontier_points = tuple(FrontierPoint(f"K={samples}", {"vae_impute_mode": "importance",
                                                             "vae_impute_samples": samples})
                            for samples in (100, 10, 3, 1))

    def __init__(self,
                 latent_dim: Annotated[int, Setting("VAE latent dimensions (seed: 20; 2 for the manifold "
                                                    "plot).")] = 20,
                 vae_hidden_units: Annotated[tuple[int, ...] | list[int], Setting(
                     "VAE encoder hidden layer widths (the decoder mirrors them).")] = (512, 512),
                 vae_impute_mode: Annotated[str, Setting(
                     "VAE imputation: self-normalised importance sampling (MIWAE) or pseudo-Gibbs.",
                     choices=IMPUTE_MODES)] = "importance",
                 vae_impute_samples: Annotated[int, Setting("VAE importance samples per digit for "
                                                            "imputation.")] = 100,
                 vae_gibbs_steps: Annotated[int, Setting("VAE pseudo-Gibbs iterations for imputation.")] = 10,
                 optimizer: OptimizerSetting = "adam",
                 learning_rate: LearningRateSetting = 1e-3,
                 momentum: MomentumSetting = 0.0,
                 seed: SeedSetting = 0, **kwargs):
        super().__init__(**kwargs)
        hidden_units = [int(u) for u in vae_hidden_units]
        impute_mode, impute_samples, gibbs_steps = vae_impute_mode, vae_impute_samples, vae_gibbs_steps
        if latent_dim < 1 or not hidden_units or min(hidden_units) < 1:
            raise ValueError(f"latent_dim and hidden_units must be >= 1, got {latent_dim}, {hidden_units}")
        if impute_mode not in IMPUTE_MODES:
            raise ValueError(f"impute_mode must be one of {IMPUTE_MODES}, got {impute_mode!r}")
        if impute_samples < 1 or gibbs_steps < 1:
            raise ValueError(
                f"impute_samples and gibbs_steps must be >= 1, got {impute_samples}, {gibbs_steps}")
        self.latent_dim = latent_dim
        self.hidden_units = hidden_units
        self.impute_mode = impute_mode
        self.impute_samples = impute_samples
        self.gibbs_steps = gibbs_steps
        self.set_optimizer_settings(optimizer, learning_rate, momentum)
        self.seed = seed
        # D = prod(data_shape) values per example (784 for MNIST: the layers and seeds of old checkpoints).
        self.num_values = int(np.prod(self.data_shape))
        self.encoder = _mlp(hidden_units, 2 * latent_dim, 2 * self.num_values, seed, "encoder")
        self.decoder = _mlp(hidden_units[::-1], self.num_values, latent_dim, seed + 100, "decoder")
        self.built = True

    def get_config(self) -> dict:
        return {**super().get_config(), "latent_dim": self.latent_dim, "vae_hidden_units": list(self.hidden_units),
                "vae_impute_mode": self.impute_mode, "vae_impute_samples": self.impute_samples,
                "vae_gibbs_steps": self.gibbs_steps, "optimizer": self.optimizer_name,
                "learning_rate": self.learning_rate, "momentum": self.momentum, "seed": self.seed}

    # The model's parts, as exported signatures use them.

    def flat(self, values: tf.Tensor) -> tf.Tensor:
        """[B, *data_shape] -> [B, D]."""
        return tf.reshape(values, [-1, self.num_values])

    def encode(self, images: tf.Tensor, mask: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Mean and log-variance of q(z | x_o, m), each [B, latent_dim]; missing values are ignored."""
        flat_mask = self.flat(mask)
        flat = self.flat(images) * flat_mask
        outputs = precision.to_float32(self.encoder(tf.concat([flat, flat_mask], axis=-1)))
        mean, log_variance = tf.split(outputs, 2, axis=-1)
        return mean, log_variance

    def decode_logits(self, z: tf.Tensor) -> tf.Tensor:
        """Bernoulli logits of p(x | z), flat [B, D], float32."""
        return precision.to_float32(self.decoder(z))

    def decode(self, z: tf.Tensor) -> tf.Tensor:
        """Value probabilities E[x | z] = σ(decoder(z)), shaped like the data: [B, *data_shape]."""
        return tf.reshape(tf.sigmoid(self.decode_logits(z)), [-1, *self.data_shape])

    def sample(self, num: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """Ancestral sampling (seed Q1.2): z ~ N(0, I), shown as the Bernoulli means E[x | z]."""
        z = tf.random.stateless_normal(tf.stack([num, self.latent_dim]), seed)
        return self.decode(z)

    def neg_elbo_terms(self, images: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor) -> dict[str, tf.Tensor]:
        """Per-digit -ELBO of the observed pixels and its parts (nats), one reparameterised sample
        drawn from ``seed``."""
        epsilon = tf.random.stateless_normal(tf.stack([tf.shape(images)[0], self.latent_dim]), seed)
        return self.neg_elbo_terms_given_noise(images, mask, epsilon)

    def neg_elbo_terms_given_noise(self, images: tf.Tensor, mask: tf.Tensor,
                                   epsilon: tf.Tensor) -> dict[str, tf.Tensor]:
        """:meth:`neg_elbo_terms` with the N(0, I) draws ``epsilon`` [B, latent_dim] given."""
        mean, log_variance = self.encode(images, mask)
        z = mean + tf.exp(0.5 * log_variance) * epsilon
        reconstruction = bernoulli_log_likelihood(
            self.flat(images), self.decode_logits(z), self.flat(mask))
        kl = gaussian_kl(mean, log_variance)
        return {"neg_elbo": kl - reconstruction, "reconstruction": -reconstruction, "kl": kl}

    def train_step(self, data):
        observed, mask = data[0], data[1]
        draws = StepDraws(self.seed, self.optimizer.iterations, tf.shape(observed)[0])
        epsilon = draws.normal([self.latent_dim])
        with tf.GradientTape() as tape:
            terms = self.neg_elbo_terms_given_noise(observed, mask, epsilon)
            loss = replica_mean(terms["neg_elbo"])  # gradients summed over replicas: the batch mean's
            scaled_loss = self.optimizer.scale_loss(loss)  # float16's loss scale (tfimpute.precision)
        gradients = tape.gradient(scaled_loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        return {name: loss if name == "neg_elbo" else replica_mean(value) for name, value in terms.items()}

    # Imputation.

    def importance_impute(self, images: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor,
                          num_samples: int) -> tf.Tensor:
        """Self-normalised importance estimate of E[x_m | x_o] (MIWAE), streamed over the K draws."""
        flat, flat_mask = self.flat(images), self.flat(mask)
        mean, log_variance = self.encode(images, mask)
        std = tf.exp(0.5 * log_variance)
        batch = tf.shape(mean)[0]
        max_log_weight = tf.fill([batch], -np.inf)
        weight_sum = tf.zeros([batch])
        weighted_fill = tf.zeros_like(flat)
        for k in tf.range(num_samples):
            epsilon = tf.random.stateless_normal(tf.shape(mean), _fold_in(seed, k))
            z = mean + std * epsilon
            logits = self.decode_logits(z)
            # log p(x_o | z) + log p(z) - log q(z | x_o); constants cancel in the normalisation.
            log_weight = (bernoulli_log_likelihood(flat * flat_mask, logits, flat_mask)
                          - 0.5 * tf.reduce_sum(tf.square(z), axis=-1)
                          + 0.5 * tf.reduce_sum(tf.square(epsilon) + log_variance, axis=-1))
            new_max = tf.maximum(max_log_weight, log_weight)
            rescale = tf.exp(max_log_weight - new_max)
            weight = tf.exp(log_weight - new_max)
            weight_sum = weight_sum * rescale + weight
            weighted_fill = weighted_fill * rescale[:, None] + weight[:, None] * tf.sigmoid(logits)
            max_log_weight = new_max
        fill = weighted_fill / weight_sum[:, None]
        return keep_observed(images, mask, tf.reshape(fill, tf.shape(images)))

    def pseudo_gibbs_impute(self, images: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor,
                            steps: int) -> tf.Tensor:
        """T steps of z ~ q(z | x̂), x̂_m = E[x_m | z], observed pixels re-imposed."""
        completed = images * mask
        encoder_mask = mask
        for t in tf.range(steps):
            mean, log_variance = self.encode(completed, encoder_mask)
            epsilon = tf.random.stateless_normal(tf.shape(mean), _fold_in(seed, t))
            completed = keep_observed(images, mask, self.decode(mean + tf.exp(0.5 * log_variance) * epsilon))
            encoder_mask = tf.ones_like(mask)
        return completed

    def impute_batch(self, images: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor,
                     mode: str | None = None) -> tf.Tensor:
        mode = mode or self.impute_mode
        if mode == "importance":
            return self.importance_impute(images, mask, seed, self.impute_samples)
        if mode == "pseudo_gibbs":
            return self.pseudo_gibbs_impute(images, mask, seed, self.gibbs_steps)
        raise ValueError(f"impute mode must be one of {IMPUTE_MODES}, got {mode!r}")

    # Evaluation (NumPy in, NumPy out).

    def neg_elbo(self, images: np.ndarray, mask: np.ndarray | None = None, *, seed: int = 0,
                 batch_size: int = 1000) -> np.ndarray:
        """Per-example negative ELBO in nats over the observed values (all values when ``mask`` is None)."""
        if getattr(self, "_neg_elbo_fn", None) is None:
            spec = tf.TensorSpec([None, *self.data_shape], tf.float32)
            self._neg_elbo_fn = tf.function(
                lambda x, m, s: self.neg_elbo_terms(x, m, s)["neg_elbo"],
                input_signature=[spec, spec, tf.TensorSpec([2], tf.int32)])
        images = np.asarray(images, np.float32)
        mask = np.ones_like(images) if mask is None else np.asarray(mask, np.float32)
        values = [self._neg_elbo_fn(images[i:i + batch_size], mask[i:i + batch_size],
                                             tf.constant([seed, i], tf.int32)).numpy()
                  for i in range(0, len(images), batch_size)]
        return np.concatenate(values)

    def validation_losses(self, images: np.ndarray, mask: np.ndarray) -> dict[str, float]:
        """-ELBO per digit on complete held-out digits and on their observed pixels only."""
        return {"neg_elbo": float(self.neg_elbo(images).mean()),
                "neg_elbo_observed_pixels": float(self.neg_elbo(images * mask, mask).mean())}

    def manifold_grid(self, points_per_side: int = 20) -> np.ndarray:
        """Seed Q1.15 (2-D latent, images only): E[x | z] over a grid of z through the inverse normal CDF."""
        if not self.is_image_model:
            raise ValueError(f"the manifold grid shows images; {self.name} models vectors of "
                             f"{self.num_values} values")
        quantiles = tf.linspace(0.5 / points_per_side, 1.0 - 0.5 / points_per_side, points_per_side)
        values = tfp.distributions.Normal(0.0, 1.0).quantile(quantiles)
        z1, z2 = tf.meshgrid(values, values[::-1])
        images = self.decode(tf.stack([tf.reshape(z1, [-1]), tf.reshape(z2, [-1])], axis=-1)).numpy()
        n = points_per_side
        return visualize.image_grid([images[i * n:(i + 1) * n] for i in range(n)], padding=0)

    def epoch_images(self, epoch: int, epochs: int) -> list[EpochImage]:
        """The sample grids, and with a 2-D latent the manifold (``manifold.png``, every epoch);
        none for vectors (no picture of a table row)."""
        if not self.is_image_model:
            return []
        images = super().epoch_images(epoch, epochs)
        if self.latent_dim == 2:
            images.append(EpochImage(self.manifold_grid(), file="manifold.png", scale=2))
        return images

    def serving_signatures(self) -> dict[str, signatures.ServingSignature]:
        """Stochastic imputation signatures, ``encode`` (q(z | x_o, m)) and ``decode`` (E[x | z])."""

        def encode(images: tf.Tensor, mask: tf.Tensor) -> dict[str, tf.Tensor]:
            images, mask = signatures.checked_images_and_mask(images, mask)
            mean, log_variance = self.encode(images, mask)
            return {"z_mean": mean, "z_log_variance": log_variance}

        def decode(z: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"images": self.decode(tf.debugging.check_numerics(z, "z: contains NaN or infinite values"))}

        z_spec = {"z": tf.TensorSpec([None, self.latent_dim], tf.float32, name="z")}
        return {**super().serving_signatures(),
                **signatures.stochastic_impute_signatures(self.impute_batch, self.data_shape),
                "encode": signatures.ServingSignature(
                    signatures.image_inputs(self.data_shape), encode,
                    f"mean and log-variance of q(z | x_o, m), [batch, {self.latent_dim}] each"),
                "decode": signatures.ServingSignature(z_spec, decode, "pixel probabilities E[x | z]")}

