"""DCGAN and CGAN: losses, AmbientGAN masking, conditioning and latent-search imputation."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from program_support import run_here
from tfimpute import callbacks, savedmodel, workdir
from tfimpute.errors import InvalidInputError, WorkdirError
from tfimpute.masks import make_incomplete
from tfimpute.models import gan
from tfimpute.models.cgan import CGAN
from tfimpute.models.dcgan import DCGAN
from zoo_support import tiny_model


def tiny(cls=DCGAN, **overrides):
    settings = dict(latent_size=6, gan_width=2, search_steps=5, search_restarts=3, seed=0, latent_search="published")
    model = cls(**{**settings, **overrides})
    model.compile()
    model.build_optimizers()
    return model


def batch(seed=0, size=6, missing=0.3):
    rng = np.random.default_rng(seed)
    images = rng.random((size, 28, 28, 1)).astype(np.float32)
    mask = (rng.random((size, 28, 28, 1)) > missing).astype(np.float32)
    labels = rng.integers(0, 10, size).astype(np.int32)
    return images, mask, labels


def test_losses_match_the_cross_entropy_formulas():
    real, fake = np.array([2.0, -1.0, 0.5], np.float32), np.array([-3.0, 0.2, 1.5], np.float32)
    sigmoid = lambda x: 1 / (1 + np.exp(-x.astype(np.float64)))
    expected_d = np.mean(-np.log(sigmoid(real)) - np.log(1 - sigmoid(fake)))
    expected_g = np.mean(-np.log(sigmoid(fake)))
    assert float(gan.discriminator_cross_entropy(tf.constant(real), tf.constant(fake))) == pytest.approx(expected_d, rel=1e-5)
    assert float(gan.non_saturating_generator_loss(tf.constant(fake))) == pytest.approx(expected_g, rel=1e-5)


def test_train_step_moves_both_players_and_logs_probabilities():
    model = tiny()
    images, mask, labels = batch()
    generator_before = [w.copy() for w in model.generator.get_weights()]
    discriminator_before = [w.copy() for w in model.discriminator.get_weights()]
    logs = model.train_step((tf.constant(images * mask), tf.constant(mask), tf.constant(labels)))
    assert 0 < float(logs["real_probability"]) < 1 and 0 < float(logs["fake_probability"]) < 1
    assert np.isfinite(float(logs["discriminator_loss"])) and np.isfinite(float(logs["generator_loss"]))
    assert any(not np.array_equal(a, b) for a, b in zip(generator_before, model.generator.get_weights()))
    assert any(not np.array_equal(a, b) for a, b in zip(discriminator_before, model.discriminator.get_weights()))
    assert int(model.training_step_counter) == 1


def test_ambient_training_never_sees_missing_values():
    """With the same masks, whatever the missing pixels hold, the update is identical."""
    images, mask, labels = batch(seed=3)
    garbage = np.where(mask > 0, images, np.random.default_rng(9).random(images.shape)).astype(np.float32)
    results = []
    for values in (images * mask, garbage):
        model = tiny()
        model.train_step((tf.constant(values), tf.constant(mask), tf.constant(labels)))
        results.append(model.get_weights())
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_discriminator_sees_generated_digits_through_the_real_masks():
    model = tiny()
    images, mask, labels = batch(seed=4)
    seen = []
    original = model.discriminate

    def recording(inputs, labels=None, training=False):
        seen.append(inputs.numpy())
        return original(inputs, labels, training)

    model.discriminate = recording
    model.train_step((tf.constant(images * mask), tf.constant(mask), tf.constant(labels)))
    real_seen, fake_seen = seen
    np.testing.assert_array_equal(real_seen[mask == 0], 0.0)
    np.testing.assert_array_equal(fake_seen[mask == 0], 0.0)  # generated pixels hidden where data is


def test_prepare_records_incomplete_data_and_cgan_needs_labels():
    images, mask, labels = batch()
    model = tiny()
    model.prepare(make_incomplete(images, np.ones_like(mask)))
    assert float(model.trained_on_incomplete) == 0.0
    model.prepare(make_incomplete(images, mask))
    assert float(model.trained_on_incomplete) == 1.0
    with pytest.raises(InvalidInputError, match="labels"):
        tiny(CGAN).prepare(make_incomplete(images, mask))
    tiny(CGAN).prepare(make_incomplete(images, mask, labels))


def test_latent_search_keeps_observed_pixels_and_is_independent_of_batching():
    model = tiny()
    images, mask, _ = batch(seed=5)
    imputed = model.impute(images, mask, seed=7)
    np.testing.assert_array_equal(imputed[mask == 1], images[mask == 1])
    assert np.all((imputed >= 0) & (imputed <= 1))
    # Digit i of a batch is searched from (seed, start + i): batching does not change it.
    np.testing.assert_allclose(model.impute(images, mask, seed=7, batch_size=2), imputed, atol=1e-6)
    assert not np.allclose(model.impute(images, mask, seed=8), imputed)


def test_latent_search_returns_the_restart_with_the_lowest_loss():
    """Against a brute-force NumPy choice: run the search, recompute every restart's eq. 5.13 loss."""
    model = tiny(search_steps=0, search_restarts=4)  # no Adam steps: the starts themselves compete
    images, mask, _ = batch(seed=6, size=3)
    seeds = model.row_seeds(tf.constant([2, 0]), 3)
    imputed = model.latent_search(tf.constant(images * mask), tf.constant(mask), seeds).numpy()
    for i in range(3):
        starts = model.draw_latents(tf.constant(4), seeds[i])
        generated = model.generate(starts).numpy()
        logits = model.discriminate(tf.constant(generated)).numpy().astype(np.float64)
        losses = (np.abs(mask[i] * (generated - images[i] * mask[i])).sum(axis=(1, 2, 3))
                  + 0.003 * np.log(1 - 1 / (1 + np.exp(-logits))))
        best = generated[np.argmin(losses)]
        np.testing.assert_allclose(imputed[i][mask[i] == 0], best[mask[i] == 0], atol=1e-6)


