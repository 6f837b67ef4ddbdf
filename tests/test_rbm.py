"""The RBM against a NumPy transcription of Algorithm 1 of the LM-RBM paper."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfimpute.errors import InvalidInputError
from tfimpute.masks import IncompleteData
from tfimpute.models.base import make_optimizer
from tfimpute.models.rbm import RBM
from zoo_support import tiny_model


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def algorithm1_reference(b, c, w, lam, visible, missing, u_h, chain, linearized, chain_start=None):
    """Algorithm 1, line by line, one example at a time; m = 1 marks a MISSING unit (paper).
    ``chain``: the (u_v, u_h') draws of lines 4 and 5 for each Gibbs step (one for CD-1; k for
    CD-k, each step starting from the last hidden sample). ``chain_start`` (PCD): each example's
    persistent hidden state, where lines 4-5 start instead of line 3's sample.
    Returns Δb, Δc, ΔW and the chains' last hidden samples."""
    delta_b, delta_c, delta_w = np.zeros_like(b), np.zeros_like(c), np.zeros_like(w)
    ends = []
    for index, (v, m, uh) in enumerate(zip(visible, missing, u_h)):
        b_m = sigmoid(b) * m if linearized else np.zeros_like(b)        # line 3
        h = (uh < sigmoid((v * (1 - m) + b_m) @ w + c)).astype(np.float64)
        h_neg = h if chain_start is None else chain_start[index]
        for u_v, u_h2 in chain:
            v_neg = (u_v[index] < sigmoid(w @ h_neg + b)).astype(np.float64)                   # line 4
            h_neg = (u_h2[index] < sigmoid((v_neg * (1 - m) + b_m) @ w + c)).astype(np.float64)  # line 5
        delta_c += h - h_neg                                             # line 6
        delta_b += (v - v_neg) * (1 - m)
        delta_w += np.outer(v * (1 - m), h) - np.outer(v_neg * (1 - m), h_neg)  # line 7
        if linearized:
            delta_b += lam * b_m * (1 - sigmoid(b)) * (w @ (h - h_neg))  # line 8
            delta_w += np.outer(lam * b_m, h - h_neg)                    # line 9
        ends.append(h_neg)
    return delta_b, delta_c, delta_w, np.array(ends)


def reference_updates(model, v, obs, uniforms, linearized, chain_start=None):
    """:func:`algorithm1_reference` for ``model``'s parameters and the draws it used."""
    uniforms = [u.numpy().astype(np.float64) for u in uniforms]
    return algorithm1_reference(
        model.visible_bias.numpy().astype(np.float64), model.hidden_bias.numpy().astype(np.float64),
        model.kernel.numpy().astype(np.float64), model.observed_probability.numpy().astype(np.float64),
        v.astype(np.float64), 1 - obs, uniforms[0], list(zip(uniforms[1::2], uniforms[2::2])), linearized,
        chain_start)


def make_rbm(linearized, hidden=12, rank=None, seed=0, **settings):
    model = RBM(hidden_units=hidden, linearized=linearized, rank=rank, seed=seed, **settings)
    rng = np.random.default_rng(seed)
    # Non-trivial parameters so that every term of Algorithm 1 matters.
    model.visible_bias.assign(rng.normal(0, 1, 784).astype(np.float32))
    model.hidden_bias.assign(rng.normal(0, 1, hidden).astype(np.float32))
    if rank is None:
        model.kernel.assign(rng.normal(0, 0.3, (784, hidden)).astype(np.float32))
    model.observed_probability.assign(rng.uniform(0.2, 1.0, 784).astype(np.float32))
    return model


def batch(size=6, seed=1):
    rng = np.random.default_rng(seed)
    images = rng.random((size, 28, 28, 1)).astype(np.float32)
    mask = (rng.random((size, 28, 28, 1)) > 0.4).astype(np.float32)
    return images * mask, mask


