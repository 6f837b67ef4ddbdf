"""The untrained imputers of Section 4: mean imputation and Oliveira et al.'s diffusion inpainting."""

import json

import keras
import numpy as np
import pytest
from absl import flags

from program_support import run_here
from tfimpute import masks, workdir
from tfimpute.data import Mnist
from tfimpute.errors import WorkdirError
from tfimpute.models import registry
from tfimpute.models.baselines import DiffusionInpainter, MeanImputer, diffusion_kernel
from tfimpute.experiment import train
from tfimpute.training import TrainingOptions
from zoo_support import tiny_model


def random_digits(n, seed, rate=0.5):
    rng = np.random.default_rng(seed)
    images = rng.random((n, 28, 28, 1)).astype(np.float32)
    mask = (rng.random((n, 28, 28, 1)) >= rate).astype(np.float32)
    return images, mask


def numpy_diffusion(images, mask, iterations):
    """Transcription of the algorithm: clear the missing pixels, then repeatedly replace
    every missing pixel by 0.125 x the sum of its 8 neighbours (outside the image = 0)."""
    observed = images[..., 0] * mask[..., 0]
    current = observed.copy()
    for _ in range(iterations):
        padded = np.pad(current, ((0, 0), (1, 1), (1, 1)))
        neighbours = sum(padded[:, 1 + dy:29 + dy, 1 + dx:29 + dx]
                         for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0))
        current = np.where(mask[..., 0] > 0.5, observed, 0.125 * neighbours)
    return current[..., None]


def test_mean_imputer_fills_with_observed_training_means():
    images, mask = random_digits(40, seed=3)
    mask[:, 0, 0] = 0.0  # pixel (0, 0) is never observed: it gets the overall observed mean
    model = MeanImputer()
    model.prepare(masks.make_incomplete(images, mask))

    observed_sum, count = (images * mask).sum(axis=0), mask.sum(axis=0)
    expected_means = np.where(count > 0, observed_sum / np.maximum(count, 1), observed_sum.sum() / count.sum())
    assert expected_means[0, 0, 0] == pytest.approx(observed_sum.sum() / count.sum())
    test_images, test_mask = random_digits(5, seed=4)
    imputed = model.impute(test_images * test_mask, test_mask)
    expected = np.where(test_mask > 0.5, test_images, expected_means[None])
    np.testing.assert_allclose(imputed, expected, rtol=1e-5)
    np.testing.assert_array_equal(imputed[test_mask > 0.5], test_images[test_mask > 0.5])


def test_second_kernel_of_oliveira_et_al():
    kernel = diffusion_kernel()[:, :, 0, 0]
    np.testing.assert_array_equal(kernel, [[0.125, 0.125, 0.125], [0.125, 0.0, 0.125], [0.125, 0.125, 0.125]])
    assert registry.get("inpaint").build().iterations == 200  # the paper: exactly 200


@pytest.mark.parametrize("iterations", [0, 1, 3])
def test_inpainting_matches_numpy_transcription(iterations):
    images, mask = random_digits(4, seed=5, rate=0.6)
    imputed = DiffusionInpainter(iterations=iterations).impute(images * mask, mask)
    np.testing.assert_allclose(imputed, numpy_diffusion(images, mask, iterations), atol=1e-6)


def test_inpainting_keeps_observed_pixels_exactly_and_stays_in_range():
    images, mask = random_digits(6, seed=6, rate=0.8)
    imputed = registry.get("inpaint").build().impute(images * mask, mask)
    np.testing.assert_array_equal(imputed[mask > 0.5], images[mask > 0.5])
    assert 0.0 <= imputed.min() and imputed.max() <= 1.0
    # Missing pixels ignore whatever the input held there.
    np.testing.assert_array_equal(registry.get("inpaint").build().impute(np.where(mask > 0.5, images, 0.7), mask),
                                  imputed)


def test_untrained_imputer_is_prepared_checkpointed_and_loaded(tmp_path):
    rng = np.random.default_rng(7)
    mnist = Mnist(train_images=rng.random((40, 28, 28, 1)).astype(np.float32),
                  train_labels=rng.integers(0, 10, 40), test_images=rng.random((10, 28, 28, 1)).astype(np.float32),
                  test_labels=rng.integers(0, 10, 10))
    data = {"train_size": 40, "test_size": 10, "missingness": "independent", "missing_rate": 0.5,
            "mask_seed": 0, "num_patches": 8}
    settings = {"learning_rate": 0.1, "momentum": 0.0}
    result = train("mean", mnist, data, settings, TrainingOptions(epochs=3, batch_size=8, eval_size=10,
                                                                   grid_size=4), str(tmp_path))
    assert result["epochs"] == 0
    model, config = workdir.load_trained(str(tmp_path))
    assert isinstance(model, MeanImputer) and config["model"] == "mean"
    assert config["training"] == {"batch_size": 8, "seed": 0}  # no optimizer: mean has none
    train_mask = masks.generate_masks("independent", 0.5, 40, seed=0)
    expected = (mnist.train_images * train_mask).sum(axis=0) / np.maximum(train_mask.sum(axis=0), 1)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model.pixel_means), expected, rtol=1e-5)


def test_a_workdir_without_checkpoint_loads_only_a_model_without_variables(tmp_path):
    for name, model in (("mean", MeanImputer()), ("inpaint", DiffusionInpainter())):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps({"model": name, "model_config": model.get_config()}))
    with pytest.raises(WorkdirError, match="no checkpoint yet"):  # its means would all be zero
        workdir.load_trained(str(tmp_path / "mean"))
    assert isinstance(workdir.load_trained(str(tmp_path / "inpaint"))[0], DiffusionInpainter)


def test_bench_defines_no_flags_on_import_and_refuses_untrained_imputers():
    import tfimpute.bench  # noqa: F401

    assert "warmup_steps" not in flags.FLAGS
    result = run_here("tfimpute.bench", "--model=mean", "--steps=1")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == \
        "error: --model=mean is an untrained imputer: it has no training step to time"


@pytest.mark.parametrize("name", ["mean", "inpaint"])
def test_serving_signatures_are_the_published_ones(name):
    """The public serving API (README, "Export and serve"): a dropped signature or super() call fails here."""
    assert set(tiny_model(name).serving_signatures()) == {"serving_default"}