def test_positive_temperature_averages_the_restarts_by_their_losses():
    images, mask, _ = batch(seed=9, size=2)
    seeds = DCGAN.row_seeds(tf.constant([3, 0]), 2)
    model = tiny(search_steps=2, search_restarts=5, search_temperature=4.0)
    generated, losses = (x.numpy() for x in model.search(tf.constant(images * mask), tf.constant(mask), seeds))
    weights = np.exp(-(losses - losses.min(1, keepdims=True)) / 4.0)
    expected = np.einsum("br,brhwc->bhwc", weights / weights.sum(1, keepdims=True), generated)
    imputed = model.latent_search(tf.constant(images * mask), tf.constant(mask), seeds).numpy()
    np.testing.assert_allclose(imputed[mask == 0], expected[mask == 0], atol=1e-5)
    np.testing.assert_array_equal(imputed[mask == 1], images[mask == 1])


def test_search_settings_of_a_trained_workdir_may_change_but_nothing_else(tmp_path):
    config = {"model": "dcgan", "model_config": tiny().get_config(), "data": {"train_size": 10}}
    assert workdir.claim(str(tmp_path), config, DCGAN.inference_settings) == []
    adjusted = {**config, "model_config": {**config["model_config"], "search_steps": 50}}
    assert workdir.claim(str(tmp_path), adjusted, DCGAN.inference_settings) == [
        "model_config.search_steps: 5 in the workdir, 50 now"]
    assert workdir.read_config(str(tmp_path))["model_config"]["search_steps"] == 50
    widened = {**adjusted, "model_config": {**adjusted["model_config"], "gan_width": 4}}
    with pytest.raises(WorkdirError, match="model_config.gan_width: 2 in the workdir, 4 now"):
        workdir.claim(str(tmp_path), widened, DCGAN.inference_settings)


def test_latent_search_reduces_the_loss_and_fits_a_generated_digit():
    """Observed pixels of a digit the generator itself made: the search must approach it."""
    model = tiny(search_steps=60, search_restarts=4, search_learning_rate=0.1)
    target_latent = model.draw_latents(tf.constant(2), tf.constant([99, 0]))
    target = model.generate(target_latent).numpy()
    mask = (np.random.default_rng(0).random(target.shape) > 0.5).astype(np.float32)
    unsearched = tiny(search_steps=0, search_restarts=4).impute(target, mask)
    searched = model.impute(target, mask)
    error = lambda x: np.abs((x - target)[mask == 0]).mean()
    assert error(searched) < 0.7 * error(unsearched)


