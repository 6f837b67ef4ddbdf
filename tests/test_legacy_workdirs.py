"""Workdirs written by tfimpute 0.1 (tests/fixtures/workdirs_v0_1) load, evaluate, export and resume.

0.1 stored some settings under other names (MisGAN's ``tau``, the VAE's ``hidden_units``, ...)
and the optimizer settings under ``training``; :func:`tfimpute.workdir.read_config` upgrades them.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from tfimpute import experiment, masks, metrics, savedmodel, workdir
from tfimpute.data import load_mnist
from tfimpute.signatures import DEFAULT_SIGNATURE
from tfimpute.training import TrainingOptions

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "workdirs_v0_1")
# The settings each fixture was trained with, as flags named them (tests/fixtures/README.md).
SETTINGS = {
    "lmrbm": {"hidden_units": 16, "rank": "auto", "learning_rate": 1e-3, "momentum": 0.5},
    "vae": {"latent_dim": 2, "vae_hidden_units": [8], "vae_impute_samples": 4},
    "misgan": {"latent_size": 4, "gan_width": 2, "imputer_units": 8, "misgan_tau": 0.1, "critic_steps": 2},
    # 0.1's GANs had no encoder and searched as published (what today's flags must say to match).
    "dcgan": {"latent_size": 4, "gan_width": 2, "search_steps": 3, "search_restarts": 2, "train_encoder": False,
              "latent_search": "published"},
    "realnvp": {"coupling_layers": 2, "coupling_hidden_units": 8, "coupling_hidden_layers": 1,
                "flow_impute_steps": 2, "flow_impute_step_size": 0.1, "flow_train_fill_steps": 1},
    "cgan": {"latent_size": 4, "gan_width": 2, "search_steps": 2, "search_restarts": 2, "search_temperature": 0.5,
             "train_encoder": False, "latent_search": "published"},
    "rbm": {"hidden_units": 8, "rank": "4", "impute_mode": "sample"},
    "mean": {},
}
TRAINED = sorted(name for name in SETTINGS if name != "mean")


@pytest.fixture(scope="module")
def mnist(mnist_dir):
    return load_mnist(mnist_dir, 64, 16)


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_a_0_1_workdir_loads_and_imputes_as_it_did(name, mnist):
    model, config = workdir.load_trained(os.path.join(FIXTURES, name))
    assert config["model"] == name and set(config["training"]) == {"batch_size", "seed"}
    data = config["data"]
    test_mask = masks.generate_masks(data["missingness"], data["missing_rate"], data["test_size"],
                                     data["mask_seed"] + 1, data["num_patches"])
    imputed = model.impute(mnist.test_images * test_mask, test_mask)
    np.testing.assert_array_equal(imputed[test_mask > 0.5], mnist.test_images[test_mask > 0.5])
    stored = workdir.read_config(os.path.join(FIXTURES, name))
    with open(os.path.join(FIXTURES, name, "metrics.json")) as f:
        recorded = json.load(f)["test_rmse"]
    # The model 0.1 trained imputes what 0.1 measured (same weights, same settings).
    assert metrics.missing_rmse(mnist.test_images, imputed, test_mask) == pytest.approx(recorded, rel=1e-5)
    assert stored["model_config"] == model.get_config()


def test_upgraded_configs_hold_the_optimizer_settings_and_new_names():
    lmrbm = workdir.read_config(os.path.join(FIXTURES, "lmrbm"))["model_config"]
    assert (lmrbm["optimizer"], lmrbm["learning_rate"], lmrbm["momentum"], lmrbm["rank"]) == ("sgd", 1e-3, 0.5, 16)
    misgan = workdir.read_config(os.path.join(FIXTURES, "misgan"))["model_config"]
    assert misgan["misgan_tau"] == 0.1 and misgan["gan_width"] == 2 and "tau" not in misgan
    vae = workdir.read_config(os.path.join(FIXTURES, "vae"))["model_config"]
    assert vae["vae_hidden_units"] == [8] and vae["optimizer"] == "adam"
    realnvp = workdir.read_config(os.path.join(FIXTURES, "realnvp"))["model_config"]
    assert (realnvp["coupling_hidden_units"], realnvp["coupling_hidden_layers"], realnvp["flow_impute_steps"],
            realnvp["flow_impute_step_size"], realnvp["flow_train_fill_steps"]) == (8, 1, 2, 0.1, 1)
    cgan = workdir.read_config(os.path.join(FIXTURES, "cgan"))["model_config"]
    assert cgan["gan_width"] == 2 and cgan["search_temperature"] == 0.5 and "momentum" not in cgan
    mean = workdir.read_config(os.path.join(FIXTURES, "mean"))
    assert mean["training"] == {"batch_size": 32, "seed": 0} and "learning_rate" not in mean["model_config"]


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_a_0_1_config_equals_what_today_writes_for_the_same_flags(name):
    """The upgraded 0.1 config is exactly the one today's code builds from the same flag values."""
    from tfimpute.models import registry

    stored = workdir.read_config(os.path.join(FIXTURES, name))["model_config"]
    spec = registry.get(name)
    settings = dict(SETTINGS[name])
    if settings.get("rank") == "auto":
        settings["rank"] = stored["rank"]  # resolved from the training data
    assert spec.build(settings).get_config() == stored


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_a_0_1_workdir_exports(name, tmp_path):
    model, _ = workdir.load_trained(os.path.join(FIXTURES, name))
    path = savedmodel.export_model(model, str(tmp_path), name)
    rng = np.random.default_rng(0)
    images = rng.random((2, 28, 28, 1)).astype(np.float32)
    mask = (rng.random((2, 28, 28, 1)) > 0.5).astype(np.float32)
    served = tf.saved_model.load(path).signatures[DEFAULT_SIGNATURE](images=images, mask=mask)["imputed"]
    expected = model.serving_signatures()[DEFAULT_SIGNATURE].function(images=images, mask=mask)["imputed"]
    np.testing.assert_allclose(served.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", TRAINED)
def test_a_0_1_workdir_resumes_training(name, mnist, tmp_path, capsys):
    run = str(tmp_path / name)
    shutil.copytree(os.path.join(FIXTURES, name), run)
    data = workdir.read_config(run)["data"]
    options = TrainingOptions(epochs=2, batch_size=32, eval_size=8, grid_size=4)
    result = experiment.train(name, mnist, data, SETTINGS[name], options, run)
    assert "ckpt-1: epoch 2, step 0" in capsys.readouterr().out  # resumed, not retrained
    assert result["epochs"] == 2
