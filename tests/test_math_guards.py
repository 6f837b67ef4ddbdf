"""Guards on the models' mathematics: values (not shapes) against hand computations written here.

Each test re-derives a quantity from its formula, independently of the model's code
(from the raw networks' outputs, in NumPy where no gradient is needed), so that a
deliberate or accidental change of the formula fails it:

* WGAN-GP: the gradient penalty is taken at the real/fake interpolates (a NONLINEAR
  critic, whose input gradient depends on where it is taken);
* MisGAN: the three critic losses and the three generator-side losses (α, β with
  its sign, γ, τ), and that the generator update descends exactly those losses;
* DCGAN / CGAN: the discriminator and non-saturating generator losses of a train
  step (and the update they drive), and the latent search's loss (eq. 5.13);
* VAE: the negative ELBO's terms (Bernoulli likelihood of the OBSERVED pixels only,
  Gaussian KL) for given noise, and the logs of a train step;
* export: the in-graph mask ∈ {0, 1} and pixel ∈ [0, 1] checks of served signatures;
* low-rank RBM: train steps under ``tf.function`` update A and B from the OLD factors
  (a race that only a graph shows).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfimpute import savedmodel
from tfimpute.models import gan
from tfimpute.models.cgan import CGAN
from tfimpute.models.dcgan import DCGAN
from tfimpute.models.misgan import MisGAN
from tfimpute.models.rbm import RBM
from tfimpute.models.replicas import StepDraws
from tfimpute.models.vae import VAE


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def incomplete(count=4, seed=0, missing=0.3):
    """Grey-level images whose MISSING pixels hold garbage (not zeros), and their 0/1 masks."""
    rng = np.random.default_rng(seed)
    images = rng.random((count, 28, 28, 1)).astype(np.float32)
    mask = (rng.random((count, 28, 28, 1)) >= missing).astype(np.float32)
    return images, mask


def network_output(network, inputs, training=True) -> np.ndarray:
    return network(tf.constant(np.asarray(inputs, np.float32)), training=training).numpy().astype(np.float64)


def assert_sgd_step(before, after, gradients, learning_rate, what):
    """``after`` = ``before`` − learning_rate · gradient, variable by variable."""
    assert len(before) == len(after) == len(gradients), what
    for old, new, gradient in zip(before, after, gradients):
        np.testing.assert_allclose(new - old, -learning_rate * gradient.numpy(), rtol=1e-3, atol=1e-6,
                                   err_msg=what)


def values(variables):
    return [v.numpy().copy() for v in variables]


# -- 1. WGAN-GP: the gradient penalty at the interpolates ------------------------------------------

class SquareCritic(keras.layers.Layer):
    """D(x) = Σ w ⊙ x² + c: ∇ₓD = 2 w ⊙ x depends on x, so WHERE the penalty is taken matters."""

    def build(self, input_shape):
        self.w = self.add_weight(shape=(28, 28, 1), initializer="zeros", name="w")
        self.c = self.add_weight(shape=(), initializer="zeros", name="c")

    def call(self, images):
        return tf.reduce_sum(self.w * tf.square(images), axis=[1, 2, 3])[:, None] + self.c


def test_gradient_penalty_is_taken_at_the_interpolates_of_a_nonlinear_critic():
    rng = np.random.default_rng(0)
    layer = SquareCritic()
    critic = keras.Sequential([keras.Input((28, 28, 1)), layer])
    w = rng.normal(0.0, 0.05, (28, 28, 1)).astype(np.float32)
    layer.w.assign(w)
    layer.c.assign(0.3)
    real = rng.random((4, 28, 28, 1)).astype(np.float32)
    fake = (0.3 * rng.random((4, 28, 28, 1))).astype(np.float32)  # darker: a different gradient norm
    eps = np.array([0.1, 0.35, 0.7, 0.95], np.float32).reshape(4, 1, 1, 1)
    penalty_weight, learning_rate = 10.0, 0.1

    w64, real64, fake64 = (a.astype(np.float64) for a in (w, real, fake))

    def penalty_at(points):  # (‖∇D‖ − 1)², ‖∇D(x)‖ = 2‖w ⊙ x‖
        return (2.0 * np.sqrt(((w64 * points) ** 2).sum(axis=(1, 2, 3))) - 1.0) ** 2

    mixed = eps * real64 + (1.0 - eps) * fake64
    expected_penalty = penalty_at(mixed)
    # The test can tell the interpolates from either end (else it would guard nothing).
    for wrong in (penalty_at(real64), penalty_at(fake64), penalty_at((1 - eps) * real64 + eps * fake64)):
        assert np.abs(wrong - expected_penalty).max() > 1e-2

    penalty = gan.gradient_penalty(critic, tf.constant(real), tf.constant(fake), tf.constant(eps))
    np.testing.assert_allclose(penalty.numpy(), expected_penalty, rtol=1e-4, atol=1e-6)

    def score(x):
        return (w64 * x ** 2).sum(axis=(1, 2, 3)) + 0.3

    expected_loss = np.mean(score(fake64) - score(real64) + penalty_weight * expected_penalty)
    # ∂/∂w: mean(fake² − real²) + λ·mean(2(n − 1)·∂n/∂w), n = 2‖w ⊙ x̂‖, ∂n/∂w = 4 w x̂² / n.
    norms = 2.0 * np.sqrt(((w64 * mixed) ** 2).sum(axis=(1, 2, 3)))[:, None, None, None]
    expected_gradient = (np.mean(fake64 ** 2 - real64 ** 2, axis=0)
                         + penalty_weight * np.mean(2 * (norms - 1) * 4 * w64 * mixed ** 2 / norms, axis=0))

    loss = gan.critic_step(critic, keras.optimizers.SGD(learning_rate), tf.constant(real), tf.constant(fake),
                           tf.constant(eps), penalty_weight)
    assert float(loss) == pytest.approx(expected_loss, rel=1e-4)
    np.testing.assert_allclose(layer.w.numpy() - w, -learning_rate * expected_gradient, rtol=1e-3, atol=1e-6)
    assert float(layer.c.numpy()) == pytest.approx(0.3)  # c cancels in D(fake) − D(real) and in ∇ₓD


# -- 2. MisGAN: critic and generator-side losses ---------------------------------------------------

# Every weight of the objectives away from its paper value, so that each one shows.
MISGAN = dict(misgan_tau=0.2, misgan_alpha=0.3, misgan_beta=0.4, misgan_gamma=0.7, gradient_penalty=10.0,
              mask_temperature=0.66)


def tiny_misgan():
    model = MisGAN(latent_size=8, gan_width=2, imputer_units=16, critic_steps=2, seed=0, **MISGAN)
    model.compile()
    model.build_optimizers()
    # Critic outputs away from 0, so that every critic term weighs in the losses.
    for critic, bias in ((model.data_critic, 0.3), (model.mask_critic, -0.2), (model.imputer_critic, 0.5)):
        critic.layers[-1].bias.assign([bias])
    return model


def misgan_pieces(model, observed, mask, data_latent, mask_latent, noise):
    """G_x(z), G_m(ε) and the imputation, written from the raw networks (TensorFlow, differentiable)."""
    fake_data = tf.sigmoid(model.data_generator(data_latent, training=True))
    soft = tf.sigmoid(model.mask_generator(mask_latent, training=True) / MISGAN["mask_temperature"])
    fake_mask = tf.clip_by_value(1.2 * soft - 0.1, 0.0, 1.0)  # the "fusion" output
    x = observed * mask
    filled = x + noise * (1.0 - mask)
    raw = tf.reshape(tf.sigmoid(model.imputer_network(tf.reshape(filled, [-1, 784]), training=True)),
                     tf.shape(observed))
    imputation = mask * x + (1.0 - mask) * raw
    return fake_data, fake_mask, x, raw, imputation


def mean_score(critic, images):
    return tf.reduce_mean(critic(images, training=True))


def hand_generator_losses(model, observed, mask, data_latent, mask_latent, noise):
    fake_data, fake_mask, x, raw, imputation = misgan_pieces(model, observed, mask, data_latent, mask_latent,
                                                             noise)
    tau = MISGAN["misgan_tau"]
    data_loss = -mean_score(model.data_critic, fake_data * fake_mask + tau * (1.0 - fake_mask))
    mask_loss = -mean_score(model.mask_critic, fake_mask)
    reconstruction = tf.reduce_mean(tf.reduce_sum(mask * (raw - x) ** 2, axis=[1, 2, 3])
                                    / tf.reduce_sum(mask, axis=[1, 2, 3]))
    return {"mask_generator_loss": mask_loss + MISGAN["misgan_alpha"] * data_loss,
            "data_generator_loss": data_loss + MISGAN["misgan_beta"] * mean_score(model.imputer_critic, fake_data),
            "imputer_loss": -mean_score(model.imputer_critic, imputation) + MISGAN["misgan_gamma"] * reconstruction}


def misgan_draws(count, seed=1):
    rng = np.random.default_rng(seed)
    return (tf.constant(rng.normal(size=(count, 8)), tf.float32), tf.constant(rng.normal(size=(count, 8)), tf.float32),
            tf.constant(rng.random((count, 28, 28, 1)), tf.float32))


def test_misgan_generator_losses_match_the_hand_computation():
    model = tiny_misgan()
    images, mask = incomplete()
    data_latent, mask_latent, noise = misgan_draws(4)
    losses = model.generator_losses(tf.constant(images), tf.constant(mask), data_latent, mask_latent, noise)

    # In NumPy from the networks' outputs.
    z_x, z_m, omega = (t.numpy() for t in (data_latent, mask_latent, noise))
    x = images.astype(np.float64) * mask
    fake_data = sigmoid(network_output(model.data_generator, z_x))
    fake_mask = np.clip(1.2 * sigmoid(network_output(model.mask_generator, z_m) / 0.66) - 0.1, 0.0, 1.0)
    raw = sigmoid(network_output(model.imputer_network, (x + omega * (1 - mask)).reshape(4, 784))).reshape(x.shape)
    imputation = np.where(mask > 0, x, raw)
    score = lambda critic, inputs: network_output(critic, inputs).mean()  # noqa: E731
    data_loss = -score(model.data_critic, fake_data * fake_mask + 0.2 * (1 - fake_mask))
    mask_loss = -score(model.mask_critic, fake_mask)
    imputer_game = score(model.imputer_critic, fake_data)  # E[D_i(G_x(z))], with a PLUS sign in G_x's loss
    reconstruction = np.mean((mask * (raw - x) ** 2).sum(axis=(1, 2, 3)) / mask.sum(axis=(1, 2, 3)))
    expected = {"mask_generator_loss": mask_loss + 0.3 * data_loss,
                "data_generator_loss": data_loss + 0.4 * imputer_game,
                "imputer_loss": -score(model.imputer_critic, imputation) + 0.7 * reconstruction}
    assert set(losses) == set(expected)
    for name, value in expected.items():
        assert float(losses[name]) == pytest.approx(value, rel=1e-5, abs=1e-6), name
    # Each weighted term is far above the tolerance: dropping or flipping one fails the test.
    for term in (0.3 * data_loss, 0.4 * imputer_game, 0.7 * reconstruction, mask_loss):
        assert abs(term) > 0.01
    # ... and the hand computation written in TensorFlow (used for gradients below) agrees.
    hand = hand_generator_losses(model, tf.constant(images), tf.constant(mask), data_latent, mask_latent, noise)
    for name, value in expected.items():
        assert float(hand[name]) == pytest.approx(value, rel=1e-5, abs=1e-6), name


def test_misgan_leave_out_loss_scores_hidden_observed_pixels_only():
    """γ_h's term: a second imputer pass that does not see the left-out observed pixels
    (holdout < rate), scored on those pixels only, per image, then averaged; in NumPy."""
    weight, rate = 2.5, 0.3
    model = MisGAN(latent_size=8, gan_width=2, imputer_units=16, critic_steps=2, seed=0,
                   misgan_holdout_weight=weight, misgan_holdout_rate=rate, **MISGAN)
    without = MisGAN(latent_size=8, gan_width=2, imputer_units=16, critic_steps=2, seed=0, **MISGAN)
    images, mask = incomplete(seed=3)
    data_latent, mask_latent, noise = misgan_draws(4, seed=3)
    holdout = tf.constant(np.random.default_rng(4).random(images.shape), tf.float32)
    arguments = (tf.constant(images), tf.constant(mask), data_latent, mask_latent, noise)
    losses = model.generator_losses(*arguments, holdout)
    baseline = without.generator_losses(*arguments)

    x = images.astype(np.float64) * mask
    left_out = mask * (holdout.numpy() < rate)
    kept = mask - left_out
    filled = x * kept + noise.numpy() * (1 - kept)
    raw = sigmoid(network_output(model.imputer_network, filled.reshape(4, 784))).reshape(x.shape)
    per_image = (left_out * (raw - x) ** 2).sum(axis=(1, 2, 3)) / left_out.sum(axis=(1, 2, 3))
    assert left_out.sum() > 100 and (kept > 0).sum() > 100  # both sets are large
    assert float(losses["imputer_loss"] - baseline["imputer_loss"]) == pytest.approx(weight * per_image.mean(),
                                                                                      rel=1e-4)
    for name in ("mask_generator_loss", "data_generator_loss"):  # the other players are untouched
        assert float(losses[name]) == pytest.approx(float(baseline[name]), rel=1e-6)
    # The pass that saw every observed pixel scores ~10x the tolerance above away: a loss that let the
    # imputer see the left-out pixels fails the test.
    seen = sigmoid(network_output(model.imputer_network, (x + noise.numpy() * (1 - mask)).reshape(4, 784)))
    seen_per_image = (left_out * (seen.reshape(x.shape) - x) ** 2).sum(axis=(1, 2, 3)) / left_out.sum(axis=(1, 2, 3))
    assert abs(weight * (seen_per_image.mean() - per_image.mean())) > 1e-4
    with pytest.raises(ValueError, match="holdout draws"):
        model.generator_losses(*arguments)


def test_misgan_generator_updates_descend_each_players_hand_loss():
    """With SGD, G_m, G_x and the imputer each move by −η ∇ of their own hand-written loss."""
    model = tiny_misgan()
    learning_rate = 0.05
    model.mask_generator_optimizer = keras.optimizers.SGD(learning_rate)
    model.data_generator_optimizer = keras.optimizers.SGD(learning_rate)
    model.imputer_optimizer = keras.optimizers.SGD(learning_rate)
    images, mask = incomplete(seed=2)
    observed, mask_t = tf.constant(images), tf.constant(mask)
    step = tf.constant(3, tf.int64)
    data_latent, mask_latent, noise, *_ = model._draws(tf.constant(4), step, 1)  # the generator stream
    players = {"mask_generator_loss": model.mask_generator, "data_generator_loss": model.data_generator,
               "imputer_loss": model.imputer_network}
    with tf.GradientTape(persistent=True) as tape:
        hand = hand_generator_losses(model, observed, mask_t, data_latent, mask_latent, noise)
    gradients = {name: tape.gradient(hand[name], network.trainable_variables) for name, network in players.items()}
    before = {name: values(network.trainable_variables) for name, network in players.items()}
    critics_before = [values(c.trainable_variables) for c in (model.data_critic, model.mask_critic,
                                                              model.imputer_critic)]
    model.generator_updates(observed, mask_t, step)
    for name, network in players.items():
        assert_sgd_step(before[name], values(network.trainable_variables), gradients[name], learning_rate, name)
    for old, critic in zip(critics_before, (model.data_critic, model.mask_critic, model.imputer_critic)):
        for a, b in zip(old, values(critic.trainable_variables)):
            np.testing.assert_array_equal(a, b)  # the generator step leaves the critics alone


def hand_critic_loss(critic, real, fake, eps, penalty_weight):
    """E[D(fake)] − E[D(real)] + λ·E[(‖∇D(x̂)‖ − 1)²], x̂ = ε real + (1 − ε) fake."""
    mixed = eps * real + (1.0 - eps) * fake
    with tf.GradientTape() as tape:
        tape.watch(mixed)
        total = tf.reduce_sum(critic(mixed, training=True))  # examples are independent: per-row gradients
    norms = tf.sqrt(tf.reduce_sum(tf.square(tape.gradient(total, mixed)), axis=[1, 2, 3]))
    return float(mean_score(critic, fake) - mean_score(critic, real)
                 + penalty_weight * tf.reduce_mean((norms - 1.0) ** 2))


def test_misgan_critic_losses_match_the_hand_computation():
    model = tiny_misgan()
    images, mask = incomplete(seed=3)
    observed, mask_t = tf.constant(images), tf.constant(mask)
    step = tf.constant(5, tf.int64)
    data_latent, mask_latent, noise, eps_data, eps_mask, eps_imputer = model._draws(tf.constant(4), step, 0)
    fake_data, fake_mask, x, _, imputation = misgan_pieces(model, observed, mask_t, data_latent, mask_latent, noise)
    tau, penalty_weight = MISGAN["misgan_tau"], MISGAN["gradient_penalty"]
    expected = {
        # D_x: real incomplete data x ⊙ m + τ(1 − m) against G_x ⊙ G_m + τ(1 − G_m).
        "data_critic_loss": hand_critic_loss(model.data_critic, x + tau * (1.0 - mask_t),
                                             fake_data * fake_mask + tau * (1.0 - fake_mask), eps_data,
                                             penalty_weight),
        # D_m: real masks against G_m.
        "mask_critic_loss": hand_critic_loss(model.mask_critic, mask_t, fake_mask, eps_mask, penalty_weight),
        # D_i: complete generated digits (its "real") against imputations (its "fake").
        "imputer_critic_loss": hand_critic_loss(model.imputer_critic, fake_data, imputation, eps_imputer,
                                                penalty_weight),
    }
    logs = model.critic_updates(observed, mask_t, step)
    assert set(logs) == set(expected)
    for name, value in expected.items():
        assert float(logs[name]) == pytest.approx(value, rel=1e-4, abs=1e-5), name


# -- 3. DCGAN / CGAN: train-step losses and the latent search's loss (eq. 5.13) -------------------

def tiny_gan(cls, **overrides):
    model = cls(**{**dict(latent_size=6, gan_width=2, search_steps=2, search_restarts=2, seed=0), **overrides})
    model.compile()
    model.build_optimizers()
    return model


def gan_inputs(model, labels):
    """What the networks see, written by hand: CGAN appends a one-hot to z, and one-hot planes to images."""
    if not model.num_classes:
        return (lambda latent: latent), (lambda x: x)
    one_hot = tf.one_hot(labels, 10)
    return ((lambda latent: tf.concat([latent, one_hot], axis=-1)),
            (lambda x: tf.concat([x, tf.ones_like(x) * one_hot[:, None, None, :]], axis=-1)))


@pytest.mark.parametrize("cls", [DCGAN, CGAN])
def test_gan_train_step_losses_and_updates_match_the_cross_entropy_formulas(cls):
    model = tiny_gan(cls)
    learning_rate = 0.05
    model.generator_optimizer = keras.optimizers.SGD(learning_rate)
    model.discriminator_optimizer = keras.optimizers.SGD(learning_rate)  # its iterations: step 0
    images, mask = incomplete(count=5, seed=4)
    labels = np.array([0, 3, 9, 3, 5], np.int32)
    observed, mask_t = tf.constant(images * mask), tf.constant(mask)
    latent = StepDraws(0, 0, 5).uniform([6], -1.0, 1.0)  # z ~ U(−1, 1) of step 0 (model seed 0)
    generator_input, discriminator_input = gan_inputs(model, labels)
    with tf.GradientTape(persistent=True) as tape:
        fake = tf.sigmoid(model.generator(generator_input(latent), training=True))
        real_logits = tf.reshape(model.discriminator(discriminator_input(observed * mask_t), training=True), [-1])
        fake_logits = tf.reshape(model.discriminator(discriminator_input(fake * mask_t), training=True), [-1])
        # −E[log D(x)] − E[log(1 − D(G(z)))] and the NON-saturating −E[log D(G(z))].
        hand_d = -tf.reduce_mean(tf.math.log(tf.sigmoid(real_logits)) + tf.math.log(1.0 - tf.sigmoid(fake_logits)))
        hand_g = -tf.reduce_mean(tf.math.log(tf.sigmoid(fake_logits)))
    r, f = real_logits.numpy().astype(np.float64), fake_logits.numpy().astype(np.float64)
    expected_d = np.mean(-np.log(sigmoid(r)) - np.log(1.0 - sigmoid(f)))
    expected_g = np.mean(-np.log(sigmoid(f)))
    saturating = np.mean(np.log(1.0 - sigmoid(f)))
    assert abs(expected_g - saturating) > 0.1  # the two generator losses are told apart
    generator_gradients = tape.gradient(hand_g, model.generator.trainable_variables)
    discriminator_gradients = tape.gradient(hand_d, model.discriminator.trainable_variables)
    generator_before = values(model.generator.trainable_variables)
    discriminator_before = values(model.discriminator.trainable_variables)

    logs = model.train_step((observed, mask_t, tf.constant(labels)))
    assert float(logs["discriminator_loss"]) == pytest.approx(expected_d, rel=1e-5)
    assert float(logs["generator_loss"]) == pytest.approx(expected_g, rel=1e-5)
    assert float(logs["real_probability"]) == pytest.approx(sigmoid(r).mean(), rel=1e-5)
    assert float(logs["fake_probability"]) == pytest.approx(sigmoid(f).mean(), rel=1e-5)
    assert_sgd_step(generator_before, values(model.generator.trainable_variables), generator_gradients,
                    learning_rate, "generator")
    assert_sgd_step(discriminator_before, values(model.discriminator.trainable_variables),
                    discriminator_gradients, learning_rate, "discriminator")


@pytest.mark.parametrize("cls", [DCGAN, CGAN])
@pytest.mark.parametrize("trained_on_incomplete", [False, True])
def test_latent_search_loss_is_eq_5_13(cls, trained_on_incomplete):
    """‖M ⊙ (G(z) − y)‖₁ + λ·log(1 − D(G(z))), D judging M ⊙ G(z) for a model trained on incomplete data."""
    weight = 2.0  # large, so that the realism term stands far above the tolerance
    model = tiny_gan(cls, search_weight=weight)
    model.trained_on_incomplete.assign(float(trained_on_incomplete))
    rng = np.random.default_rng(10)
    for variable in model.discriminator.trainable_variables:  # a discriminator with an opinion
        variable.assign(rng.normal(0.0, 0.3, variable.shape).astype(np.float32))
    images, mask = incomplete(count=4, seed=5, missing=0.5)
    labels = np.array([1, 4, 4, 8], np.int32) if model.num_classes else None
    generator_input, discriminator_input = gan_inputs(model, labels)
    latent = tf.random.stateless_uniform([4, 6], [3, 0], -1.0, 1.0)
    generated = tf.sigmoid(model.generator(generator_input(latent))).numpy()  # some digits G(z)
    targets = images * mask
    losses = model.search_losses(tf.constant(generated), tf.constant(targets), tf.constant(mask),
                                 None if labels is None else tf.constant(labels)).numpy()

    contextual = np.abs(mask * (generated.astype(np.float64) - targets)).sum(axis=(1, 2, 3))
    seen = generated * mask if trained_on_incomplete else generated
    logits = network_output(model.discriminator, discriminator_input(tf.constant(seen)), training=False)[:, 0]
    realism = weight * np.log(1.0 - sigmoid(logits))
    other_view = generated if trained_on_incomplete else generated * mask
    other_logits = network_output(model.discriminator, discriminator_input(tf.constant(other_view)),
                                  training=False)[:, 0]
    # A sign flip, a dropped term or the other view of G(z) shows.
    assert np.abs(realism).min() > 0.1
    assert np.abs(weight * np.log(1.0 - sigmoid(other_logits)) - realism).max() > 0.1
    np.testing.assert_allclose(losses, contextual + realism, rtol=1e-5)


# -- 4. VAE: the negative ELBO of the observed pixels ---------------------------------------------

def randomized_vae(seed=0):
    model = VAE(latent_dim=3, vae_hidden_units=[5], seed=seed)
    rng = np.random.default_rng(seed)
    for variable in model.trainable_variables:
        variable.assign(rng.normal(0.0, 0.3, variable.shape).astype(np.float32))
    return model


def numpy_neg_elbo_terms(model, images, mask, epsilon):
    """The terms in NumPy, with the MLPs transcribed: (reconstruction, kl), each per digit."""
    w = [v.numpy().astype(np.float64) for v in model.trainable_variables]  # enc h, enc out, dec h, dec out
    count = len(images)
    x, m = images.reshape(count, -1).astype(np.float64), mask.reshape(count, -1).astype(np.float64)
    encoded = np.maximum(np.concatenate([x * m, m], axis=1) @ w[0] + w[1], 0.0) @ w[2] + w[3]
    mean, log_variance = encoded[:, :3], encoded[:, 3:]
    z = mean + np.exp(0.5 * log_variance) * epsilon
    p = sigmoid(np.maximum(z @ w[4] + w[5], 0.0) @ w[6] + w[7])
    log_likelihood = x * np.log(p) + (1 - x) * np.log(1 - p)  # Bernoulli with grey-level (soft) targets
    reconstruction = -(m * log_likelihood).sum(axis=1)  # observed pixels only
    kl = 0.5 * (np.exp(log_variance) + mean ** 2 - 1.0 - log_variance).sum(axis=1)
    all_pixels = -log_likelihood.sum(axis=1)
    return reconstruction, kl, all_pixels


def test_vae_neg_elbo_terms_match_numpy_over_observed_pixels_only():
    model = randomized_vae()
    images, mask = incomplete(count=5, seed=6, missing=0.5)  # missing pixels hold garbage
    epsilon = np.random.default_rng(7).normal(size=(5, 3))
    terms = model.neg_elbo_terms_given_noise(tf.constant(images), tf.constant(mask),
                                             tf.constant(epsilon, tf.float32))
    reconstruction, kl, all_pixels = numpy_neg_elbo_terms(model, images, mask, epsilon)
    assert np.abs(all_pixels - reconstruction).min() > 1.0  # the missing pixels would show
    np.testing.assert_allclose(terms["reconstruction"].numpy(), reconstruction, rtol=1e-5)
    np.testing.assert_allclose(terms["kl"].numpy(), kl, rtol=1e-5)
    np.testing.assert_allclose(terms["neg_elbo"].numpy(), reconstruction + kl, rtol=1e-5)

    # A train step logs the batch means of the same terms, with ε drawn for step 0.
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    step_epsilon = StepDraws(0, 0, 5).normal([3]).numpy().astype(np.float64)
    reconstruction, kl, _ = numpy_neg_elbo_terms(model, images, mask, step_epsilon)
    logs = model.train_step((tf.constant(images), tf.constant(mask)))
    assert float(logs["reconstruction"]) == pytest.approx(reconstruction.mean(), rel=1e-5)
    assert float(logs["kl"]) == pytest.approx(kl.mean(), rel=1e-5)
    assert float(logs["neg_elbo"]) == pytest.approx((reconstruction + kl).mean(), rel=1e-5)


# -- 5. Export: the served graph refuses masks outside {0, 1} and pixels outside [0, 1] -------------

def test_served_signatures_refuse_masks_outside_0_1_and_pixels_outside_the_unit_interval(tmp_path):
    model = RBM(hidden_units=4, seed=0, name="lmrbm")
    signatures = tf.saved_model.load(savedmodel.export_model(model, str(tmp_path), "lmrbm")).signatures
    images, mask = incomplete(count=2, seed=8, missing=0.5)
    images[0, 0, 0, 0], images[1, 0, 0, 0] = 0.0, 1.0  # the ends of [0, 1] are valid
    images = images * mask
    seed = {"impute_sample": {"seed": tf.constant([1, 2])}}
    for name in ("serving_default", "impute_sample", "hidden"):
        serve = signatures[name]
        extra = seed.get(name, {})
        serve(images=tf.constant(images), mask=tf.constant(mask), **extra)  # valid: accepted

        half = mask.copy()
        half[1, 14, 14, 0] = 0.5  # a single entry neither 0 nor 1
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"mask: values must be 0 \(missing\) or 1"):
            serve(images=tf.constant(images), mask=tf.constant(half), **extra)
        for bad_value in (1.0001, -1e-3):
            bad = images.copy()
            bad[0, 3, 5, 0] = bad_value
            with pytest.raises(tf.errors.InvalidArgumentError, match=r"images: pixel values must be in \[0, 1\]"):
                serve(images=tf.constant(bad), mask=tf.constant(mask), **extra)


# -- 6. Low-rank RBM: A and B move from the OLD factors inside tf.function -------------------------

def low_rank_rbm(seed, hidden=12, rank=5):
    model = RBM(hidden_units=hidden, linearized=True, rank=rank, seed=seed)
    rng = np.random.default_rng(seed)
    model.visible_bias.assign(rng.normal(0, 1, 784).astype(np.float32))
    model.hidden_bias.assign(rng.normal(0, 1, hidden).astype(np.float32))
    model.factor_a.assign(rng.normal(0, 0.3, (784, rank)).astype(np.float32))
    model.factor_b.assign(rng.normal(0, 0.3, (rank, hidden)).astype(np.float32))
    model.observed_probability.assign(rng.uniform(0.2, 1.0, 784).astype(np.float32))
    return model


def test_low_rank_train_steps_in_a_tf_function_update_both_factors_from_the_old_ones():
    """A += η ΔW Bᵀ and B += η Aᵀ ΔW with the A and B from BEFORE the step, under tf.function.

    Without an explicit ordering, a graph may update A before Aᵀ ΔW reads it (or B before
    ΔW Bᵀ): eager execution never shows it, and a given graph shows it on every step or
    never (in TF 2.21 about 4 graphs in 10 did). Every one of many fresh graphs is checked.
    """
    learning_rate, count, graphs, steps = 0.002, 8, 16, 2
    images, mask = incomplete(count=count, seed=9, missing=0.4)
    visible, observed_mask = (images * mask).reshape(count, 784), mask.reshape(count, 784)
    batch = (tf.constant(images * mask), tf.constant(mask))
    for graph in range(graphs):
        model = low_rank_rbm(seed=graph)
        model.compile(optimizer=keras.optimizers.SGD(learning_rate))
        train_step = tf.function(model.train_step)  # a fresh graph, as training traces one
        for step in range(steps):
            a, b = (v.numpy().astype(np.float64) for v in (model.factor_a, model.factor_b))
            visible_bias, hidden_bias = model.visible_bias.numpy(), model.hidden_bias.numpy()
            # Δ of Algorithm 1 with the draws of this optimizer step (cd_updates is checked in test_rbm).
            updates = model.cd_updates(tf.constant(visible), tf.constant(observed_mask),
                                       model.cd_uniforms(count, step))
            delta_w = updates["weight"].numpy().astype(np.float64)
            train_step(batch)
            where = f"graph {graph}, step {step}"
            np.testing.assert_allclose(model.factor_a.numpy(), a + learning_rate * delta_w @ b.T,
                                       rtol=1e-5, atol=1e-6, err_msg=f"A, {where}")
            np.testing.assert_allclose(model.factor_b.numpy(), b + learning_rate * a.T @ delta_w,
                                       rtol=1e-5, atol=1e-6, err_msg=f"B, {where}")
            np.testing.assert_allclose(model.visible_bias.numpy(),
                                       visible_bias + learning_rate * updates["visible_bias"].numpy(),
                                       rtol=1e-5, atol=1e-6, err_msg=f"b, {where}")
            np.testing.assert_allclose(model.hidden_bias.numpy(),
                                       hidden_bias + learning_rate * updates["hidden_bias"].numpy(),
                                       rtol=1e-5, atol=1e-6, err_msg=f"c, {where}")