def test_cgan_conditions_on_labels():
    model = tiny(CGAN)
    images, mask, labels = batch(seed=7, size=4)
    logs = model.train_step((tf.constant(images * mask), tf.constant(mask), tf.constant(labels)))
    assert np.isfinite(float(logs["generator_loss"]))
    seed = tf.constant([1, 0])
    assert not np.allclose(model.generate_labelled(tf.constant([0, 0]), seed),
                           model.generate_labelled(tf.constant([5, 5]), seed))
    given = model.impute_with_labels(tf.constant(images * mask), tf.constant(mask), tf.constant(labels),
                                     tf.constant([0, 0])).numpy()
    np.testing.assert_array_equal(given[mask == 1], (images * mask)[mask == 1])
    assert model.class_grid().shape == (10 * 30 + 2, 10 * 30 + 2, 3)  # 10 classes x 10 latents


def test_epoch_images_callback_writes_sample_grids(tmp_path):
    for cls in (DCGAN, CGAN):
        model = tiny(cls)
        writer = tf.summary.create_file_writer(str(tmp_path / cls.__name__))
        callback = callbacks.EpochImages(str(tmp_path))
        callback.set_model(model)
        callback.set_params({"epochs": 10})
        with writer.as_default(step=1):
            callback.on_epoch_end(2)
        assert os.path.getsize(tmp_path / "samples_epoch_0003.png") > 0
        os.remove(tmp_path / "samples_epoch_0003.png")


def test_cgan_interpolation_moves_latent_and_label_together():
    model = tiny(CGAN)
    start, end = model.draw_latents(tf.constant(2), tf.constant([5, 0])).numpy()
    line = model.interpolate(tf.constant(start), tf.constant(end), 3, 7, steps=5).numpy()
    np.testing.assert_allclose(line[0], model.generate(start[None], tf.constant([3])).numpy()[0], atol=1e-6)
    np.testing.assert_allclose(line[-1], model.generate(end[None], tf.constant([7])).numpy()[0], atol=1e-6)
    halfway = 0.5 * (tf.one_hot([3], 10) + tf.one_hot([7], 10))
    np.testing.assert_allclose(line[2], model.generate_from_condition(((start + end) / 2)[None], halfway).numpy()[0],
                               atol=1e-6)


def test_cgan_signatures_check_labels_and_match_the_model(tmp_path):
    model = tiny(CGAN)
    signatures = tf.saved_model.load(savedmodel.export_model(model, str(tmp_path), "cgan")).signatures
    images, mask, labels = batch(seed=8, size=3)
    served = signatures["generate"](labels=tf.constant(labels[:3]), seed=tf.constant([4, 5, 6]))["images"]
    np.testing.assert_allclose(served[1], model.generate_labelled(tf.constant(labels[1:2]), tf.constant([5, 0]))[0],
                               atol=1e-5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="classes 0..9"):
        signatures["generate"](labels=tf.constant([3, 10, 1]), seed=tf.constant([4, 5, 6]))
    imputed = signatures["impute_sample"](images=tf.constant(images), mask=tf.constant(mask),
                                          seed=tf.constant([4, 5, 6]))["imputed"]
    np.testing.assert_allclose(imputed[2], model.impute(images[2:3], mask[2:3], seed=6)[0], atol=1e-5)
    given = signatures["impute_with_labels"](images=tf.constant(images), mask=tf.constant(mask),
                                             labels=tf.constant(labels), seed=tf.constant([4, 5, 6]))["imputed"]
    np.testing.assert_allclose(given[1], model.impute_with_labels(images[1:2], mask[1:2], labels[1:2],
                                                                  tf.constant([5, 0]))[0], atol=1e-5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="classes 0..9"):
        model.impute_with_labels(images, mask, np.array([1, -1, 2], np.int32), tf.constant([0, 0]))


