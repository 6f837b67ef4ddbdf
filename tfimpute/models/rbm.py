"""Binary-binary RBM for incomplete data: the LM-RBM and the baseline of Salakhutdinov et al.

Paper: "Perception-distortion trade-off with restricted Boltzmann machines"
(``../shared/seeds/000_*.txt``), Section 3 and Algorithm 1.

Energy E(v, h) = -bᵀv - vᵀWh - cᵀh. With visible units split into observed (o)
and missing (m), the LM-RBM linearises the softplus terms of the observed energy
around W_m h = 0, which adds σ(b_m)ᵀ W_m h to the hidden pre-activation:

    p(h | v_o) = σ((v ⊙ (1 - m) + σ(b) ⊙ m) W + c)         (Alg. 1, line 3)

``linearized=False`` gives the baseline [5]: parameters of missing units are
dropped, i.e. σ(b) ⊙ m is replaced by 0 in lines 3 and 5. Lines 8-9 of
Algorithm 1 are proportional to b_m = σ(b) ⊙ m, so they vanish with it; this
is "Algorithm 1 without lines 8-9" together with the energy of [5] that the
paper's Section 3 describes (no σ(b_m)ᵀ W_m h term).

Mask convention: the package's ``mask`` is 1 = observed. Algorithm 1's m is
``1 - mask``; the conversion happens in :meth:`RBM.cd_updates` and
:meth:`RBM.hidden_probabilities` and nowhere else.

Training is minibatch CD-1 exactly as Algorithm 1 (``cd_steps`` = k > 1: CD-k, lines 4-5 repeated
k times from the last hidden sample, the positive phase unchanged; ``persistent_chains`` > 0: PCD
(Tieleman 2008), lines 4-5 continuing each row's chain from the last step's instead of line 3's
sample, the chain masked by the row's current example): the per-example updates are
SUMMED over the batch (not averaged) and applied as W += η ΔW through a Keras
SGD optimizer (gradient = -ΔW), so momentum or another optimizer stays a flag
away. Optional low-rank W = AB ([5], eq. 14): A and B move along ΔW Bᵀ and
Aᵀ ΔW (the chain rule through W = AB). The paper's rule of thumb sets the rank
to the expected number of observed visible units in the training data.

Under ``tf.distribute`` each replica computes the summed updates of its own rows,
and the Keras optimizer (TensorFlow backend) SUM-all-reduces what
``apply_gradients`` receives in replica context before applying it once on every
copy, so N replicas sharing a global batch B make one device's update for batch B.
The CD-1 draws are those of the global batch (:class:`tfimpute.models.replicas.StepDraws`); PCD's
chains are one variable, every replica reading its rows and assigning all rows gathered.

Under a mixed dtype policy (:mod:`tfimpute.precision`) every matrix product takes its operands in
the policy's compute dtype (bfloat16 or float16, accumulated in float32 by the matrix units) and
returns float32 (:meth:`RBM.product`); parameters, biases, sigmoids, samples and the summed updates
applied to the parameters stay float32. The samples are 0/1, exact in any dtype.
"""

from __future__ import annotations

import functools
from typing import Annotated

import keras
import numpy as np
import tensorflow as tf

from tfimpute import signatures
from tfimpute.masks import TrainingExamples
from tfimpute.models.base import OPTIMIZERS, Imputer, OptimizerSettings, keep_observed
from tfimpute.models.capabilities import FrontierPoint
from tfimpute.models.registry import Setting, register_model, settings_of
from tfimpute.models.replicas import StepDraws, global_rows_of, global_sum, replica_rows

IMPUTE_MODES = ("mean_field", "sample", "gibbs", "sample_visible")
RANK_HELP = ("RBM weight rank: 'full', 'auto' (expected number of observed pixels, the paper's rule "
             "of thumb) or an integer.")


def _bernoulli(probabilities: tf.Tensor, uniforms: tf.Tensor) -> tf.Tensor:
    return tf.cast(uniforms < probabilities, probabilities.dtype)


