"""The VAE and RealNVP on data shapes other than MNIST's: vectors [D] (VAE only), colour
images H x W x C and an image with an odd number of values D = H·W·C (RealNVP's halves
then differ by one). Tiny settings, a couple of training steps each."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfimpute import masks
from tfimpute.models import registry
from tfimpute.models.realnvp import checkerboard_permutation

tfb = tfp.bijectors


def build(name: str, shape: tuple[int, ...], **overrides):
    spec = registry.get(name)
    model = spec.cls(name=name, data_shape=shape, **spec.fixed, **{**spec.cls.tiny_settings, **overrides})
    model.compile()
    return model


def incomplete_data(shape: tuple[int, ...], n: int = 8, seed: int = 0, rate: float = 0.4):
    """8-bit levels in [0, 1] (RealNVP dequantises) and a mask with observed and missing entries per row."""
    rng = np.random.default_rng(seed)
    values = np.round(rng.random((n, *shape)) * 255).astype(np.float32) / 255
    mask = (rng.random((n, *shape)) >= rate).astype(np.float32)
    flat = mask.reshape(n, -1)
    flat[:, 0], flat[:, -1] = 1.0, 0.0  # at least one observed and one missing entry per example
    return values, mask


def train_and_impute(model, shape: tuple[int, ...]):
    """prepare + two train steps on incomplete data, then checks of ``impute`` on held-out rows."""
    values, mask = incomplete_data(shape, n=10)
    train = masks.make_incomplete(values[:8], mask[:8])
    model.prepare(train)
    before = [v.numpy().copy() for v in model.trainable_variables]
    for _ in range(2):
        batch = (tf.constant(train.observed), tf.constant(train.mask), tf.constant(train.label_array()))
        logs = model.train_step(batch)
        assert logs and all(np.isfinite(float(value)) for value in logs.values()), logs
    assert int(model.optimizer.iterations) == 2
    assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables))

    x, m = values[8:], mask[8:]
    imputed = model.impute(x * m, m)
    assert imputed.shape == (2, *shape) and imputed.dtype == np.float32
    assert np.all(np.isfinite(imputed)) and imputed.min() >= 0.0 and imputed.max() <= 1.0
    np.testing.assert_array_equal(imputed[m > 0], x[m > 0])
    # Missing entries are filled by the model, not left at the zeros of the input.
    assert np.any(imputed[m == 0] != 0.0)
    return values, mask, imputed


# The VAE: fully connected over D = prod(data_shape) values, vectors and images alike.

@pytest.mark.parametrize("shape", [(13,), (10, 14, 3)], ids=["vector13", "image10x14x3"])
def test_vae_trains_imputes_and_decodes_on_the_data_shape(shape):
    model = build("vae", shape)
    num_values = int(np.prod(shape))
    # Encoder: observed values and mask (2·D inputs); decoder: D Bernoulli logits.
    assert model.encoder.layers[0].kernel.shape == (2 * num_values, 8)
    assert model.decoder.layers[-1].kernel.shape == (8, num_values)
    assert model.is_image_model == (len(shape) == 3)
    rebuilt = type(model).from_config(model.get_config())  # the shape travels in the config
    assert rebuilt.data_shape == shape
    assert [v.shape for v in rebuilt.variables] == [v.shape for v in model.variables]

    values, mask, _ = train_and_impute(model, shape)

    z = tf.random.stateless_normal([4, model.latent_dim], [1, 2])
    decoded = model.decode(z).numpy()
    assert decoded.shape == (4, *shape)
    assert np.all((decoded > 0.0) & (decoded < 1.0))
    np.testing.assert_allclose(decoded.reshape(4, -1), tf.sigmoid(model.decode_logits(z)).numpy(), rtol=1e-6)
    samples = model.sample(tf.constant(3), tf.constant([0, 1])).numpy()
    assert samples.shape == (3, *shape)

    mean, log_variance = model.encode(tf.constant(values * mask), tf.constant(mask))
    assert mean.shape == (10, model.latent_dim) and log_variance.shape == (10, model.latent_dim)
    neg_elbo = model.neg_elbo(values, mask)
    assert neg_elbo.shape == (10,) and np.all(np.isfinite(neg_elbo)) and np.all(neg_elbo > 0)

    gibbs = model.impute_batch(tf.constant(values * mask), tf.constant(mask), tf.constant([0, 0]),
                               mode="pseudo_gibbs").numpy()
    assert gibbs.shape == (10, *shape) and np.all((gibbs >= 0) & (gibbs <= 1))
    np.testing.assert_array_equal(gibbs[mask > 0], values[mask > 0])

    if len(shape) == 1:
        assert model.epoch_images(1, 2) == []  # no picture of a table row
        with pytest.raises(ValueError, match="images"):
            model.manifold_grid(2)
    else:
        assert model.manifold_grid(3).shape == (3 * 10, 3 * 14, 3)


# RealNVP: images only, any H x W x C; checkerboard over (row, column, channel).

@pytest.mark.parametrize("shape", [(28, 28, 1), (10, 14, 3), (5, 5, 1), (3, 1, 3)])
def test_checkerboard_permutation_puts_the_first_colour_first(shape):
    permutation = checkerboard_permutation(shape)
    num_values = int(np.prod(shape))
    assert sorted(permutation) == list(range(num_values))
    first = (num_values + 1) // 2
    rows, columns, channels = np.unravel_index(permutation, shape)
    parity = (rows + columns + channels) % 2
    assert np.all(parity[:first] == 0) and np.all(parity[first:] == 1)
    assert np.all(np.diff(permutation[:first]) > 0) and np.all(np.diff(permutation[first:]) > 0)
    if shape == (28, 28, 1):  # the spatial checkerboard of the MNIST-only versions
        r, c = np.divmod(np.arange(784), 28)
        even = (r + c) % 2 == 0
        np.testing.assert_array_equal(permutation, np.concatenate([np.flatnonzero(even), np.flatnonzero(~even)]))


@pytest.mark.parametrize("shape,halves", [((28, 28, 1), (392, 392)), ((10, 14, 3), (210, 210)),
                                          ((5, 5, 1), (13, 12))])
def test_realnvp_coupling_networks_are_sized_from_the_halves(shape, halves):
    model = build("realnvp", shape, coupling_layers=3)
    first, second = halves
    assert (model.num_values, model.first_half) == (first + second, first)
    for i, network in enumerate(model.coupling_networks):
        conditioning, transformed = (first, second) if i % 2 == 0 else (second, first)
        assert network.hidden_0.kernel.shape == (conditioning, 8)
        assert network.output_layer.kernel.shape == (8, 2 * transformed)
        assert network.log_scale_factor.shape == (transformed,)
    rebuilt = type(model).from_config(model.get_config())  # the shape travels in the config
    assert rebuilt.data_shape == shape
    assert [v.shape for v in rebuilt.variables] == [v.shape for v in model.variables]


def randomize(model, seed: int = 0) -> None:
    """Couplings far from the identity (their output layers start at zero)."""
    rng = np.random.default_rng(seed)
    for variable in model.trainable_variables:
        variable.assign(rng.normal(0.0, 0.2, variable.shape).astype(np.float32))


@pytest.mark.parametrize("shape", [(10, 14, 3), (5, 5, 1)], ids=["image10x14x3", "odd5x5x1"])
def test_realnvp_trains_imputes_and_inverts_on_the_image_shape(shape):
    model = build("realnvp", shape)
    num_values = int(np.prod(shape))
    values, mask, _ = train_and_impute(model, shape)

    bits = model.bits_per_dim(values)
    assert bits.shape == (10,) and np.all(np.isfinite(bits))
    # bits/dim is over D values: -log p / (D ln 2) + 8 for the same dequantisation draws.
    seed = tf.constant([3, 4])
    noise = tf.random.stateless_uniform(values.shape, seed)
    log_prob = model.log_prob(model.dequantize(tf.constant(values), noise)).numpy()
    np.testing.assert_allclose(model.bits_per_dim_batch(tf.constant(values), seed).numpy(),
                               -log_prob / (num_values * np.log(2)) + 8, rtol=1e-6)

    randomize(model)
    full = lambda: tfb.Chain([model.logit_transform(), model.flow()])  # fresh: no bijector cache
    z = tf.random.stateless_normal([3, num_values], [0, 1])
    x = full().forward(z)
    assert x.shape == (3, num_values)
    np.testing.assert_allclose(full().inverse(x).numpy(), z.numpy(), atol=2e-4)
    inside = tf.random.stateless_uniform([3, num_values], [0, 2], minval=0.05, maxval=0.95)
    np.testing.assert_allclose(full().forward(full().inverse(inside)).numpy(), inside.numpy(), atol=1e-5)

    images = tf.reshape(inside, [3, *shape])
    log_prob = model.log_prob(images).numpy()
    assert log_prob.shape == (3,) and np.all(np.isfinite(log_prob))
    samples = model.sample(tf.constant(4), tf.constant([0, 5])).numpy()
    assert samples.shape == (4, *shape) and np.all((samples >= 0) & (samples <= 1))
    imputed = model.impute(values * mask, mask)
    assert imputed.shape == values.shape and np.all(np.isfinite(imputed))
    np.testing.assert_array_equal(imputed[mask > 0], values[mask > 0])


def test_realnvp_log_density_is_the_change_of_variables_with_unequal_halves():
    """D = 25 (halves 13 and 12): the one-pass log-determinant equals slogdet of the Jacobian."""
    model = build("realnvp", (5, 5, 1), coupling_layers=3)
    randomize(model, seed=1)
    images = tf.random.stateless_uniform([2, 25], [0, 3], minval=0.05, maxval=0.95)
    with tf.GradientTape() as tape:
        tape.watch(images)
        z = tfb.Chain([model.logit_transform(), model.flow()]).inverse(images)
    jacobian = tape.batch_jacobian(z, images, experimental_use_pfor=True).numpy().astype(np.float64)
    sign, log_det = np.linalg.slogdet(jacobian)
    assert np.all(sign != 0)
    base = tfp.distributions.Normal(0.0, 1.0).log_prob(z).numpy().sum(axis=1)
    np.testing.assert_allclose(model.log_prob(tf.reshape(images, [2, 5, 5, 1])).numpy(), base + log_det, rtol=1e-4)
    # ... and equals the stock tfb.RealNVP with the same unequal split.
    stock = tfb.Chain([tfb.Invert(tfb.Permute(model.permutation)), *[
        tfb.RealNVP(num_masked=13 if i % 2 == 0 else -12, shift_and_log_scale_fn=n.shift_and_log_scale)
        for i, n in enumerate(model.coupling_networks)]])
    stock_distribution = tfp.distributions.TransformedDistribution(
        model.base_distribution(), tfb.Chain([model.logit_transform(), stock]))
    np.testing.assert_allclose(model.distribution().log_prob(images).numpy(),
                               stock_distribution.log_prob(images).numpy(), rtol=1e-6)


def test_realnvp_refuses_vectors_and_single_values():
    spec = registry.get("realnvp")
    with pytest.raises(ValueError, match=r"images \[H, W, C\] only"):
        spec.cls(name="realnvp", data_shape=(13,), **spec.fixed, **spec.cls.tiny_settings)
    with pytest.raises(ValueError, match="at least 2 values"):
        spec.cls(name="realnvp", data_shape=(1, 1, 1), **spec.fixed, **spec.cls.tiny_settings)