def test_train_and_gan_report_end_to_end(mnist_dir, classifier_dir, tmp_path):
    workdir = str(tmp_path / "cgan")
    trained = run_here("tfimpute.train", "--model=cgan", "--complete_training_data", f"--data_dir={mnist_dir}",
                       "--train_size=256", "--test_size=8", "--eval_size=4", "--epochs=1", "--latent_size=6",
                       "--gan_width=2", "--encoder_search_steps=2", "--encoder_search_restarts=2",
                       f"--workdir={workdir}")
    assert trained.returncode == 0, trained.stderr
    assert json.loads(trained.stdout.strip().splitlines()[-1])["train_missing_fraction"] == 0.0
    assert os.path.getsize(os.path.join(workdir, "samples_epoch_0001.png")) > 0

    reported = run_here("tfimpute.gan_report", f"--workdir={workdir}", f"--classifier_dir={classifier_dir}",
                        "--samples=40")
    assert reported.returncode == 0, reported.stderr
    result = json.loads(reported.stdout.strip().splitlines()[-1])
    assert result["model"] == "cgan" and sum(result["predicted_class_counts"]) == 40
    assert len(result["class_accuracy_per_class"]) == 10  # 4 samples of each class
    assert 0 <= result["class_accuracy"] <= 1
    assert result["fid"] > 0 and len(result["interpolation_classes"]) == 9
    for name in ("gan_report.json", "interpolation.png", "samples.png"):
        assert os.path.getsize(os.path.join(workdir, name)) > 0

    not_a_gan = run_here("tfimpute.train", "--model=mean", f"--data_dir={mnist_dir}", "--train_size=64",
                         "--test_size=8", f"--workdir={tmp_path / 'mean'}")
    assert not_a_gan.returncode == 0, not_a_gan.stderr
    refused = run_here("tfimpute.gan_report", f"--workdir={tmp_path / 'mean'}", f"--classifier_dir={classifier_dir}")
    assert refused.returncode == 2 and "holds a mean model" in refused.stderr
    no_classifier = run_here("tfimpute.gan_report", f"--workdir={workdir}", env={"TFIMPUTE_CLASSIFIER_DIR": ""})
    assert no_classifier.returncode == 2 and "--classifier_dir" in no_classifier.stderr


def test_bench_times_training_and_the_latent_search():
    result = run_here("tfimpute.bench", "--model=cgan", "--latent_size=4", "--gan_width=2", "--batch_size=8",
                      "--steps=2", "--warmup_steps=1", "--search_benchmark", "--search_batch=3",
                      "--encoder_search_restarts=2", "--encoder_search_steps=3")
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["samples_per_sec"] > 0 and figures["search_seconds"] > 0
    assert (figures["search_digits"], figures["latent_search"], figures["search_restarts"],
            figures["search_steps"]) == (3, "encoder", 2, 3)
    refused = run_here("tfimpute.bench", "--model=vae", "--search_benchmark", "--steps=1")
    assert refused.returncode == 2 and "vae has no extra benchmark (cgan, dcgan have one)" in refused.stderr


def test_dcgan_trains_on_complete_digits_unless_a_missingness_flag_is_given(mnist_dir, tmp_path):
    tiny_run = ["--model=dcgan", f"--data_dir={mnist_dir}", "--train_size=128", "--test_size=4", "--epochs=1",
                "--latent_size=4", "--gan_width=2", "--search_steps=1", "--search_restarts=1",
                "--encoder_search_steps=1", "--encoder_search_restarts=1"]
    complete = run_here("tfimpute.train", *tiny_run, f"--workdir={tmp_path / 'complete'}")
    assert complete.returncode == 0, complete.stderr
    assert "training on complete images" in complete.stdout
    assert json.loads(complete.stdout.strip().splitlines()[-1])["train_missing_fraction"] == 0.0
    ambient = run_here("tfimpute.train", *tiny_run, "--missing_rate=0.3", f"--workdir={tmp_path / 'ambient'}")
    assert ambient.returncode == 0, ambient.stderr
    assert "incomplete images (AmbientGAN)" in ambient.stdout
    assert json.loads(ambient.stdout.strip().splitlines()[-1])["train_missing_fraction"] == pytest.approx(0.3, abs=0.01)
    refused = run_here("tfimpute.train", *tiny_run, "--optimizer=sgd", f"--workdir={tmp_path / 'sgd'}")
    assert refused.returncode == 2 and "--optimizer does not apply to dcgan" in refused.stderr


def test_evaluate_trains_and_scores_an_ambient_dcgan_cell(mnist_dir, classifier_dir, tmp_path):
    result = run_here("tfimpute.evaluate", "--methods=dcgan", "--missingness=square", "--missing_rates=0.6",
                      f"--data_dir={mnist_dir}", f"--workdir={tmp_path}", f"--classifier_dir={classifier_dir}",
                      "--train_size=200", "--test_size=20", "--repeats=1", "--epochs=1", "--latent_size=4",
                      "--gan_width=2", "--encoder_search_steps=2", "--encoder_search_restarts=2")
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "results.json") as f:
        cell = json.load(f)["cells"]["dcgan_square_0.6"]
    assert 0 < cell["rmse"]["mean"] < 1 and cell["fid"]["mean"] > 0
    data = cell["model"]["config"]["data"]
    assert data["missingness"] == "square" and "complete_training_data" not in data  # AmbientGAN training