@pytest.mark.parametrize("linearized", [True, False])
def test_cd1_updates_match_algorithm1(linearized):
    model = make_rbm(linearized)
    observed, mask = batch()
    v, obs = observed.reshape(-1, 784), mask.reshape(-1, 784)
    uniforms = model.cd_uniforms(len(v), step=7)
    assert len(uniforms) == 3
    updates = model.cd_updates(tf.constant(v), tf.constant(obs), uniforms)
    expected = reference_updates(model, v, obs, uniforms, linearized)
    for name, reference in zip(["visible_bias", "hidden_bias", "weight"], expected):
        np.testing.assert_allclose(updates[name].numpy(), reference, rtol=1e-4, atol=1e-4)
    # The LM terms really are present (or absent) in the visible-bias update.
    assert np.abs(expected[0]).max() > 0
    # recon_mse's parts: squared error of E[v | h] on the observed pixels only, and their count.
    w, b = model.kernel.numpy().astype(np.float64), model.visible_bias.numpy().astype(np.float64)
    c = model.hidden_bias.numpy().astype(np.float64)
    b_m = (sigmoid(b) * (1 - obs)) if linearized else 0.0
    h = (uniforms[0].numpy() < sigmoid((v * obs + b_m) @ w + c)).astype(np.float64)
    reconstruction = sigmoid(h @ w.T + b)
    expected_error = float((((v - reconstruction) * obs) ** 2).sum())
    assert float(updates["squared_error"]) == pytest.approx(expected_error, rel=1e-4)
    assert float(updates["observed_count"]) == obs.sum()


@pytest.mark.parametrize("linearized", [True, False])
def test_cd_k_updates_match_algorithm1_with_k_gibbs_steps(linearized):
    """CD-3: lines 4-5 three times from the last hidden sample; its first draws are CD-1's."""
    model = make_rbm(linearized)
    model.cd_steps = 3
    observed, mask = batch()
    v, obs = observed.reshape(-1, 784), mask.reshape(-1, 784)
    uniforms = model.cd_uniforms(len(v), step=7)
    assert len(uniforms) == 7
    cd1_model = make_rbm(linearized)
    for first, same in zip(uniforms[:3], cd1_model.cd_uniforms(len(v), step=7)):
        np.testing.assert_array_equal(first.numpy(), same.numpy())
    updates = model.cd_updates(tf.constant(v), tf.constant(obs), uniforms)
    expected = reference_updates(model, v, obs, uniforms, linearized)
    for name, reference in zip(["visible_bias", "hidden_bias", "weight"], expected):
        np.testing.assert_allclose(updates[name].numpy(), reference, rtol=1e-4, atol=1e-4)
    # Three steps end elsewhere than one: the chain really runs on.
    cd1 = reference_updates(model, v, obs, uniforms[:3], linearized)
    assert np.abs(cd1[2] - expected[2]).max() > 0.5


@pytest.mark.parametrize("linearized", [True, False])
def test_pcd_continues_each_rows_chain_from_the_last_step(linearized):
    """PCD-2 over two train steps against Algorithm 1 with the chains started from the persistent
    states: zeros at the first step, the first step's last hidden samples at the second; a batch
    smaller than the chains continues the first rows' chains and leaves the others."""
    model = make_rbm(linearized, cd_steps=2, persistent_chains=8)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01))
    observed, mask = batch()
    v, obs = observed.reshape(-1, 784), mask.reshape(-1, 784)
    step = tf.function(model.train_step)
    chains = np.zeros((8, 12))
    for iteration in range(2):
        before = [model.visible_bias.numpy(), model.hidden_bias.numpy(), model.kernel.numpy()]
        uniforms = model.cd_uniforms(6, step=iteration)
        *expected, ends = reference_updates(model, v, obs, uniforms, linearized, chain_start=chains[:6])
        from_data = reference_updates(model, v, obs, uniforms, linearized)  # CD-2: the chain from line 3
        step((tf.constant(observed), tf.constant(mask)))
        after = [model.visible_bias.numpy(), model.hidden_bias.numpy(), model.kernel.numpy()]
        for old, new, reference in zip(before, after, expected):
            np.testing.assert_allclose(new - old, 0.01 * reference, rtol=1e-4, atol=1e-5)
        chains[:6] = ends
        np.testing.assert_array_equal(model.chain_hidden.numpy(), chains)
    assert chains[:6].any() and not chains[6:].any()
    assert np.abs(from_data[2] - expected[2]).max() > 0.1  # the persistent start matters
    with pytest.raises(ValueError, match="--persistent_chains=8 is fewer than --batch_size=9"):
        model.check_batch_size(9)
    model.check_batch_size(8)


