"""RealNVP (seed 002, §3): invertibility, log-det against autodiff, bits/dim, imputation, training."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfimpute import masks, workdir
from tfimpute.models.realnvp import RealNVP, checkerboard_permutation
from tfimpute.models.replicas import StepDraws
from tfimpute.training import ArrayTestSplit, TrainingOptions, run_training
from zoo_support import tiny_model

tfb = tfp.bijectors
PIXELS = 784  # D = 28·28·1 of the MNIST digits these tests use
OPTIONS = TrainingOptions(epochs=2, batch_size=16, seed=0, eval_size=8, grid_size=4)


def randomized_flow(**kwargs) -> RealNVP:
    """A tiny flow whose couplings are far from the identity (the output layers start at zero)."""
    model = RealNVP(**{"coupling_layers": 4, "coupling_hidden_units": 8, "coupling_hidden_layers": 1, "seed": 1, **kwargs})
    rng = np.random.default_rng(0)
    for variable in model.trainable_variables:
        variable.assign(rng.normal(0.0, 0.2, variable.shape).astype(np.float32))
    return model


def full_bijector(model: RealNVP) -> tfb.Bijector:
    """z -> x; a new instance each call, so that TFP's bijector cache cannot answer for it."""
    return tfb.Chain([model.logit_transform(), model.flow()])


def digits(n=6, seed=1, rate=0.5):
    rng = np.random.default_rng(seed)
    images = np.round(rng.random((n, 28, 28, 1)) * 255).astype(np.float32) / 255
    return images, masks.generate_masks("independent", rate, n, seed=seed + 10)


def test_checkerboard_permutation_splits_the_two_colours():
    permutation = checkerboard_permutation()
    assert sorted(permutation) == list(range(PIXELS))
    rows, columns = np.divmod(permutation, 28)
    assert np.all((rows + columns)[:392] % 2 == 0) and np.all((rows + columns)[392:] % 2 == 1)


def test_inverse_of_forward_is_the_identity():
    model = randomized_flow()
    z = tf.random.stateless_normal([3, PIXELS], [0, 1])
    x = full_bijector(model).forward(z)
    np.testing.assert_allclose(full_bijector(model).inverse(x).numpy(), z.numpy(), atol=2e-4)
    images = tf.random.stateless_uniform([3, PIXELS], [0, 2], minval=0.05, maxval=0.95)
    round_trip = full_bijector(model).forward(full_bijector(model).inverse(images))
    np.testing.assert_allclose(round_trip.numpy(), images.numpy(), atol=1e-5)


def test_log_determinant_matches_slogdet_of_the_autodiff_jacobian():
    model = randomized_flow()
    images = tf.random.stateless_uniform([2, PIXELS], [0, 3], minval=0.05, maxval=0.95)
    with tf.GradientTape() as tape:
        tape.watch(images)
        z = full_bijector(model).inverse(images)
    jacobian = tape.batch_jacobian(z, images, experimental_use_pfor=True)
    sign, log_det = np.linalg.slogdet(jacobian.numpy().astype(np.float64))
    assert np.all(sign != 0)
    ildj = full_bijector(model).inverse_log_det_jacobian(images, event_ndims=1)
    np.testing.assert_allclose(ildj.numpy(), log_det, rtol=1e-4)
    # ... and log_prob is the change of variables (seed Q3.1).
    base = tfp.distributions.Normal(0.0, 1.0).log_prob(z).numpy().sum(axis=1)
    log_prob = model.log_prob(tf.reshape(images, [2, 28, 28, 1]))
    np.testing.assert_allclose(log_prob.numpy(), base + log_det, rtol=1e-4)


def test_one_pass_couplings_equal_tfp_realnvp_with_one_network_call_each():
    model = randomized_flow()
    calls = []
    for network in model.coupling_networks:
        original = network.shift_and_log_scale
        network.shift_and_log_scale = lambda x0, units, f=original: calls.append(1) or f(x0, units)
    stock = tfb.Chain([tfb.Invert(tfb.Permute(model.permutation)), *[
        tfb.RealNVP(num_masked=392 if i % 2 == 0 else -392, shift_and_log_scale_fn=n.shift_and_log_scale)
        for i, n in enumerate(model.coupling_networks)]])
    stock_distribution = tfp.distributions.TransformedDistribution(
        model.base_distribution(), tfb.Chain([model.logit_transform(), stock]))
    images = tf.random.stateless_uniform([3, PIXELS], [0, 4], minval=0.01, maxval=0.99)
    expected = stock_distribution.log_prob(images)
    calls.clear()
    log_prob = model.distribution().log_prob(images)
    assert len(calls) == model.coupling_layers  # the stock bijector makes 2 calls per coupling
    np.testing.assert_allclose(log_prob.numpy(), expected.numpy(), rtol=1e-6)