def test_serving_signatures_are_the_published_ones():
    """The public serving API (README, "Export and serve"): a dropped signature or super() call fails here."""
    dcgan = {"serving_default", "impute_sample", "sample"}
    assert set(tiny_model("dcgan").serving_signatures()) == dcgan
    assert set(tiny_model("cgan").serving_signatures()) == dcgan | {"impute_with_labels", "generate"}


# -- the fast search: an encoder that inverts the generator --------------------------------------

def test_random_encoder_masks_hide_all_channels_of_a_pixel_at_rates_up_to_0_95():
    from tfimpute.models.dcgan import random_masks
    from tfimpute.models.replicas import StepDraws

    drawn = random_masks(StepDraws(0, 7, 400), (10, 12, 3)).numpy()
    assert set(np.unique(drawn)) <= {0.0, 1.0}
    np.testing.assert_array_equal(drawn, np.repeat(drawn[..., :1], 3, axis=-1))
    missing = 1.0 - drawn.mean(axis=(1, 2, 3))
    assert missing.max() <= 0.96 and 0.4 < missing.mean() < 0.55  # r ~ U(0, 0.95): mean 0.475
    rows_fully_observed = (drawn[..., 0].min(axis=2) == 1).sum(axis=1)  # hidden rectangles leave full rows
    assert (rows_fully_observed > 0).mean() > 0.2


def test_the_encoder_learns_to_invert_the_generator():
    """Trained on the generator's own digits (GAN held fixed), E's latent error falls well below
    that of an untrained E."""
    model = tiny(latent_size=4, gan_width=4, latent_search="encoder")
    for variable in model.generator.trainable_variables:  # an untrained G barely depends on z
        if "kernel" in variable.path:
            variable.assign(variable * 20.0)
    latent = model.draw_latents(tf.constant(256), tf.constant([5, 0]))
    generated = model.generate(latent)
    ones = tf.ones_like(generated)

    def latent_error() -> float:
        return float(tf.reduce_mean(tf.square(model.encode(generated, ones)[0] - latent)))

    untrained = latent_error()
    @tf.function
    def step():
        return model.encoder_step(generated, latent, None, ones)

    for _ in range(150):
        step()
    assert latent_error() < 0.3 * untrained


def test_the_encoder_search_starts_at_the_encoders_latent():
    """With no Adam steps and one restart, the missing pixels come from G(E(observed, mask))."""
    model = tiny(latent_search="encoder", encoder_search_restarts=1, encoder_search_steps=0)
    images, mask = batch()[:2]
    imputed = model.impute(images * mask, mask)
    expected = model.generate(model.encode(tf.constant(images * mask), tf.constant(mask))[0]).numpy()
    np.testing.assert_allclose(imputed[mask < 0.5], expected[mask < 0.5], atol=1e-6)
    np.testing.assert_array_equal(imputed[mask > 0.5], images[mask > 0.5])


def test_cgan_encoder_restarts_try_the_encoders_most_likely_classes():
    model = tiny(CGAN, latent_search="encoder", encoder_search_restarts=3, encoder_search_steps=0)
    images, mask = batch()[:2]
    observed, mask = tf.constant(images * mask), tf.constant(mask)
    _, class_logits = model.encode(observed, mask)
    starts, labels = model.encoder_starts(observed, mask, DCGAN.row_seeds(tf.constant([0, 0]), 6),
                                          guess_classes=True)
    expected = np.argsort(-class_logits.numpy(), axis=1)[:, :3].reshape(-1)
    np.testing.assert_array_equal(labels.numpy(), expected)
    latent = model.encode(observed, mask)[0].numpy()
    np.testing.assert_allclose(starts.numpy().reshape(6, 3, -1)[:, 0], latent, atol=1e-6)  # restart 0: E's own
    assert np.abs(starts.numpy().reshape(6, 3, -1)[:, 1] - latent).mean() > 0.05  # others: perturbed


def test_a_model_without_encoder_refuses_the_encoder_search_in_one_line():
    with pytest.raises(ValueError, match="--latent_search=encoder needs the encoder.*use --latent_search=published"):
        DCGAN(latent_size=4, gan_width=2, train_encoder=False, latent_search="encoder")
    assert DCGAN.upgraded_config({"latent_size": 4})["latent_search"] == "published"  # 0.1 workdirs