def test_weight_decay_shrinks_the_weights_and_leaves_the_biases():
    """SGD with decoupled weight decay λ: W ← W + η ΔW − η λ W, biases ← biases + η Δ."""
    observed, mask = batch()
    data = (tf.constant(observed), tf.constant(mask), tf.zeros([6], tf.int32))
    plain, decayed = make_rbm(True), make_rbm(True)
    plain.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01))
    decayed.compile(optimizer=make_optimizer("sgd", 0.01, weight_decay=0.5))
    kernel = plain.kernel.numpy()
    plain.train_step(data)
    decayed.train_step(data)
    np.testing.assert_allclose(decayed.kernel.numpy(), plain.kernel.numpy() - 0.01 * 0.5 * kernel, atol=1e-6)
    np.testing.assert_allclose(decayed.visible_bias.numpy(), plain.visible_bias.numpy(), atol=1e-6)
    np.testing.assert_allclose(decayed.hidden_bias.numpy(), plain.hidden_bias.numpy(), atol=1e-6)


def test_lm_terms_change_the_update():
    observed, mask = batch()
    v, obs = tf.constant(observed.reshape(-1, 784)), tf.constant(mask.reshape(-1, 784))
    lm, baseline = make_rbm(True), make_rbm(False)
    u = lm.cd_uniforms(6, step=0)
    difference = lm.cd_updates(v, obs, u)["weight"] - baseline.cd_updates(v, obs, u)["weight"]
    assert float(tf.reduce_max(tf.abs(difference))) > 0.1


@pytest.mark.parametrize("linearized", [True, False])
def test_train_step_applies_learning_rate_times_summed_update(linearized):
    model = make_rbm(linearized)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01))
    observed, mask = batch()
    before = [model.visible_bias.numpy(), model.hidden_bias.numpy(), model.kernel.numpy()]
    updates = model.cd_updates(tf.constant(observed.reshape(-1, 784)), tf.constant(mask.reshape(-1, 784)),
                               model.cd_uniforms(6, step=0))  # the draws of optimizer step 0
    tf.function(model.train_step)((tf.constant(observed), tf.constant(mask)))
    after = [model.visible_bias.numpy(), model.hidden_bias.numpy(), model.kernel.numpy()]
    for name, old, new in zip(["visible_bias", "hidden_bias", "weight"], before, after):
        np.testing.assert_allclose(new - old, 0.01 * updates[name].numpy(), rtol=1e-4, atol=1e-6)


def test_low_rank_factors_follow_the_chain_rule():
    model = make_rbm(True, rank=5)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.01))
    observed, mask = batch()
    a, b = model.factor_a.numpy(), model.factor_b.numpy()
    np.testing.assert_allclose(model.weight_matrix.numpy(), a @ b, rtol=1e-5)
    delta_w = model.cd_updates(tf.constant(observed.reshape(-1, 784)), tf.constant(mask.reshape(-1, 784)),
                               model.cd_uniforms(6, step=0))["weight"].numpy()
    model.train_step((tf.constant(observed), tf.constant(mask)))
    np.testing.assert_allclose(model.factor_a.numpy() - a, 0.01 * delta_w @ b.T, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(model.factor_b.numpy() - b, 0.01 * a.T @ delta_w, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("linearized", [True, False])
def test_mean_field_imputation_matches_numpy_and_keeps_observed(linearized):
    model = make_rbm(linearized)
    rng = np.random.default_rng(5)
    images = rng.random((4, 28, 28, 1)).astype(np.float32)
    mask = (rng.random((4, 28, 28, 1)) > 0.5).astype(np.float32)
    imputed = model.impute(images, mask)
    b, c, w = (x.numpy().astype(np.float64) for x in (model.visible_bias, model.hidden_bias, model.kernel))
    v, obs = images.reshape(4, 784), mask.reshape(4, 784)
    b_m = sigmoid(b) * (1 - obs) if linearized else 0.0
    hidden = sigmoid((v * obs + b_m) @ w + c)
    np.testing.assert_allclose(model.hidden(images, mask).numpy(), hidden, rtol=1e-4, atol=1e-5)
    reconstruction = sigmoid(hidden @ w.T + b).reshape(images.shape)
    np.testing.assert_array_equal(imputed[mask == 1], images[mask == 1])
    np.testing.assert_allclose(imputed[mask == 0], reconstruction[mask == 0], rtol=1e-4, atol=1e-5)


def test_gibbs_imputation_averages_the_clamped_chains_conditional_means():
    """--impute_mode=gibbs against NumPy: h ~ p(h | v_o) (LM energy, b_m), v' ~ p(v | h) on the
    missing units only, then p(h | v) of the completed v (no b_m: nothing is missing); E[v | h]
    averaged over the steps; the same stateless draws."""
    model = make_rbm(True, impute_mode="gibbs", gibbs_steps=2)
    observed, mask = batch()
    seed = tf.constant([3, 4], tf.int32)
    imputed = model.impute_batch(tf.constant(observed), tf.constant(mask), seed).numpy().reshape(6, 784)
    v, obs = observed.reshape(6, 784).astype(np.float64), mask.reshape(6, 784).astype(np.float64)
    w, b = model.kernel.numpy().astype(np.float64), model.visible_bias.numpy().astype(np.float64)
    c = model.hidden_bias.numpy().astype(np.float64)
    hidden = sigmoid((v * obs + sigmoid(b) * (1 - obs)) @ w + c)
    total = 0.0
    for step in range(2):
        step_seed = tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), tf.constant(step, tf.int64))
        hidden_seed, visible_seed = tf.unstack(tf.random.experimental.stateless_split(step_seed, 2))
        h = (tf.random.stateless_uniform(hidden.shape, hidden_seed).numpy() < hidden).astype(np.float64)
        mean = sigmoid(h @ w.T + b)
        total = total + mean
        sampled = (tf.random.stateless_uniform(mean.shape, visible_seed).numpy() < mean).astype(np.float64)
        hidden = sigmoid((v * obs + sampled * (1 - obs)) @ w + c)
    np.testing.assert_allclose(imputed, np.where(obs > 0, v, total / 2), rtol=1e-4, atol=1e-5)
    single_pass = model.impute_batch(tf.constant(observed), tf.constant(mask), seed, mode="mean_field")
    assert np.abs(imputed - single_pass.numpy().reshape(6, 784)).max() > 0.05
    with pytest.raises(ValueError, match="gibbs_steps must be >= 1"):
        RBM(hidden_units=4, gibbs_steps=0)