def parse_rank(rank: int | str | None) -> int | str | None:
    """'full' or None -> None (a full W); 'auto' stays (resolved from the data); else an integer."""
    if rank is None or rank == "full":
        return None
    if rank == "auto" or isinstance(rank, int):
        return rank
    try:
        return int(rank)
    except ValueError:
        raise ValueError(f"--rank must be 'full', 'auto' or an integer, got {rank!r}") from None


@register_model("lmrbm", linearized=True, summary="LM-RBM of the paper (Algorithm 1), CD-1")
@register_model("rbm", linearized=False, summary="RBM baseline of Salakhutdinov et al. [5], CD-1")
class RBM(OptimizerSettings, Imputer):
    """Binary-binary RBM trained by CD-1 on incomplete data (LM-RBM or baseline [5]).

    ``linearized``: True for the LM-RBM, False for the baseline of [5] (fixed by the
    registered name). ``rank``: None (or "full") for a full W, the rank r of W = AB, or
    "auto", resolved from the training data by :meth:`settings_for_data`. ``seed``: base
    seed of the CD-1 random draws (stateless, keyed by the optimizer's step, so a resumed
    run draws what an uninterrupted one would). The optimizer settings apply to the
    batch-SUMMED updates of Algorithm 1.
    """

    scales_loss = False  # CD-1's updates are not gradients of a loss: no float16 loss scale
    inference_settings = ("impute_mode", "gibbs_steps", "mean_field_steps")
    # The paper's single pass (lowest RMSE), clamped mean-field steps after it, a sampled hidden
    # layer, Gibbs chains of growing length with the observed pixels clamped, then binary sampled
    # pixels (sharpest digits, highest RMSE).
    frontier_points = (FrontierPoint("mean-field", {"impute_mode": "mean_field", "mean_field_steps": 0}),
                       *(FrontierPoint(f"mean-field +{steps}", {"impute_mode": "mean_field", "mean_field_steps": steps})
                         for steps in (1, 3)),
                       FrontierPoint("sampled h", {"impute_mode": "sample"}),
                       *(FrontierPoint(f"Gibbs {steps}", {"impute_mode": "gibbs", "gibbs_steps": steps})
                         for steps in (1, 3, 10)),
                       FrontierPoint("sampled v", {"impute_mode": "sample_visible"}))
    # Workdirs written before these existed used their defaults.
    added_settings = ("cd_steps", "persistent_chains", "gibbs_steps", "mean_field_steps")
    derived_settings = ("visible_units",)  # 0.1 stored it; it is the size of data_shape
    tiny_settings = {"hidden_units": 16, "learning_rate": 0.05, "momentum": 0.5}  # momentum: state applied once
    size_settings = ("hidden_units", "rank")

    def __init__(self,
                 hidden_units: Annotated[int, Setting("RBM hidden units (paper: 4096).")] = 4096,
                 linearized: bool = True,
                 rank: Annotated[int | str | None, Setting(RANK_HELP)] = "full",
                 impute_mode: Annotated[str, Setting(
                     "RBM imputation: probabilities throughout (the paper's single pass), a sampled hidden "
                     "layer, gibbs: --gibbs_steps of Gibbs sampling with the observed pixels clamped, "
                     "E[v | h] averaged, or sample_visible: binary missing pixels drawn from p(v | h) of a "
                     "sampled hidden layer.", choices=IMPUTE_MODES)] = "mean_field",
                 gibbs_steps: Annotated[int, Setting(
                     "Gibbs steps of --impute_mode=gibbs.")] = 10,
                 mean_field_steps: Annotated[int, Setting(
                     "Clamped mean-field steps after the single pass of --impute_mode=mean_field, each "
                     "h = p(h | v) of the completed v, then missing v = E[v | h]; 0: the paper's single "
                     "pass.")] = 0,
                 optimizer: Annotated[str, Setting("Optimizer of the training updates.",
                                                   choices=OPTIMIZERS)] = "sgd",
                 learning_rate: Annotated[float, Setting(
                     "Learning rate (RBMs: on batch-summed updates, as the paper).")] = 1e-4,
                 momentum: Annotated[float, Setting("SGD momentum (paper: none).")] = 0.0,
                 cd_steps: Annotated[int, Setting(
                     "Gibbs steps of the negative phase: 1 is the paper's CD-1, k > 1 CD-k.")] = 1,
                 persistent_chains: Annotated[int, Setting(
                     "Persistent CD (Tieleman 2008): this many chains carried from step to step, one per "
                     "row of the global batch (at least --batch_size); 0: the chain starts from the data "
                     "(CD-k, the paper's).")] = 0,
                 seed: Annotated[int, Setting("Seed of initialisation, shuffling and training draws.")] = 0,
                 **kwargs):
        super().__init__(**kwargs)
        visible_units = int(np.prod(self.data_shape))
        rank = parse_rank(rank)
        if rank == "auto":
            raise ValueError("rank 'auto' is resolved from the training data (RBM.settings_for_data) "
                             "before the model is built")
        if hidden_units < 1:
            raise ValueError(f"hidden_units must be >= 1, got {hidden_units}")
        if rank is not None and not 1 <= rank <= min(visible_units, hidden_units):
            raise ValueError(f"rank must be in [1, {min(visible_units, hidden_units)}], got {rank}")
        if impute_mode not in IMPUTE_MODES:
            raise ValueError(f"impute_mode must be one of {IMPUTE_MODES}, got {impute_mode!r}")
        if gibbs_steps < 1:
            raise ValueError(f"gibbs_steps must be >= 1, got {gibbs_steps}")
        if mean_field_steps < 0:
            raise ValueError(f"mean_field_steps must be >= 0, got {mean_field_steps}")
        if cd_steps < 1:
            raise ValueError(f"cd_steps must be >= 1, got {cd_steps}")
        if persistent_chains < 0:
            raise ValueError(f"persistent_chains must be >= 0, got {persistent_chains}")
        self.hidden_units = hidden_units
        self.visible_units = visible_units
        self.linearized = linearized
        self.rank = rank
        self.impute_mode = impute_mode
        self.gibbs_steps = gibbs_steps
        self.mean_field_steps = mean_field_steps
        self.set_optimizer_settings(optimizer, learning_rate, momentum)
        self.cd_steps = cd_steps
        self.persistent_chains = persistent_chains
        self.seed = seed
        n, m = visible_units, hidden_units
        self.visible_bias = self.add_weight(shape=(n,), initializer="zeros", name="visible_bias")
        self.hidden_bias = self.add_weight(shape=(m,), initializer="zeros", name="hidden_bias")
        if rank is None:
            self.kernel = self.add_weight(
                shape=(n, m), initializer=keras.initializers.RandomNormal(stddev=0.01, seed=seed),
                name="kernel")
        else:
            # Each factor's scale is chosen so that the entries of A @ B have std 0.01.
            factor_std = float(np.sqrt(0.01 / np.sqrt(rank)))
            self.factor_a = self.add_weight(
                shape=(n, rank), initializer=keras.initializers.RandomNormal(stddev=factor_std, seed=seed),
                name="factor_a")
            self.factor_b = self.add_weight(
                shape=(rank, m),
                initializer=keras.initializers.RandomNormal(stddev=factor_std, seed=seed + 1),
                name="factor_b")
        # λ of Algorithm 1: per-unit probability of being observed in the training data.
        self.observed_probability = self.add_weight(
            shape=(n,), initializer="ones", trainable=False, name="observed_probability")
        if persistent_chains:
            # PCD's hidden states, row i continuing the chain of row i of the global batch; zeros at
            # the start (as scikit-learn's BernoulliRBM). Every replica assigns the same gathered value.
            self.chain_hidden = self.add_weight(shape=(persistent_chains, m), initializer="zeros",
                                                trainable=False, aggregation="only_first_replica",
                                                name="chain_hidden")
        self.built = True

    def get_config(self) -> dict:
        return {**super().get_config(), "hidden_units": self.hidden_units, "linearized": self.linearized, "rank": self.rank,
                "impute_mode": self.impute_mode, "gibbs_steps": self.gibbs_steps,
                "mean_field_steps": self.mean_field_steps, "optimizer": self.optimizer_name,
                "learning_rate": self.learning_rate, "momentum": self.momentum, "cd_steps": self.cd_steps,
                "persistent_chains": self.persistent_chains, "seed": self.seed}

    def check_batch_size(self, batch_size: int) -> None:
        if self.persistent_chains and batch_size > self.persistent_chains:
            raise ValueError(f"--persistent_chains={self.persistent_chains} is fewer than --batch_size={batch_size}: "
                             "PCD carries one chain per row of the global batch")

    @classmethod
    def settings_for_data(cls, settings: dict, train_data: TrainingExamples) -> dict:
        """Rank 'auto' -> the paper's rule of thumb (Section 3): the expected number of observed
        visible units in the training data, capped at the hidden layer size."""
        if parse_rank(settings.get("rank") or "full") != "auto":
            return settings
        hidden_units = settings.get("hidden_units") or settings_of(cls)["hidden_units"].default
        visible_units = int(np.prod(train_data.shape))
        expected_observed = visible_units * (1.0 - train_data.missing_fraction())
        return {**settings, "rank": max(1, min(hidden_units, int(round(expected_observed))))}

    def step_flops(self, batch_size: int) -> float:
        """Multiply-adds of one CD-k step x 2: [B, n] x [n, m] products, one for line 3, two per Gibbs
        step, two for ΔW (positive and negative phase) and one more for the LM-RBM's line 8; plus
        W = AB and the two factor gradients when low-rank."""
        n, m, b = self.visible_units, self.hidden_units, batch_size
        flops = (3 + 2 * self.cd_steps + self.linearized) * 2.0 * b * n * m
        if self.rank is not None:
            flops += 3 * 2.0 * n * self.rank * m
        return flops

    def reference_matmul_shape(self, batch_size: int) -> tuple[int, int, int]:
        return batch_size, self.visible_units, self.hidden_units

    def serving_signatures(self) -> dict[str, signatures.ServingSignature]:
        """Mean-field ``serving_default``, sampled ``impute_sample`` and ``hidden`` (the paper's RBM † features)."""

        def hidden(images: tf.Tensor, mask: tf.Tensor) -> dict[str, tf.Tensor]:
            images, mask = signatures.checked_images_and_mask(images, mask)
            return {"hidden": self.hidden(images, mask)}

        return {
            **super().serving_signatures(),
            signatures.DEFAULT_SIGNATURE: signatures.impute_signature(
                functools.partial(self.impute_batch, mode="mean_field"),
                "mean-field imputation (deterministic)", self.data_shape),
            "impute_sample": signatures.seeded_impute_signature(
                functools.partial(self.impute_batch, mode="sample"),
                "hidden layer sampled from p(h | v_o) with one seed per example, then v = E[v | h]",
                self.data_shape),
            "hidden": signatures.ServingSignature(signatures.image_inputs(self.data_shape), hidden,
                                                  f"hidden activations p(h | v_o), [batch, {self.hidden_units}]"),
        }

    def clamped_gibbs_mean(self, visible: tf.Tensor, observed_mask: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """E[v | v_o] by Gibbs sampling with the observed units clamped (flat [B, n] inputs).

        The chain starts from p(h | v_o) of the paper's single pass; each of ``gibbs_steps`` steps
        samples h, takes E[v | h] (averaged over the steps: the estimate, Rao-Blackwellised), samples
        the missing units from it, and computes p(h | v) of the completed v (nothing missing). Draws
        are stateless from ``seed``, step by step.
        """
        all_observed = tf.ones_like(observed_mask)
        hidden = self.hidden_probabilities(visible, observed_mask)
        total = tf.zeros_like(visible)
        for step in tf.range(self.gibbs_steps):
            step_seed = tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), tf.cast(step, tf.int64))
            hidden_seed, visible_seed = tf.unstack(tf.random.experimental.stateless_split(step_seed, 2))
            hidden_sample = _bernoulli(hidden, tf.random.stateless_uniform(tf.shape(hidden), hidden_seed))
            mean = self.visible_probabilities(hidden_sample)
            total += mean
            missing = _bernoulli(mean, tf.random.stateless_uniform(tf.shape(mean), visible_seed))
            completed = visible * observed_mask + missing * (1.0 - observed_mask)
            hidden = self.hidden_probabilities(completed, all_observed)
        return total / tf.cast(self.gibbs_steps, total.dtype)

    def clamped_mean_field(self, visible: tf.Tensor, observed_mask: tf.Tensor) -> tf.Tensor:
        """E[v | h] after ``mean_field_steps`` deterministic steps with the observed units clamped
        (flat [B, n] inputs): the paper's single pass (h = p(h | v_o), v = σ(Wh + b)), then each step
        h = p(h | v) of the completed v (nothing missing) and v = σ(Wh + b) again. The paper's §5
        leaves test-time inference open; each step moves the imputation towards a mode of the
        model (sharper digits, a perception knob of the frontier), away from the posterior mean."""
        all_observed = tf.ones_like(observed_mask)
        hidden = self.hidden_probabilities(visible, observed_mask)
        for _ in range(self.mean_field_steps):
            mean = self.visible_probabilities(hidden)
            hidden = self.hidden_probabilities(visible * observed_mask + mean * (1.0 - observed_mask), all_observed)
        return self.visible_probabilities(hidden)

    def product(self, left: tf.Tensor, right: tf.Tensor, **transpose) -> tf.Tensor:
        """``tf.matmul(left, right, **transpose)`` with operands in the dtype policy's compute dtype,
        returned in float32 (a no-op cast under float32)."""
        dtype = self.compute_dtype
        return tf.cast(tf.matmul(tf.cast(left, dtype), tf.cast(right, dtype), **transpose), tf.float32)

    @property
    def weight_matrix(self) -> tf.Tensor:
        """W, shape [visible, hidden] (A @ B when factorised), float32."""
        if self.rank is None:
            return tf.convert_to_tensor(self.kernel)
        return self.product(self.factor_a, self.factor_b)

    def prepare(self, train_data: TrainingExamples) -> None:
        """Sets λ from the training masks and b from the observed pixel means.

        b_i = logit(p_i), p_i the mean of pixel i where it is observed (Hinton's
        practical guide; the paper does not state its initialisation).
        """
        n = self.visible_units
        self.observed_probability.assign(train_data.observed_fraction().reshape(n).astype(np.float32))
        means = np.clip(train_data.observed_pixel_means().reshape(n), 1e-3, 1 - 1e-3)
        self.visible_bias.assign(np.log(means / (1 - means)).astype(np.float32))

    def _flatten(self, images: tf.Tensor) -> tf.Tensor:
        return tf.reshape(images, [-1, self.visible_units])

    def _missing_bias(self, observed_mask: tf.Tensor) -> tf.Tensor:
        """b_m = σ(b) ⊙ m with m = 1 - mask (Alg. 1, line 3); zero for the baseline [5]."""
        if not self.linearized:
            return tf.zeros_like(observed_mask)
        return tf.sigmoid(self.visible_bias) * (1.0 - observed_mask)

    def hidden_probabilities(self, visible: tf.Tensor, observed_mask: tf.Tensor) -> tf.Tensor:
        """p(h = 1 | v_o) under the (linearised) observed energy; inputs flat [B, n]."""
        visible_input = visible * observed_mask + self._missing_bias(observed_mask)
        return tf.sigmoid(self.product(visible_input, self.weight_matrix) + self.hidden_bias)

    def visible_probabilities(self, hidden: tf.Tensor) -> tf.Tensor:
        """E[v | h] = σ(Wh + b), flat [B, n] (Alg. 1, line 4 before sampling)."""
        return tf.sigmoid(self.product(hidden, self.weight_matrix, transpose_b=True) + self.visible_bias)

    def cd_updates(self, visible: tf.Tensor, observed_mask: tf.Tensor, uniforms: tuple[tf.Tensor, ...],
                   chain_start: tf.Tensor | None = None) -> dict[str, tf.Tensor]:
        """Δb, Δc, ΔW of Algorithm 1 (before the learning rate), summed over the batch.

        ``uniforms`` (:meth:`cd_uniforms`) are U(0, 1) draws: [B, hidden] for the sample of line 3,
        then [B, visible] and [B, hidden] for lines 4 and 5 of each of the ``cd_steps`` Gibbs steps.
        Inputs are flat [B, n]. ``chain_start`` ([B, hidden]; PCD): the hidden states the Gibbs
        steps of lines 4-5 start from instead of line 3's sample (None: CD-k); the positive phase
        is line 3's either way, and each row's chain is masked by that row's observed units.
        ``chain_end`` in the result is the chain's last hidden sample (PCD carries it on).
        """
        u_hidden, chain_uniforms = uniforms[0], uniforms[1:]
        w = tf.cast(self.weight_matrix, self.compute_dtype)  # cast once for the products with W
        v_obs = visible * observed_mask
        b_missing = self._missing_bias(observed_mask)
        # Line 3: the hidden layer sees v ⊙ (1 - m) + b_m.
        h = _bernoulli(tf.sigmoid(self.product(v_obs + b_missing, w) + self.hidden_bias), u_hidden)
        h_negative, reconstruction = h, None
        if chain_start is not None:
            h_negative = tf.cast(chain_start, h.dtype)
            reconstruction = tf.sigmoid(self.product(h, w, transpose_b=True) + self.visible_bias)
        for u_visible, u_hidden_negative in zip(chain_uniforms[::2], chain_uniforms[1::2]):
            # Lines 4-5, once per Gibbs step, the observed units of the example masking the chain.
            v_negative_prob = tf.sigmoid(self.product(h_negative, w, transpose_b=True) + self.visible_bias)
            reconstruction = v_negative_prob if reconstruction is None else reconstruction
            v_negative_obs = _bernoulli(v_negative_prob, u_visible) * observed_mask
            h_negative = _bernoulli(
                tf.sigmoid(self.product(v_negative_obs + b_missing, w) + self.hidden_bias), u_hidden_negative)
        hidden_difference = h - h_negative
        # Line 6.
        delta_c = tf.reduce_sum(hidden_difference, axis=0)
        delta_b = tf.reduce_sum(v_obs - v_negative_obs, axis=0)
        positive, negative = v_obs, v_negative_obs
        if self.linearized:
            weighted_b_missing = self.observed_probability * b_missing  # λ ⊙ b_m
            # Line 8: λ ⊙ b_m ⊙ (1 - σ(b)) ⊙ W(h - h').
            delta_b += tf.reduce_sum(
                weighted_b_missing * (1.0 - tf.sigmoid(self.visible_bias))
                * self.product(hidden_difference, w, transpose_b=True), axis=0)
            # Line 9 folded into line 7: (v_o + λb_m)ᵀh - (v'_o + λb_m)ᵀh'.
            positive = v_obs + weighted_b_missing
            negative = v_negative_obs + weighted_b_missing
        # Line 7 (and 9) as one GEMM over the stacked positive and negative phases.
        delta_w = self.product(tf.concat([positive, -negative], axis=0),
                               tf.concat([h, h_negative], axis=0), transpose_a=True)
        # recon_mse: E[v | h] of the first Gibbs step on the observed units.
        squared_error = tf.reduce_sum(tf.square(v_obs - reconstruction * observed_mask))
        return {"visible_bias": delta_b, "hidden_bias": delta_c, "weight": delta_w, "chain_end": h_negative,
                "squared_error": squared_error, "observed_count": tf.reduce_sum(observed_mask)}

    def cd_uniforms(self, batch_size: tf.Tensor | int, step: tf.Tensor | int) -> tuple[tf.Tensor, ...]:
        """The U(0, 1) draws of one CD-k step (see :meth:`cd_updates`), keyed by (seed, step), for this
        replica's ``batch_size`` rows of the global batch. CD-1's draws are the first three of CD-k's."""
        draws = StepDraws(self.seed, step, batch_size)
        uniforms = [draws.uniform([self.hidden_units])]
        for _ in range(self.cd_steps):
            uniforms += [draws.uniform([self.visible_units]), draws.uniform([self.hidden_units])]
        return tuple(uniforms)

    def _variables_and_gradients(self, updates: dict[str, tf.Tensor]) -> list[tuple[tf.Tensor, tf.Variable]]:
        """Pairs (-Δ, variable) so that an SGD step gives θ += η Δ as in Alg. 1, line 11."""
        pairs = [(-updates["visible_bias"], self.visible_bias),
                 (-updates["hidden_bias"], self.hidden_bias)]
        delta_w = updates["weight"]
        if self.rank is None:
            pairs.append((-delta_w, self.kernel))
        else:
            pairs.append((-self.product(delta_w, self.factor_b, transpose_b=True), self.factor_a))
            pairs.append((-self.product(self.factor_a, delta_w, transpose_a=True), self.factor_b))
        # Every update waits for every Δ: in a tf.function (TF 2.21, Grappler's dependency
        # optimizer on) A was otherwise at times updated before A^T ΔW had read it, which made
        # low-rank training nondeterministic (eager execution was not affected).
        with tf.control_dependencies([gradient for gradient, _ in pairs]):
            return [(tf.identity(gradient), variable) for gradient, variable in pairs]

    def train_step(self, data):
        observed, mask = data[0], data[1]
        visible, observed_mask = self._flatten(observed), self._flatten(mask)
        rows = tf.shape(visible)[0]
        uniforms = self.cd_uniforms(rows, self.optimizer.iterations)
        if not self.persistent_chains:
            updates = self.cd_updates(visible, observed_mask, uniforms)
        else:
            offset, global_rows = replica_rows(rows)
            tf.debugging.assert_less_equal(global_rows, self.persistent_chains,
                                           message="PCD: the global batch has more rows than persistent_chains")
            updates = self.cd_updates(visible, observed_mask, uniforms,
                                      chain_start=self.chain_hidden[offset:offset + rows])
            ends = global_rows_of(tf.cast(updates["chain_end"], self.chain_hidden.dtype))
            self.chain_hidden.assign(tf.concat([ends, self.chain_hidden[global_rows:]], axis=0))
        self.optimizer.apply_gradients(self._variables_and_gradients(updates))  # summed over replicas
        observed_count = global_sum(updates["observed_count"])
        return {"recon_mse": updates["squared_error"] / tf.maximum(observed_count, 1.0)}

    def hidden(self, images: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
        """Hidden activations p(h | v_o), the features of the paper's "RBM †" classifier."""
        return self.hidden_probabilities(self._flatten(images), self._flatten(mask))

    def impute_batch(self, images: tf.Tensor, mask: tf.Tensor, seed: tf.Tensor,
                     mode: str | None = None) -> tf.Tensor:
        """h from p(h | v_o) (linearised), then v = σ(Wh + b); observed pixels kept exactly.
        ``mean_field``: :meth:`clamped_mean_field` (0 ``mean_field_steps``: that single pass);
        ``sample``: h drawn from ``seed``; ``sample_visible``: that, and v drawn from
        fold_in(``seed``, 1); ``gibbs``: :meth:`clamped_gibbs_mean` instead."""
        mode = mode or self.impute_mode
        visible, observed_mask = self._flatten(images), self._flatten(mask)
        if mode == "gibbs":
            filled = self.clamped_gibbs_mean(visible, observed_mask, seed)
        elif mode == "mean_field":
            filled = self.clamped_mean_field(visible, observed_mask)
        elif mode in ("sample", "sample_visible"):
            hidden = self.hidden_probabilities(visible, observed_mask)
            hidden = _bernoulli(hidden, tf.random.stateless_uniform(tf.shape(hidden), seed))
            filled = self.visible_probabilities(hidden)
            if mode == "sample_visible":
                visible_seed = tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), 1)
                filled = _bernoulli(filled, tf.random.stateless_uniform(tf.shape(filled), visible_seed))
        else:
            raise ValueError(f"impute mode must be one of {IMPUTE_MODES}, got {mode!r}")
        return keep_observed(images, mask, tf.reshape(filled, tf.shape(images)))
