"""RealNVP normalizing flow over images (seed ``002_*.txt`` §3; Dinh et al. 2016).

Images only (``accepts_vectors = False``: the checkerboard is spatial), of any shape
H x W x C, flattened to D = H·W·C values; MNIST digits are 28 x 28 x 1, D = 784, and
the figures below quoted for MNIST are for D = 784. For data_shape (28, 28, 1) the
permutation, variables and outputs are those of the versions that knew MNIST only, so
their checkpoints load and give bit-identical results.

Density: x ∈ [0, 1]^D is the image of z ~ N(0, I) under

    z --(affine couplings)--> (checkerboard order) --unpermute--> y --sigmoid, rescale--> x

as one ``tfp.distributions.TransformedDistribution``. Each coupling is a
``tfp.bijectors.RealNVP`` whose shift and log-scale come from a Keras
:class:`CouplingNetwork` (an MLP) on the other half of the values; the halves
are the two colours of a checkerboard over (row, column, channel) — an entry's colour
is the parity of row + column + channel, so with one channel it is the usual spatial
checkerboard, and neighbouring channels of a pixel fall in different halves (a
``tfp.bijectors.Permute`` puts the colours first and second). The halves alternate from
one coupling to the next (``num_masked`` = +A / -B, A = ⌈D/2⌉ the first colour's size,
B = D - A; +392 / -392 on MNIST). When D is odd (H, W and C all odd) the halves differ by
one entry: A = B + 1, and each coupling network maps its conditioning half (A or B
entries) to the shift and log-scale of the other (B or A); nothing is padded. The
coupling networks are Keras layers owned by the model, so
checkpoints and SavedModels see every variable. The last layer of each network
starts at zero, so an untrained flow is the identity in logit space.

Pre-processing (seed Q3.4): uniform dequantisation x = (k + u) / 256, k the
8-bit level and u ~ U(0, 1), then the logit transform y = logit(α + (1 - 2α) x),
whose log-determinant is part of the bijector chain. Loss: negative
log-likelihood in bits per dimension (seed Q3.8),

    bpd = -log p(x) / (D ln 2) + 8,

an upper bound on the bits per pixel of the discrete digit (the +8 turns the
density on [0, 1] into one on [0, 256)).

Imputation (:meth:`RealNVP.map_impute`): gradient ascent on the log-density of
the completed digit in logit space, over the missing coordinates only (the
observed ones fixed at their bins' centres), with Adam-normalised steps from a
flat start (the digit's mean observed intensity). It returns the conditional
mode (MAP) of x_m given x_o, not a sample. Cost: ``impute_steps`` forward and
backward passes of the flow per digit (100 steps ≈ the cost of 100 digits of
training).

Incomplete training data (EM-style, in the spirit of MCFlow): before each
update the batch's missing pixels are filled by ``train_fill_steps`` steps of
the same MAP ascent under the current model (no gradient through the fill),
and the update maximises the likelihood of the completed digits. Only observed
pixels and the model itself determine the fill. The fill is a mode, not a
posterior sample, so the likelihood of the completed digits flatters the
model; it costs (1 + ``train_fill_steps``) times a complete-data step. With
complete data (``--complete_training_data``) no fill runs.

Training cost: :class:`OnePassRealNVP` lets each coupling evaluate its network
once per ``log_prob`` (the stock bijector evaluates it twice: for the inverse
and again for the log-determinant).
"""

from __future__ import annotations

import math
from typing import Annotated

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.internal import cache_util

from tfimpute import precision, signatures
from tfimpute.data import MNIST_SHAPE
from tfimpute.models.base import keep_observed
from tfimpute.models.generative import (GenerativeImputer, LearningRateSetting, MomentumSetting,
                                        OptimizerSetting, SeedSetting)
from tfimpute.models.registry import Setting, register_model
from tfimpute.models.replicas import StepDraws, replica_mean

tfb, tfd = tfp.bijectors, tfp.distributions

LEVELS = 256


def checkerboard_permutation(shape: tuple[int, int, int] = MNIST_SHAPE) -> np.ndarray:
    """Indices into the flattened [H, W, C] image of one checkerboard colour ((row + column +
    channel) even), in increasing order, followed by those of the other colour.

    The first colour has A = ⌈D/2⌉ entries (D = H·W·C), the second D - A. With one channel
    this is the spatial checkerboard ((row + column) even first; on 28 x 28 x 1 the
    permutation of the versions that knew MNIST only).
    """
    height, width, channels = (int(size) for size in shape)
    rows, columns, channel = np.unravel_index(np.arange(height * width * channels), (height, width, channels))
    even = (rows + columns + channel) % 2 == 0
    return np.concatenate([np.flatnonzero(even), np.flatnonzero(~even)]).astype(np.int32)


