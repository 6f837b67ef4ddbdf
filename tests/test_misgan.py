"""MisGAN and the shared GAN machinery."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from program_support import run_here
from tfimpute import callbacks, visualize
from tfimpute import workdir as workdir_module
from tfimpute.models import gan
from tfimpute.models.misgan import MisGAN
from zoo_support import tiny_model


def test_critic_step_with_gradient_penalty_matches_hand_computation():
    # A linear critic D(x) = w·x + b: its input gradient is w everywhere, so the
    # penalty is (|w| - 1)^2 and the loss gradient has a closed form.
    critic = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(1)])
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.1, (784, 1)).astype(np.float32)
    critic.layers[-1].set_weights([w, np.array([0.3], np.float32)])
    real = rng.random((4, 28, 28, 1)).astype(np.float32)
    fake = rng.random((4, 28, 28, 1)).astype(np.float32)
    eps = rng.random((4, 1, 1, 1)).astype(np.float32)
    optimizer = keras.optimizers.SGD(learning_rate=0.05)
    loss = gan.critic_step(critic, optimizer, tf.constant(real), tf.constant(fake), tf.constant(eps), 10.0)

    flat_w = w[:, 0].astype(np.float64)
    norm = np.linalg.norm(flat_w)
    real_mean, fake_mean = real.reshape(4, -1).mean(0), fake.reshape(4, -1).mean(0)
    expected_loss = fake_mean @ flat_w - real_mean @ flat_w + 10.0 * (norm - 1.0) ** 2
    expected_grad = fake_mean - real_mean + 10.0 * 2.0 * (norm - 1.0) * flat_w / norm
    assert float(loss) == pytest.approx(expected_loss, rel=1e-4)
    new_w, new_b = critic.layers[-1].get_weights()
    np.testing.assert_allclose(new_w[:, 0], flat_w - 0.05 * expected_grad, rtol=1e-4, atol=1e-6)
    assert new_b[0] == pytest.approx(0.3)  # the bias cancels in fake - real and in the penalty


def tiny_misgan(**overrides):
    settings = dict(latent_size=8, gan_width=2, imputer_units=16, critic_steps=2, seed=0)
    model = MisGAN(**{**settings, **overrides})
    model.compile()
    model.build_optimizers()
    return model


def incomplete_batch(seed=0):
    rng = np.random.default_rng(seed)
    images = rng.random((6, 28, 28, 1)).astype(np.float32)
    mask = (rng.random((6, 28, 28, 1)) > 0.3).astype(np.float32)
    return images, mask


def test_imputation_never_changes_observed_entries():
    model = tiny_misgan()
    images, mask = incomplete_batch()
    imputed = model.impute(images, mask, seed=1)
    np.testing.assert_array_equal(imputed[mask == 1], images[mask == 1])
    assert np.all((imputed >= 0) & (imputed <= 1))
    assert not np.array_equal(imputed, model.impute(images, mask, seed=2))  # the noise input matters
    np.testing.assert_array_equal(imputed, model.impute(images, mask, seed=1))


@pytest.mark.parametrize("critic_steps", [2, 3])
def test_generators_move_only_every_critic_steps_batches(critic_steps):
    model = tiny_misgan(critic_steps=critic_steps)
    images, mask = incomplete_batch()
    step = tf.function(model.train_step)
    batch = (tf.constant(images * mask), tf.constant(mask))
    generator_before = [w.numpy() for w in model.data_generator.weights]
    critic_before = [w.numpy() for w in model.data_critic.weights]
    for _ in range(critic_steps - 1):  # critic updates only
        logs = step(batch)
        for a, b in zip(generator_before, model.data_generator.weights):
            np.testing.assert_array_equal(a, b.numpy())
    assert set(logs) == {"data_critic_loss", "mask_critic_loss", "imputer_critic_loss"}
    assert all(np.isfinite(float(v)) for v in logs.values())
    assert any(not np.array_equal(a, b.numpy()) for a, b in zip(critic_before, model.data_critic.weights))
    step(batch)  # the critic_steps-th batch also updates the generators
    assert any(not np.array_equal(a, b.numpy()) for a, b in zip(generator_before, model.data_generator.weights))


def test_training_ignores_the_values_of_missing_pixels():
    images, mask = incomplete_batch()
    altered = np.where(mask == 1, images, 1.0 - images)
    weights = []
    for data in (images, altered):
        model = tiny_misgan()  # seeded: both models start from the same weights
        step = tf.function(model.train_step)
        for _ in range(2):  # the model gets the altered values themselves, not zeros
            step((tf.constant(data), tf.constant(mask)))
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


def test_same_seed_same_initial_weights():
    for a, b in zip(tiny_misgan().get_weights(), tiny_misgan().get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(tiny_misgan().get_weights()[0], tiny_misgan(seed=1).get_weights()[0])


def test_epoch_images_callback_writes_sample_grids(tmp_path):
    model = tiny_misgan()
    callback = callbacks.EpochImages(str(tmp_path))
    callback.set_model(model)
    callback.set_params({"epochs": 5})
    with tf.summary.create_file_writer(str(tmp_path / "tb")).as_default(step=1):
        callback.on_epoch_end(2)
    grid = np.asarray(Image.open(tmp_path / "samples_epoch_0003.png"))
    assert grid.shape[0] > grid.shape[1] / 4 and grid.std() > 0  # four rows of eight digits, not blank
    assert os.listdir(tmp_path / "tb")


def test_samples_and_masks_have_the_right_range():
    data, masks = tiny_misgan().sample(5, tf.constant([0, 1]))
    assert data.shape == masks.shape == (5, 28, 28, 1)
    assert float(tf.reduce_min(masks)) >= 0.0 and float(tf.reduce_max(masks)) <= 1.0


def test_interpolation_runs_from_one_latent_to_the_other():
    model = tiny_misgan()
    start, end = model.draw_latents(2, tf.constant([3, 0])).numpy()
    line = model.interpolate(tf.constant(start), tf.constant(end), steps=5).numpy()
    assert line.shape == (5, 28, 28, 1)
    np.testing.assert_allclose(line[0], model.generate(start[None]).numpy()[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(line[-1], model.generate(end[None]).numpy()[0], rtol=1e-5, atol=1e-6)
    middle = model.generate(((start + end) / 2)[None]).numpy()[0]
    np.testing.assert_allclose(line[2], middle, rtol=1e-5, atol=1e-6)


def test_gan_report_measures_misgan_samples_and_masks(mnist_dir, classifier_dir, tmp_path):
    workdir = str(tmp_path / "misgan")
    trained = run_here("tfimpute.train", "--model=misgan", f"--data_dir={mnist_dir}", "--missing_rate=0.3",
                       "--train_size=128", "--test_size=8", "--epochs=1", "--batch_size=32", "--latent_size=8",
                       "--gan_width=2", "--imputer_units=16", f"--workdir={workdir}")
    assert trained.returncode == 0, trained.stderr
    reported = run_here("tfimpute.gan_report", f"--workdir={workdir}", f"--classifier_dir={classifier_dir}",
                        "--samples=30", "--seed=4")
    assert reported.returncode == 0, reported.stderr
    result = json.loads(reported.stdout.strip().splitlines()[-1])
    assert result["model"] == "misgan" and sum(result["predicted_class_counts"]) == 30
    assert result["fid"] > 0 and len(result["interpolation_classes"]) == 9
    assert "class_accuracy" not in result
    # The missing fraction of the generated masks: 1 - mean of G_m's output over the same draws.
    model, _ = workdir_module.load_trained(workdir)
    _, masks = model.sample(30, tf.constant([4, 0]))
    assert result["generated_missing_fraction"] == pytest.approx(1.0 - float(tf.reduce_mean(masks)), abs=1e-6)
    for name in ("gan_report.json", "interpolation.png", "samples.png"):
        assert os.path.getsize(os.path.join(workdir, name)) > 0


def test_square_grid_places_image_k_in_row_k_mod_side():
    images = np.stack([np.full((28, 28, 1), k / 8, np.float32) for k in range(9)])
    grid = visualize.square_grid(images)
    assert grid.shape == (3 * 30 + 2, 3 * 30 + 2, 3)
    for k in range(9):
        top, left = 2 + (k % 3) * 30, 2 + (k // 3) * 30
        np.testing.assert_allclose(grid[top:top + 28, left:left + 28], k / 8)
    with pytest.raises(ValueError, match="square number of images, got 8"):
        visualize.square_grid(images[:8])


@pytest.mark.parametrize("name", ["misgan"])
def test_serving_signatures_are_the_published_ones(name):
    """The public serving API (README, "Export and serve"): a dropped signature or super() call fails here."""
    assert set(tiny_model(name).serving_signatures()) == {"serving_default", "impute_sample", "sample"}


def test_gradient_penalty_is_finite_for_a_critic_with_zero_input_gradient():
    """||∇D|| = 0 (a constant critic): the penalty is (0 − 1)² = 1 and the update stays finite."""
    critic = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                               keras.layers.Dense(1, kernel_initializer="zeros")])
    rng = np.random.default_rng(3)
    real, fake = (tf.constant(rng.random((3, 28, 28, 1)).astype(np.float32)) for _ in range(2))
    eps = tf.constant(rng.random((3, 1, 1, 1)).astype(np.float32))
    np.testing.assert_allclose(gan.gradient_penalty(critic, real, fake, eps).numpy(), 1.0, atol=1e-5)
    gan.critic_step(critic, keras.optimizers.SGD(0.1), real, fake, eps, 10.0)
    assert all(np.all(np.isfinite(w)) for w in critic.get_weights())


@pytest.mark.parametrize("bias,expected", [(10.0, 1.0), (-10.0, 0.0)])
def test_generated_masks_are_clipped_to_zero_one_when_saturated(bias, expected):
    """The fusion output stretches σ(x / T) to [−0.1, 1.1]; a saturated generator gives exactly 0 or 1."""
    model = tiny_misgan()
    kernel, _ = model.mask_generator.layers[-1].get_weights()
    model.mask_generator.layers[-1].set_weights([np.zeros_like(kernel), np.array([bias], np.float32)])
    masks = model.generate_masks(model.draw_latents(tf.constant(4), tf.constant([0, 0]))).numpy()
    np.testing.assert_array_equal(masks, np.full_like(masks, expected))
