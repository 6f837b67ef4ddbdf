"""The VAE (seed 002, §1): KL and ELBO against hand and numerical computation, imputation, training."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import integrate, stats

from tfimpute import experiment, masks, workdir
from tfimpute.data import Mnist
from tfimpute.models import registry
from tfimpute.models.vae import VAE, gaussian_kl
from tfimpute.training import ArrayTestSplit, TrainingOptions, run_training
from zoo_support import tiny_model

OPTIONS = TrainingOptions(epochs=2, batch_size=16, seed=0, eval_size=20, grid_size=4)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def digits(n=6, seed=1, rate=0.4):
    rng = np.random.default_rng(seed)
    images = (rng.random((n, 28, 28, 1)) < 0.3).astype(np.float32)
    mask = (rng.random((n, 28, 28, 1)) >= rate).astype(np.float32)
    return images, mask


def randomized_vae(seed=0, **kwargs):
    """A small VAE whose weights (biases included) are all non-trivial."""
    model = VAE(latent_dim=3, vae_hidden_units=[5], seed=seed, **kwargs)
    rng = np.random.default_rng(seed)
    for variable in model.trainable_variables:
        variable.assign(rng.normal(0.0, 0.3, variable.shape).astype(np.float32))
    return model


@pytest.mark.parametrize("mean,variance", [(0.0, 1.0), (0.0, 2.0), (1.5, 0.3), (-2.0, 4.0)])
def test_kl_matches_numerical_integral(mean, variance):
    q, p = stats.norm(mean, np.sqrt(variance)), stats.norm(0.0, 1.0)
    numerical, _ = integrate.quad(lambda z: q.pdf(z) * (q.logpdf(z) - p.logpdf(z)), -30, 30)
    closed_form = gaussian_kl(tf.constant([[mean]]), tf.constant([[np.log(variance)]], tf.float32))
    np.testing.assert_allclose(closed_form.numpy()[0], numerical, rtol=1e-5, atol=1e-6)


def test_kl_sums_over_latent_dimensions():
    mean, log_variance = np.array([[0.5, -1.0, 2.0]]), np.array([[0.1, -0.7, 1.2]])
    per_dimension = [gaussian_kl(tf.constant(mean[:, i:i + 1], tf.float32),
                                 tf.constant(log_variance[:, i:i + 1], tf.float32)).numpy()[0]
                     for i in range(3)]
    total = gaussian_kl(tf.constant(mean, tf.float32), tf.constant(log_variance, tf.float32)).numpy()[0]
    np.testing.assert_allclose(total, sum(per_dimension), rtol=1e-6)


def test_elbo_of_a_fixed_toy_model_by_hand():
    # Encoder: constant q(z | x) = N((1, -2), diag(1, 4)); decoder: every pixel p = 0.5.
    model = VAE(latent_dim=2, vae_hidden_units=[4])
    for variable in model.trainable_variables:
        variable.assign(tf.zeros_like(variable))
    model.encoder.layers[-1].bias.assign([1.0, -2.0, 0.0, np.log(4.0)])
    images, mask = digits(n=3)
    terms = model.neg_elbo_terms(tf.constant(images * mask), tf.constant(mask), tf.constant([0, 0]))
    # KL = ½[(1 + 1 - 1 - 0) + (4 + 4 - 1 - ln 4)]; -log p(x_o | z) = (#observed) ln 2.
    kl = 0.5 * (1.0 + 7.0 - np.log(4.0))
    expected = mask.reshape(3, -1).sum(axis=1) * np.log(2.0) + kl
    np.testing.assert_allclose(terms["kl"].numpy(), [kl] * 3, rtol=1e-6)
    np.testing.assert_allclose(terms["neg_elbo"].numpy(), expected, rtol=1e-6)


def test_elbo_matches_a_numpy_transcription_with_reparameterisation():
    model = randomized_vae()
    images, mask = digits()
    seed = tf.constant([3, 4])
    terms = model.neg_elbo_terms(tf.constant(images * mask), tf.constant(mask), seed)

    w = [v.numpy().astype(np.float64) for v in model.trainable_variables]  # enc h, enc out, dec h, dec out
    x, m = (images * mask).reshape(6, -1), mask.reshape(6, -1)
    encoded = np.maximum(np.concatenate([x, m], axis=1) @ w[0] + w[1], 0.0) @ w[2] + w[3]
    mean, log_variance = encoded[:, :3], encoded[:, 3:]
    epsilon = tf.random.stateless_normal([6, 3], seed).numpy()
    z = mean + np.exp(0.5 * log_variance) * epsilon
    p = sigmoid(np.maximum(z @ w[4] + w[5], 0.0) @ w[6] + w[7])
    log_likelihood = (m * (x * np.log(p) + (1 - x) * np.log(1 - p))).sum(axis=1)
    kl = 0.5 * (np.exp(log_variance) + mean ** 2 - 1 - log_variance).sum(axis=1)
    np.testing.assert_allclose(terms["neg_elbo"].numpy(), kl - log_likelihood, rtol=1e-4)


def test_missing_pixels_do_not_reach_the_elbo():
    model = randomized_vae()
    images, mask = digits()
    altered = np.where(mask > 0, images, 1.0 - images)
    seed = tf.constant([1, 2])
    a = model.neg_elbo_terms(tf.constant(images), tf.constant(mask), seed)["neg_elbo"]
    b = model.neg_elbo_terms(tf.constant(altered), tf.constant(mask), seed)["neg_elbo"]
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_importance_imputation_matches_explicit_self_normalised_weights():
    model = randomized_vae()
    images, mask = digits(n=4)
    seed = tf.constant([7, 8])
    imputed = model.importance_impute(tf.constant(images * mask), tf.constant(mask), seed, num_samples=5)

    mean, log_variance = (t.numpy().astype(np.float64) for t in model.encode(images * mask, mask))
    x, m = (images * mask).reshape(4, -1), mask.reshape(4, -1)
    log_weights, fills = [], []
    for k in range(5):
        epsilon = tf.random.stateless_normal(
            [4, 3], tf.random.experimental.stateless_fold_in(seed, k)).numpy()
        z = mean + np.exp(0.5 * log_variance) * epsilon
        p = np.clip(model.decode(tf.constant(z, tf.float32)).numpy().reshape(4, -1).astype(np.float64),
                    1e-12, 1 - 1e-12)
        log_weights.append((m * (x * np.log(p) + (1 - x) * np.log(1 - p))).sum(1)
                           + stats.norm.logpdf(z).sum(1)
                           - stats.norm.logpdf(z, mean, np.exp(0.5 * log_variance)).sum(1))
        fills.append(p)
    weights = np.exp(np.array(log_weights) - np.max(log_weights, axis=0))
    weights /= weights.sum(axis=0)
    expected = np.where(m > 0, x, np.einsum("kb,kbp->bp", weights, np.array(fills)))
    np.testing.assert_allclose(imputed.numpy().reshape(4, -1), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["importance", "pseudo_gibbs"])
def test_imputation_keeps_observed_pixels_and_is_reproducible(mode):
    model = randomized_vae(vae_impute_mode=mode, vae_impute_samples=4, vae_gibbs_steps=3)
    images, mask = digits()
    first = model.impute(images * mask, mask, seed=5)
    np.testing.assert_array_equal(first[mask > 0], images[mask > 0])
    assert 0.0 <= first.min() and first.max() <= 1.0
    np.testing.assert_array_equal(first, model.impute(images * mask, mask, seed=5))


def test_config_round_trip_rebuilds_the_initial_weights():
    model = VAE(latent_dim=2, vae_hidden_units=[6, 4], seed=3)
    rebuilt = VAE.from_config(model.get_config())
    for a, b in zip(model.get_weights(), rebuilt.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert model.sample(tf.constant(3), tf.constant([0, 1])).shape == (3, 28, 28, 1)


def test_training_ignores_missing_values_and_writes_curves_samples_and_manifold(tmp_path):
    images, mask = digits(n=70, seed=2, rate=0.5)
    zeroed = masks.make_incomplete(images[:50], mask[:50])
    # The model itself receives other values (flipped, not zeroed) in the missing pixels.
    altered = masks.IncompleteData(observed=np.where(mask[:50] > 0, images[:50], 1.0 - images[:50]),
                                   mask=mask[:50])
    assert np.any(altered.observed != zeroed.observed)
    models = []
    for name, train_data in (("a", zeroed), ("b", altered)):
        model = VAE(latent_dim=2, vae_hidden_units=[8], vae_impute_samples=3, seed=1)
        model.compile(optimizer=keras.optimizers.Adam(1e-2))
        run_training(model, train_data, ArrayTestSplit(images[50:], mask[50:]), str(tmp_path / name), OPTIONS, {})
        models.append(model)
    for a, b in zip(models[0].get_weights(), models[1].get_weights()):
        np.testing.assert_array_equal(a, b)
    for name in ("curves.png", "manifold.png", "samples_epoch_000.png", "samples_epoch_001.png",
                 "samples_epoch_002.png"):
        assert os.path.getsize(tmp_path / "a" / name) > 0, name
    with open(tmp_path / "a" / "curves.json") as f:
        curves = json.load(f)
    assert sorted(curves) == ["1", "2"]
    assert set(curves["2"]) == {"train", "validation neg_elbo", "validation neg_elbo_observed_pixels"}

    with open(tmp_path / "a" / "config.json", "w") as f:
        json.dump({"model": "vae", "model_config": models[0].get_config()}, f)
    restored, _ = workdir.load_trained(str(tmp_path / "a"))
    for a, b in zip(models[0].get_weights(), restored.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_train_cli_function_with_binarised_complete_data_and_resume(tmp_path):
    rng = np.random.default_rng(0)
    mnist = Mnist(train_images=rng.random((64, 28, 28, 1)).astype(np.float32),
                  train_labels=np.zeros(64, np.int64),
                  test_images=rng.random((16, 28, 28, 1)).astype(np.float32),
                  test_labels=np.zeros(16, np.int64))
    data = {"train_size": 64, "test_size": 16, "missingness": "independent", "missing_rate": 0.6,
            "mask_seed": 0, "num_patches": 8, "binarize": True, "complete_training_data": True}
    settings = {"latent_dim": 2, "vae_hidden_units": ["8"], "vae_impute_samples": 2, "seed": 0,
                "learning_rate": 1e-3, "momentum": 0.0, "optimizer": None}  # None: the model's default
    options = TrainingOptions(epochs=1, batch_size=32, eval_size=8, grid_size=4)
    workdir = str(tmp_path / "run")
    result = experiment.train("vae", mnist, data, settings, options, workdir)
    assert result["epochs"] == 1 and result["train_missing_fraction"] == 0.0
    assert result["binarize"] is True and 0.5 < result["test_missing_fraction"] < 0.7
    with open(os.path.join(workdir, "config.json")) as f:
        config = json.load(f)
    assert config["model_config"]["optimizer"] == "adam" and config["model_config"]["vae_hidden_units"] == [8]
    resumed = experiment.train("vae", mnist, data, settings, TrainingOptions(**{**options.__dict__, "epochs": 2}),
                          workdir)
    assert resumed["epochs"] == 2


RBM_SETTINGS = {"hidden_units": 4, "rank": "full", "impute_mode": "mean_field", "seed": 0,
                "learning_rate": 1e-3, "momentum": 0.0, "optimizer": None}


@pytest.mark.parametrize("name,settings,optimizer", [
    ("vae", {"latent_dim": 2, "vae_hidden_units": [4], "learning_rate": 1e-3, "momentum": 0.0},
     keras.optimizers.Adam),
    ("rbm", RBM_SETTINGS, keras.optimizers.SGD),
    ("vae", {"latent_dim": 2, "vae_hidden_units": [4], "learning_rate": 1e-3, "momentum": 0.0,
             "optimizer": "sgd"}, keras.optimizers.SGD),
])
def test_each_model_compiles_with_its_default_optimizer(name, settings, optimizer):
    model = registry.get(name).build(settings)
    model.compile()
    assert type(model.optimizer) is optimizer
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-3)


def test_rbms_default_to_sgd_and_resume(tmp_path):
    """The RBM's optimizer settings are model settings (SGD by default); a resumed run restores them."""
    rng = np.random.default_rng(0)
    mnist = Mnist(train_images=rng.random((32, 28, 28, 1)).astype(np.float32), train_labels=np.zeros(32, np.int64),
                  test_images=rng.random((8, 28, 28, 1)).astype(np.float32), test_labels=np.zeros(8, np.int64))
    data = {"train_size": 32, "test_size": 8, "missingness": "independent", "missing_rate": 0.6,
            "mask_seed": 0, "num_patches": 8}
    options = TrainingOptions(epochs=1, batch_size=16, eval_size=8, grid_size=4)
    experiment.train("rbm", mnist, data, RBM_SETTINGS, options, str(tmp_path))
    with open(tmp_path / "config.json") as f:
        config = json.load(f)
    assert config["model_config"]["optimizer"] == "sgd" and config["training"] == {"batch_size": 16, "seed": 0}
    resumed = experiment.train("rbm", mnist, data, RBM_SETTINGS, TrainingOptions(**{**options.__dict__, "epochs": 2}),
                          str(tmp_path))
    assert resumed["epochs"] == 2


@pytest.mark.parametrize("name", ["vae"])
def test_serving_signatures_are_the_published_ones(name):
    """The public serving API (README, "Export and serve"): a dropped signature or super() call fails here."""
    assert set(tiny_model(name).serving_signatures()) == {"serving_default", "impute_sample", "sample", "encode", "decode"}