class CouplingNetwork(keras.layers.Layer):
    """Shift t and log-scale s of one affine coupling from the conditioning half (Dinh et al., eq. 7).

    An MLP with ReLU hidden layers; s = scale ⊙ tanh(·) with a learnt per-unit
    scale (RealNVP's stabilised log-scale). The output layer starts at zero.

    ``conditioning_units`` inputs (the half that stays), ``transformed_units`` shifts and
    log-scales (the other half); they differ by one when D is odd (392 and 392 on MNIST).
    """

    def __init__(self, hidden_units: int, hidden_layers: int, conditioning_units: int,
                 transformed_units: int, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.hidden_layers = hidden_layers
        width = conditioning_units
        for i in range(hidden_layers):
            layer = keras.layers.Dense(hidden_units, activation="relu", name=f"hidden_{i}",
                                       kernel_initializer=keras.initializers.GlorotUniform(seed=seed + i))
            layer.build((None, width))
            width = hidden_units
            setattr(self, f"hidden_{i}", layer)  # attributes, not a list: see RealNVP.__init__
        self.output_layer = keras.layers.Dense(2 * transformed_units, kernel_initializer="zeros",
                                               name="shift_and_log_scale")
        self.output_layer.build((None, width))
        self.log_scale_factor = self.add_weight(shape=(transformed_units,), initializer="ones",
                                                name="log_scale_factor")
        self.built = True

    def call(self, conditioning: tf.Tensor) -> tf.Tensor:
        """The MLP's raw output [B, 2 · transformed_units], in the dtype policy's compute dtype."""
        hidden = conditioning
        for i in range(self.hidden_layers):
            hidden = getattr(self, f"hidden_{i}")(hidden)
        return self.output_layer(hidden)

    def shift_and_log_scale(self, conditioning: tf.Tensor, output_units: int) -> tuple[tf.Tensor, tf.Tensor]:
        """The ``shift_and_log_scale_fn`` of ``tfp.bijectors.RealNVP``: float32 under every dtype
        policy (the flow and its log-determinant stay float32; the scale is applied outside the
        layer's autocast, to the float32 variable)."""
        shift, raw_log_scale = tf.split(precision.to_float32(self(conditioning)), 2, axis=-1)
        return shift, self.log_scale_factor * tf.tanh(raw_log_scale)


class OnePassRealNVP(tfb.RealNVP):
    """``tfb.RealNVP`` that computes its transform and log-determinant from ONE network evaluation.

    Uses TFP's ``BijectorCacheWithGreedyAttrs`` (as ``tfb.FFJORD`` does): the
    inverse (forward) call stores the log-determinant in the bijector cache,
    where ``inverse_log_det_jacobian`` finds it for the same tensor. The
    masking follows ``tfb.RealNVP`` exactly.
    """

    _cache = cache_util.BijectorCacheWithGreedyAttrs(
        forward_name="_augmented_forward", inverse_name="_augmented_inverse")

    def _split(self, value: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        self._cache_input_depth(value)
        conditioning, transformed = value[..., :self._masked_size], value[..., self._masked_size:]
        return (transformed, conditioning) if self._reverse_mask else (conditioning, transformed)

    def _merge(self, conditioning: tf.Tensor, transformed: tf.Tensor) -> tf.Tensor:
        parts = [transformed, conditioning] if self._reverse_mask else [conditioning, transformed]
        return tf.concat(parts, axis=-1)

    def _augmented_forward(self, x):
        conditioning, transformed = self._split(x)
        inner = self._bijector_fn(conditioning, self._bijector_input_units())
        fldj = inner.forward_log_det_jacobian(transformed, event_ndims=1)
        return self._merge(conditioning, inner.forward(transformed)), {"ildj": -fldj}

    def _augmented_inverse(self, y):
        conditioning, transformed = self._split(y)
        inner = self._bijector_fn(conditioning, self._bijector_input_units())
        ildj = inner.inverse_log_det_jacobian(transformed, event_ndims=1)
        return self._merge(conditioning, inner.inverse(transformed)), {"ildj": ildj}

    def _forward(self, x):
        return self._augmented_forward(x)[0]

    def _inverse(self, y):
        return self._augmented_inverse(y)[0]

    def _forward_log_det_jacobian(self, x):
        attributes = self._cache.forward_attributes(x)
        if "ildj" not in attributes:
            attributes.update(self._augmented_forward(x)[1])
        return -attributes["ildj"]

    def _inverse_log_det_jacobian(self, y):
        attributes = self._cache.inverse_attributes(y)
        if "ildj" not in attributes:
            attributes.update(self._augmented_inverse(y)[1])
        return attributes["ildj"]


@register_model("realnvp", summary="RealNVP flow of seed 002 §3 (TFP bijectors), MAP imputation")
class RealNVP(GenerativeImputer):
    """RealNVP density model of images [H, W, C] (D = H·W·C values; MNIST digits: D = 784);
    imputes by conditional MAP (see the module docstring). Refuses vectors.

    ``logit_alpha``: α of the logit pre-transform (not a flag).
    """

    accepts_vectors = False  # the checkerboard is spatial

    loss_name = "bits_per_dim"
    loss_title = "negative log-likelihood (bits per dimension)"
    renamed_settings = {"hidden_units": "coupling_hidden_units", "hidden_layers": "coupling_hidden_layers",
                        "impute_steps": "flow_impute_steps", "impute_step_size": "flow_impute_step_size",
                        "train_fill_steps": "flow_train_fill_steps"}
    tiny_settings = {"coupling_layers": 2, "coupling_hidden_units": 8, "coupling_hidden_layers": 1,
                     "flow_impute_steps": 1, "flow_train_fill_steps": 2}

    def __init__(self,
                 coupling_layers: Annotated[int, Setting("RealNVP affine coupling layers.")] = 8,
                 coupling_hidden_units: Annotated[int, Setting(
                     "Width of the hidden layers of each RealNVP coupling network.")] = 1024,
                 coupling_hidden_layers: Annotated[int, Setting(
                     "Hidden layers of each RealNVP coupling network.")] = 2,
                 flow_impute_steps: Annotated[int, Setting(
                     "RealNVP imputation: gradient-ascent steps on log p over the missing pixels.")] = 100,
                 flow_impute_step_size: Annotated[float, Setting(
                     "RealNVP imputation: Adam step size (logit units).")] = 0.05,
                 flow_train_fill_steps: Annotated[int, Setting(
                     "RealNVP on incomplete data: ascent steps that fill a batch's missing pixels with the "
                     "model's own MAP imputation before each update.")] = 10,
                 logit_alpha: float = 1e-5,
                 optimizer: OptimizerSetting = "adam",
                 learning_rate: LearningRateSetting = 1e-3,
                 momentum: MomentumSetting = 0.0,
                 seed: SeedSetting = 0, **kwargs):
        super().__init__(**kwargs)
        hidden_units, hidden_layers = coupling_hidden_units, coupling_hidden_layers
        impute_steps, impute_step_size = flow_impute_steps, flow_impute_step_size
        train_fill_steps = flow_train_fill_steps
        if coupling_layers < 1 or hidden_units < 1 or hidden_layers < 1:
            raise ValueError("coupling_layers, hidden_units and hidden_layers must be >= 1, got "
                             f"{coupling_layers}, {hidden_units}, {hidden_layers}")
        if impute_steps < 0 or train_fill_steps < 0 or impute_step_size <= 0:
            raise ValueError("impute_steps and train_fill_steps must be >= 0 and impute_step_size > 0, got "
                             f"{impute_steps}, {train_fill_steps}, {impute_step_size}")
        if not 0.0 < logit_alpha < 0.5:
            raise ValueError(f"logit_alpha must be in (0, 0.5), got {logit_alpha}")
        # D values per image, split into the checkerboard's colours: A = ⌈D/2⌉ first, B = D - A.
        self.num_values = int(np.prod(self.data_shape))
        if self.num_values < 2:
            raise ValueError(f"RealNVP needs images of at least 2 values to split into two halves, "
                             f"got data_shape {list(self.data_shape)}")
        self.first_half = (self.num_values + 1) // 2
        second_half = self.num_values - self.first_half
        self.coupling_layers = coupling_layers
        self.hidden_units = hidden_units
        self.hidden_layers = hidden_layers
        self.impute_steps = impute_steps
        self.impute_step_size = impute_step_size
        self.train_fill_steps = train_fill_steps
        self.logit_alpha = logit_alpha
        self.set_optimizer_settings(optimizer, learning_rate, momentum)
        self.seed = seed
        # One attribute per network: Keras 3 does not make layers held in a Python list
        # dependencies of tf.train.Checkpoint, so a list would leave them out of checkpoints.
        # Even couplings: the first colour (A values) conditions the second (B); odd ones the reverse.
        for i in range(coupling_layers):
            conditioning, transformed = ((self.first_half, second_half) if i % 2 == 0
                                         else (second_half, self.first_half))
            setattr(self, f"coupling_{i}",
                    CouplingNetwork(hidden_units, hidden_layers, conditioning, transformed,
                                    seed=seed + 10 * i, name=f"coupling_{i}"))
        self.permutation = checkerboard_permutation(self.data_shape)
        self.built = True

    @property
    def coupling_networks(self) -> list[CouplingNetwork]:
        return [getattr(self, f"coupling_{i}") for i in range(self.coupling_layers)]

    def get_config(self) -> dict:
        return {**super().get_config(), "coupling_layers": self.coupling_layers,
                "coupling_hidden_units": self.hidden_units, "coupling_hidden_layers": self.hidden_layers,
                "flow_impute_steps": self.impute_steps, "flow_impute_step_size": self.impute_step_size,
                "flow_train_fill_steps": self.train_fill_steps, "logit_alpha": self.logit_alpha,
                "optimizer": self.optimizer_name, "learning_rate": self.learning_rate,
                "momentum": self.momentum, "seed": self.seed}

    def serving_signatures(self) -> dict[str, signatures.ServingSignature]:
        """``log_prob`` of complete images (its MAP imputation is deterministic: generic ``serving_default``)."""

        def log_prob(images: tf.Tensor) -> dict[str, tf.Tensor]:
            return {"log_prob": self.log_prob(signatures.checked_images(images))}

        images_only = {"images": tf.TensorSpec([None, *self.data_shape], tf.float32, name="images")}
        return {**super().serving_signatures(),
                "log_prob": signatures.ServingSignature(images_only, log_prob,
                                                        "log-density (nats) of each digit, [batch]")}

    # The distribution. Bijectors are built per call (cheap Python objects holding no variables).

    def flow(self) -> tfb.Bijector:
        """z -> y: the couplings, then the checkerboard order undone (y in logit space, pixel order).

        Every coupling splits at A = ⌈D/2⌉: ``num_masked`` = +A (the first A values condition)
        and -(D - A) (the last D - A condition) alternate.
        """
        second_half = self.num_values - self.first_half
        couplings = [OnePassRealNVP(num_masked=self.first_half if i % 2 == 0 else -second_half,
                                    shift_and_log_scale_fn=network.shift_and_log_scale)
                     for i, network in enumerate(self.coupling_networks)]
        return tfb.Chain([tfb.Invert(tfb.Permute(self.permutation)), *couplings])

    def logit_transform(self) -> tfb.Bijector:
        """y -> x = (σ(y) - α) / (1 - 2α), the inverse of the logit pre-transform."""
        alpha = self.logit_alpha
        return tfb.Chain([tfb.Scale(1.0 / (1.0 - 2.0 * alpha)), tfb.Shift(-alpha), tfb.Sigmoid()])

    def base_distribution(self) -> tfd.Distribution:
        return tfd.Sample(tfd.Normal(0.0, 1.0), sample_shape=[self.num_values])

    def logit_distribution(self) -> tfd.Distribution:
        """Density of y = logit(α + (1 - 2α) x)."""
        return tfd.TransformedDistribution(self.base_distribution(), self.flow())

    def distribution(self) -> tfd.Distribution:
        """Density of the (dequantised) image x ∈ [0, 1]^D, flattened."""
        return tfd.TransformedDistribution(self.base_distribution(),
                                           tfb.Chain([self.logit_transform(), self.flow()]))

    # The model's parts, as exported signatures use them.

    def log_prob(self, images: tf.Tensor) -> tf.Tensor:
        """Log-density (nats) of continuous images [B, H, W, C] in [0, 1]; one value per image."""
        return self.distribution().log_prob(tf.reshape(images, [-1, self.num_values]))

    def sample(self, num: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """``num`` images from the flow, [num, H, W, C] clipped to [0, 1]."""
        samples = self.distribution().sample(num, seed=seed)
        return tf.reshape(tf.clip_by_value(samples, 0.0, 1.0), [-1, *self.data_shape])

    def dequantize(self, images: tf.Tensor, noise: tf.Tensor) -> tf.Tensor:
        """(k + u) / 256 with k = round(255 x) the 8-bit level and u = ``noise`` ~ U(0, 1) (seed Q3.4)."""
        levels = tf.round(images * (LEVELS - 1))
        return (levels + noise) / LEVELS

    def bits_per_dim_batch(self, images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """Per-image negative log-likelihood in bits/dim (D dims) of 8-bit images (one dequantisation draw
        from ``seed``)."""
        return self.bits_per_dim_given_noise(images, tf.random.stateless_uniform(tf.shape(images), seed))

    def bits_per_dim_given_noise(self, images: tf.Tensor, noise: tf.Tensor) -> tf.Tensor:
        """:meth:`bits_per_dim_batch` with the dequantisation noise (shaped like ``images``) given."""
        log_prob = self.log_prob(self.dequantize(images, noise))
        return -log_prob / (self.num_values * math.log(2.0)) + math.log2(LEVELS)

    # Imputation.

    def map_impute(self, images: tf.Tensor, mask: tf.Tensor, steps: int | tf.Tensor) -> tf.Tensor:
        """Conditional MAP of the missing pixels: Adam-normalised ascent on log p(y) over y_m."""
        alpha = self.logit_alpha
        shape = tf.shape(images)
        flat_mask = tf.reshape(mask, [-1, self.num_values])
        flat = tf.reshape(images, [-1, self.num_values]) * flat_mask
        observed_fraction = tf.reduce_sum(flat, axis=-1, keepdims=True) / tf.maximum(
            tf.reduce_sum(flat_mask, axis=-1, keepdims=True), 1.0)
        start = tf.where(flat_mask > 0.5, (tf.round(flat * (LEVELS - 1)) + 0.5) / LEVELS,
                         tf.broadcast_to(observed_fraction, tf.shape(flat)))
        squeezed = alpha + (1 - 2 * alpha) * start
        logits = tf.math.log(squeezed) - tf.math.log1p(-squeezed)
        missing = 1.0 - flat_mask
        distribution = self.logit_distribution()
        first_moment = tf.zeros_like(logits)
        second_moment = tf.zeros_like(logits)
        beta1, beta2 = 0.9, 0.999
        for t in tf.range(1, steps + 1):
            with tf.GradientTape() as tape:
                tape.watch(logits)
                log_prob = tf.reduce_sum(distribution.log_prob(logits))
            gradient = tape.gradient(log_prob, logits) * missing
            first_moment = beta1 * first_moment + (1 - beta1) * gradient
            second_moment = beta2 * second_moment + (1 - beta2) * tf.square(gradient)
            step = tf.cast(t, tf.float32)
            update = ((first_moment / (1 - beta1 ** step))
                      / (tf.sqrt(second_moment / (1 - beta2 ** step)) + 1e-8))
            logits = logits + self.impute_step_size * update
        filled = tf.clip_by_value(self.logit_transform().forward(logits), 0.0, 1.0)
        return keep_observed(images, mask, tf.reshape(filled, shape))

    def impute_batch(self, images: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """Conditional MAP (deterministic: ``seed`` is not used)."""
        return self.map_impute(images, mask, self.impute_steps)

    def train_step(self, data):
        observed, mask = data[0], data[1]
        noise = StepDraws(self.seed, self.optimizer.iterations, tf.shape(observed)[0]).uniform(list(self.data_shape))
        # Per replica: the fill is per digit (and exact on complete digits), so skipping it for a
        # complete slice changes nothing, and no synchronisation happens inside the branch.
        complete = tf.reduce_all(mask > 0.5)
        images = tf.cond(complete, lambda: observed,
                         lambda: tf.stop_gradient(self.map_impute(observed, mask, self.train_fill_steps)))
        with tf.GradientTape() as tape:
            bits_per_dim = self.bits_per_dim_given_noise(images, noise)
            loss = replica_mean(bits_per_dim)  # gradients summed over replicas: the batch mean's
            scaled_loss = self.optimizer.scale_loss(loss)  # float16's loss scale (tfimpute.precision)
        gradients = tape.gradient(scaled_loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        return {"bits_per_dim": loss}

    # Evaluation (NumPy in, NumPy out).

    def bits_per_dim(self, images: np.ndarray, *, seed: int = 0, batch_size: int = 500) -> np.ndarray:
        """Per-image bits per dimension of complete images (fixed dequantisation draws)."""
        if getattr(self, "_bits_per_dim_fn", None) is None:
            self._bits_per_dim_fn = tf.function(
                self.bits_per_dim_batch,
                input_signature=[tf.TensorSpec([None, *self.data_shape], tf.float32),
                                 tf.TensorSpec([2], tf.int32)])
        images = np.asarray(images, np.float32)
        return np.concatenate([
            self._bits_per_dim_fn(images[i:i + batch_size], tf.constant([seed, i], tf.int32)).numpy()
            for i in range(0, len(images), batch_size)])

    def validation_losses(self, images: np.ndarray, mask: np.ndarray) -> dict[str, float]:
        """Bits per dimension of complete held-out digits."""
        return {"bits_per_dim": float(self.bits_per_dim(images).mean())}