@pytest.mark.parametrize("linearized", [True, False])
def test_mean_field_steps_iterate_the_clamped_fixed_point(linearized):
    """--mean_field_steps against NumPy: the single pass (b_m only in the first p(h | v_o)), then
    each step p(h | v) of the completed v, v = σ(Wh + b) again; deterministic, observed kept."""
    model = make_rbm(linearized, mean_field_steps=2)
    observed, mask = batch()
    imputed = model.impute(observed, mask).reshape(6, 784)
    v, obs = observed.reshape(6, 784).astype(np.float64), mask.reshape(6, 784).astype(np.float64)
    w, b = model.kernel.numpy().astype(np.float64), model.visible_bias.numpy().astype(np.float64)
    c = model.hidden_bias.numpy().astype(np.float64)
    b_m = sigmoid(b) * (1 - obs) if linearized else 0.0
    mean = sigmoid(sigmoid((v * obs + b_m) @ w + c) @ w.T + b)
    single_pass = np.where(obs > 0, v, mean)
    for _ in range(2):
        mean = sigmoid(sigmoid((v * obs + mean * (1 - obs)) @ w + c) @ w.T + b)
    np.testing.assert_allclose(imputed, np.where(obs > 0, v, mean), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(make_rbm(linearized).impute(observed, mask).reshape(6, 784), single_pass,
                               rtol=1e-4, atol=1e-5)  # 0 steps: the paper's single pass
    assert np.abs(imputed - single_pass).max() > 0.05
    np.testing.assert_array_equal(model.impute(observed, mask, seed=7).reshape(6, 784), imputed)
    with pytest.raises(ValueError, match="mean_field_steps must be >= 0"):
        RBM(hidden_units=4, mean_field_steps=-1)


def test_missing_pixel_values_do_not_reach_the_model():
    model = make_rbm(True)
    rng = np.random.default_rng(2)
    images = rng.random((3, 28, 28, 1)).astype(np.float32)
    mask = (rng.random((3, 28, 28, 1)) > 0.5).astype(np.float32)
    altered = np.where(mask == 1, images, 1.0 - images)
    np.testing.assert_array_equal(model.impute(images, mask), model.impute(altered, mask))
    np.testing.assert_array_equal(model.hidden(images, mask).numpy(), model.hidden(altered, mask).numpy())


def test_sample_mode_is_reproducible_by_seed():
    model = make_rbm(True)
    observed, mask = batch()
    first = model.impute(observed, mask, seed=3)
    sampler = RBM.from_config({**model.get_config(), "impute_mode": "sample"})
    sampler.set_weights(model.get_weights())
    one, two, other = (sampler.impute(observed, mask, seed=s) for s in (3, 3, 4))
    np.testing.assert_array_equal(one, two)
    assert not np.array_equal(one, other) and not np.array_equal(one, first)
    np.testing.assert_array_equal(one[mask == 1], observed[mask == 1])


def test_sample_visible_mode_draws_binary_pixels_from_the_sampled_hidden_layers_means():
    """--impute_mode=sample_visible: the ``sample`` mode's E[v | h] (same h draws), then each missing
    pixel is 1 where U < E[v | h] with the U(0, 1) draws of fold_in(seed, 1)."""
    model = make_rbm(True)
    observed, mask = batch()
    seed = tf.constant([5, 6], tf.int32)
    means = model.impute_batch(tf.constant(observed), tf.constant(mask), seed, mode="sample").numpy()
    drawn = model.impute_batch(tf.constant(observed), tf.constant(mask), seed, mode="sample_visible").numpy()
    uniforms = tf.random.stateless_uniform(observed.shape, tf.random.experimental.stateless_fold_in(
        tf.cast(seed, tf.int64), 1)).numpy()
    np.testing.assert_array_equal(drawn, np.where(mask > 0, observed, (uniforms < means).astype(np.float32)))
    assert 0.2 < drawn[mask == 0].mean() < 0.8  # both values occur


def test_prepare_sets_lambda_and_visible_bias_from_observed_pixels_only():
    model = RBM(hidden_units=4)
    images = np.zeros((4, 28, 28, 1), np.float32)
    mask = np.ones_like(images)
    mask[:2, 0, 0] = 0           # pixel 0 observed in 2 of 4 digits
    images[2:, 0, 0] = 1.0        # ... and on in both of those
    model.prepare(IncompleteData(observed=images * mask, mask=mask))
    lam = model.observed_probability.numpy()
    assert lam[0] == pytest.approx(0.5) and lam[1] == pytest.approx(1.0)
    bias = model.visible_bias.numpy()
    assert bias[0] == pytest.approx(np.log(0.999 / 0.001), rel=1e-4)   # mean 1 clipped to 0.999
    assert bias[1] == pytest.approx(np.log(0.001 / 0.999), rel=1e-4)


def test_constructor_rejects_bad_settings():
    with pytest.raises(ValueError, match="hidden_units"):
        RBM(hidden_units=0)
    with pytest.raises(ValueError, match="rank"):
        RBM(hidden_units=8, rank=9)
    with pytest.raises(ValueError, match="impute_mode"):
        RBM(hidden_units=8, impute_mode="annealed")


def test_registry_rank_rule_of_thumb():
    from tfimpute.models import registry

    mask = np.zeros((10, 28, 28, 1), np.float32)
    mask.reshape(10, -1)[:, :314] = 1.0  # 314 observed pixels per digit: 784 x 0.4 (rounded)
    data = IncompleteData(observed=mask, mask=mask)
    settings = {"hidden_units": 64, "impute_mode": "mean_field", "seed": 0, "rank": "auto"}

    def build(name, settings):
        spec = registry.get(name)
        return spec.build(spec.cls.settings_for_data(settings, data))

    assert build("lmrbm", settings).rank == 64  # capped at the hidden layer size
    assert build("lmrbm", {**settings, "hidden_units": 4096}).rank == 314
    assert build("rbm", {**settings, "rank": "full"}).rank is None
    assert build("rbm", {**settings, "rank": "12"}).linearized is False
    with pytest.raises(InvalidInputError, match="--rank must be"):
        registry.get("rbm").build({"rank": "half"})


@pytest.mark.parametrize("name", ["lmrbm", "rbm"])
def test_serving_signatures_are_the_published_ones(name):
    """The public serving API (README, "Export and serve"): a dropped signature or super() call fails here."""
    assert set(tiny_model(name).serving_signatures()) == {"serving_default", "impute_sample", "hidden"}


def test_bernoulli_draws_one_exactly_when_the_uniform_is_below_the_probability():
    """Ties matter: a unit of probability 0 is never on, even for a uniform draw of exactly 0."""
    from tfimpute.models.rbm import _bernoulli

    drawn = _bernoulli(tf.constant([0.0, 0.5, 1.0, 0.3]), tf.constant([0.0, 0.5, 0.999, 0.2]))
    np.testing.assert_array_equal(drawn.numpy(), [0.0, 0.0, 1.0, 1.0])