def test_bits_per_dim_and_dequantisation():
    model = randomized_flow()
    images, _ = digits(n=4)
    seed = tf.constant([5, 6])
    dequantized = model.dequantize(tf.constant(images), tf.random.stateless_uniform(images.shape, seed)).numpy()
    np.testing.assert_array_equal(np.floor(dequantized * 256), np.round(images * 255))
    expected = -model.log_prob(dequantized).numpy() / (PIXELS * np.log(2)) + 8
    bits_per_dim = model.bits_per_dim_batch(tf.constant(images), seed).numpy()
    np.testing.assert_allclose(bits_per_dim, expected, rtol=1e-6)
    # An untrained flow is the identity in logit space: exactly the logistic-normal density.
    untrained = RealNVP(coupling_layers=2, coupling_hidden_units=4, coupling_hidden_layers=1)
    squeezed = (1e-5 + (1 - 2e-5) * dequantized).reshape(4, -1).astype(np.float64)
    y = np.log(squeezed) - np.log1p(-squeezed)
    p = 1 / (1 + np.exp(-y))
    by_hand = (-0.5 * y ** 2 - 0.5 * np.log(2 * np.pi) - np.log(p * (1 - p)) + np.log(1 - 2e-5)).sum(axis=1)
    np.testing.assert_allclose(untrained.log_prob(dequantized).numpy(), by_hand, rtol=1e-4)


def test_map_imputation_keeps_observed_pixels_and_raises_the_density():
    model = randomized_flow(flow_impute_steps=20, flow_impute_step_size=0.1)
    images, mask = digits(n=3)
    start = model.map_impute(tf.constant(images * mask), tf.constant(mask), 0)
    imputed = model.impute(images * mask, mask)
    np.testing.assert_array_equal(imputed[mask > 0], images[mask > 0])
    assert 0.0 <= imputed.min() and imputed.max() <= 1.0
    # Compare the log-density in logit space of the completed digits (observed pixels at their bin centres).
    def logit_density(completed):
        x = np.where(mask > 0, (np.round(images * 255) + 0.5) / 256, completed).reshape(3, -1)
        x = 1e-5 + (1 - 2e-5) * x
        return model.logit_distribution().log_prob(tf.constant(np.log(x) - np.log1p(-x), tf.float32)).numpy()
    assert np.all(logit_density(imputed) > logit_density(start.numpy()) + 1.0)


def test_training_ignores_missing_values_and_checkpoints_every_variable(tmp_path):
    images, mask = digits(n=40, seed=2)
    zeroed = masks.make_incomplete(images[:32], mask[:32])
    # The model itself receives other values (flipped, not zeroed) in the missing pixels.
    altered = masks.IncompleteData(observed=np.where(mask[:32] > 0, images[:32], 1.0 - images[:32]),
                                   mask=mask[:32])
    assert np.any(altered.observed != zeroed.observed)
    models = []
    for name, train_data in (("a", zeroed), ("b", altered)):
        model = RealNVP(coupling_layers=2, coupling_hidden_units=8, coupling_hidden_layers=1, flow_impute_steps=2,
                        flow_train_fill_steps=2, seed=1)
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        result = run_training(model, train_data, ArrayTestSplit(images[32:], mask[32:]), str(tmp_path / name),
                              OPTIONS, {})
        models.append(model)
    # The bar of seed 002 (bits/dim of the test digits) is in metrics.json: the whole split, complete.
    assert result["test_bits_per_dim"] == pytest.approx(float(models[1].bits_per_dim(images[32:]).mean()), rel=1e-6)
    for a, b in zip(models[0].get_weights(), models[1].get_weights()):
        np.testing.assert_array_equal(a, b)
    assert len(models[0].trainable_variables) == 2 * (2 + 2 + 1)  # per coupling: hidden, output, scale
    with open(tmp_path / "a" / "curves.json") as f:
        assert set(json.load(f)["2"]) == {"train", "validation bits_per_dim"}
    for name in ("curves.png", "samples_epoch_000.png", "samples_epoch_002.png"):
        assert os.path.getsize(tmp_path / "a" / name) > 0, name

    with open(tmp_path / "a" / "config.json", "w") as f:
        json.dump({"model": "realnvp", "model_config": models[0].get_config()}, f)
    restored, _ = workdir.load_trained(str(tmp_path / "a"))
    np.testing.assert_array_equal(restored.log_prob(images[:2]).numpy(),
                                  models[0].log_prob(images[:2]).numpy())


def test_complete_batches_train_on_the_likelihood_alone():
    model = randomized_flow()
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0))
    images, _ = digits(n=4)
    logs = model.train_step((tf.constant(images), tf.ones_like(images)))
    noise = StepDraws(model.seed, 0, len(images)).uniform([28, 28, 1])  # the draws of step 0
    expected = model.bits_per_dim_given_noise(tf.constant(images), noise)
    np.testing.assert_allclose(float(logs["bits_per_dim"]), float(tf.reduce_mean(expected)), rtol=1e-6)


@pytest.mark.parametrize("bad", [{"coupling_layers": 0}, {"flow_impute_step_size": 0.0}, {"logit_alpha": 0.5}])
def test_bad_settings_are_rejected(bad):
    with pytest.raises(ValueError):
        RealNVP(**bad)


@pytest.mark.parametrize("name", ["realnvp"])
def test_serving_signatures_are_the_published_ones(name):
    """The public serving API (README, "Export and serve"): a dropped signature or super() call fails here."""
    assert set(tiny_model(name).serving_signatures()) == {"serving_default", "sample", "log_prob"}
