"""Choosing an inference setting by leave-out validation on training data (tfimpute.tune)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from program_support import run_here
from tfimpute import experiment, metrics, selection
from tfimpute.datasets import load_dataset
from tfimpute.errors import InvalidInputError
from tfimpute.workdir import load_trained


def test_hidden_entries_are_observed_ones_with_a_pixels_channels_together():
    rng = np.random.default_rng(0)
    mask = np.repeat((rng.random((50, 6, 5, 1)) > 0.3).astype(np.float32), 3, axis=-1)
    visible, held = selection.hide_observed(mask, 0.25, seed=1)
    assert np.all(held <= mask) and np.all(visible + held == mask)
    assert np.all(held == held[..., :1]) and held.sum() / mask.sum() == pytest.approx(0.25, abs=0.03)
    again, _ = selection.hide_observed(mask, 0.25, seed=1)
    np.testing.assert_array_equal(again, visible)
    with pytest.raises(InvalidInputError, match="hide_fraction must be in"):
        selection.hide_observed(mask, 1.0, seed=1)


def test_hidden_blocks_are_squares_that_hide_every_pixel_at_the_fraction():
    from scipy import ndimage

    everything = np.ones((3000, 12, 10, 2), np.float32)
    _, held = selection.hide_observed(everything, 0.1, seed=2, block=3)
    assert np.all(held == held[..., :1])
    per_pixel = held[..., 0].mean(axis=0)  # border pixels as often as inner ones
    assert per_pixel.mean() == pytest.approx(0.1, abs=0.005)
    assert per_pixel[0, 0] == pytest.approx(0.1, abs=0.02) and per_pixel[6, 5] == pytest.approx(0.1, abs=0.02)
    # Sparse squares: a hole away from the border is one whole 3x3 square.
    _, sparse = selection.hide_observed(everything, 0.01, seed=3, block=3)
    sizes = []
    for image in sparse[..., 0]:
        labels, _ = ndimage.label(image)
        for box in ndimage.find_objects(labels):
            inner = box[0].start > 0 and box[1].start > 0 and box[0].stop < 12 and box[1].stop < 10
            if inner:
                sizes.append((box[0].stop - box[0].start, box[1].stop - box[1].start))
    assert len(sizes) > 100 and sizes.count((3, 3)) / len(sizes) > 0.9
    # Only observed pixels are hidden.
    mask = (np.random.default_rng(0).random((400, 12, 10, 1)) > 0.5).astype(np.float32)
    visible, held = selection.hide_observed(mask, 0.2, seed=1, block=4)
    assert np.all(held <= mask) and np.all(visible + held == mask)
    assert held.sum() / mask.sum() == pytest.approx(0.2, abs=0.02)
    with pytest.raises(InvalidInputError, match="hide_block=2 needs images of at least 2x2 pixels; the data are 7"):
        selection.hide_observed(np.ones((5, 7), np.float32), 0.1, seed=0, block=2)
    with pytest.raises(InvalidInputError, match="hide_block=11 needs images"):
        selection.hide_observed(mask, 0.1, seed=0, block=11)


def test_auto_hide_block_is_the_side_of_the_training_patches():
    from tfimpute import masks

    patch = {"missingness": "patch", "num_patches": 32, "mask_seed": 0}
    sides = [selection.hide_block_like_holes({**patch, "missing_rate": rate}, (28, 28, 1)) for rate in (0.3, 0.6, 0.9)]
    assert sides == [3, 5, 8]  # scales 3.04, 4.97, 8.28
    # The side follows the image size and the patch count, as the masks' calibration does.
    wide = {**patch, "missing_rate": 0.6, "num_patches": 8}
    assert selection.hide_block_like_holes(wide, (40, 30, 3)) == round(masks.patch_scale(0.6, 8, (40, 30)))
    assert selection.hide_block_like_holes(wide, (40, 30, 3)) > 5
    for data, shape in [({**patch, "missing_rate": 0.6, "missingness": "independent"}, (28, 28, 1)),
                        ({**patch, "missing_rate": 0.6, "missingness": "square"}, (28, 28, 1)),
                        ({**patch, "missing_rate": 0.6, "complete_training_data": True}, (28, 28, 1)),
                        ({**patch, "missing_rate": 0.6, "missingness": "mar"}, (13,))]:
        assert selection.hide_block_like_holes(data, shape) == 1


@pytest.fixture(scope="module")
def trained_lmrbm(mnist_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tune") / "lmrbm"
    result = run_here("tfimpute.train", "--model=lmrbm", f"--data_dir={mnist_dir}", "--train_size=300",
                      "--test_size=20", "--hidden_units=32", "--learning_rate=0.01", "--batch_size=50",
                      "--epochs=2", "--missing_rate=0.5", f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr
    return str(workdir)


def test_tune_scores_each_value_on_hidden_training_entries_and_names_the_best(trained_lmrbm, mnist_dir):
    result = run_here("tfimpute.tune", f"--workdir={trained_lmrbm}", "--setting=impute_mode",
                      "--values=mean_field,gibbs", "--examples=200", f"--data_dir={mnist_dir}")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # The default --hide_block=auto: single pixels for a model trained on independent holes.
    assert "--hide_block=auto: 1x1 squares (independent training holes)" in result.stdout
    scores = {row["value"]: row["validation_rmse"] for row in report["results"]}
    assert report["best"] == min(scores, key=scores.get) and set(scores) == {"mean_field", "gibbs"}
    assert f"--impute_mode={report['best']}" in result.stdout
    # mean_field by hand: the first 200 training digits under their training masks, 5% of the
    # observed pixels hidden (seed 0), RMSE over those.
    model, config = load_trained(trained_lmrbm)
    dataset = load_dataset("mnist", data_dir=mnist_dir, train_size=300, test_size=20)
    train_mask = experiment.training_mask(dataset, config["data"])[:200]
    mask, held = selection.hide_observed(train_mask, 0.05, seed=0)
    truth = dataset.train_x[:200]
    expected = metrics.missing_rmse(truth, model.impute(truth * mask, mask), mask, held)
    assert scores["mean_field"] == pytest.approx(expected, rel=1e-6)
    assert report["results"][0]["hidden_entries"] == int(held.sum()) > 1000

    blocks = run_here("tfimpute.tune", f"--workdir={trained_lmrbm}", "--setting=impute_mode", "--values=mean_field",
                      "--examples=200", "--hide_block=4", f"--data_dir={mnist_dir}")
    by_blocks = json.loads(blocks.stdout.strip().splitlines()[-1])
    mask, held = selection.hide_observed(train_mask, 0.05, seed=0, block=4)
    assert by_blocks["hidden"] == {"fraction": 0.05, "examples": 200, "block": 4, "seed": 0}
    assert by_blocks["results"][0]["hidden_entries"] == int(held.sum())
    assert by_blocks["results"][0]["validation_rmse"] == pytest.approx(
        metrics.missing_rmse(truth, model.impute(truth * mask, mask), mask, held), rel=1e-6)

    steps = run_here("tfimpute.tune", f"--workdir={trained_lmrbm}", "--setting=gibbs_steps", "--values=1,4",
                     "--fixed=impute_mode=gibbs", "--examples=200", f"--data_dir={mnist_dir}")
    by_steps = json.loads(steps.stdout.strip().splitlines()[-1])
    assert by_steps["fixed"] == {"impute_mode": "gibbs"}
    gibbs_steps = {row["value"]: row["validation_rmse"] for row in by_steps["results"]}
    assert gibbs_steps[4] != gibbs_steps[1] and gibbs_steps[4] == pytest.approx(scores["gibbs"], abs=0.05)


def test_tune_hides_squares_of_the_patch_side_by_default_for_a_patch_trained_model(mnist_dir, tmp_path):
    workdir = tmp_path / "lmrbm_patch"
    trained = run_here("tfimpute.train", "--model=lmrbm", f"--data_dir={mnist_dir}", "--train_size=200",
                       "--test_size=20", "--hidden_units=16", "--batch_size=50", "--epochs=1",
                       "--missingness=patch", "--missing_rate=0.6", f"--workdir={workdir}")
    assert trained.returncode == 0, trained.stderr
    result = run_here("tfimpute.tune", f"--workdir={workdir}", "--setting=mean_field_steps", "--values=0,1",
                      "--examples=200", f"--data_dir={mnist_dir}")
    assert result.returncode == 0, result.stderr
    assert "--hide_block=auto: 5x5 squares (patch training holes)" in result.stdout
    report = json.loads(result.stdout.strip().splitlines()[-1])
    _, config = load_trained(str(workdir))
    dataset = load_dataset("mnist", data_dir=mnist_dir, train_size=200, test_size=20)
    train_mask = experiment.training_mask(dataset, config["data"])[:200]
    _, held = selection.hide_observed(train_mask, 0.05, seed=0, block=5)
    assert report["hidden"]["block"] == 5 and report["results"][0]["hidden_entries"] == int(held.sum())


@pytest.mark.parametrize("args, message", [
    (["--setting=hidden_units", "--values=8"], "--setting=hidden_units is not an inference setting of lmrbm "
                                               "(impute_mode, gibbs_steps, mean_field_steps)"),
    (["--setting=gibbs_steps", "--values=2,many"], "--values: 2,many are not all int values"),
    (["--setting=impute_mode", "--values=annealed"], "impute_mode must be one of"),
    (["--setting=gibbs_steps", "--values=2", "--fixed=impute_mode"], "--fixed: 'impute_mode' is not setting=value"),
    (["--setting=gibbs_steps", "--values=2", "--hide_block=0"], "--hide_block=0 is neither a positive integer nor auto"),
    (["--setting=gibbs_steps", "--values=2", "--hide_block=big"], "--hide_block=big is neither"),
])
def test_tune_refuses_bad_requests_in_one_line(trained_lmrbm, mnist_dir, args, message):
    result = run_here("tfimpute.tune", f"--workdir={trained_lmrbm}", f"--data_dir={mnist_dir}", *args)
    assert result.returncode != 0 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_hidden_entries_do_not_reuse_the_uniforms_of_a_mask_of_the_same_seed():
    """An independent mask of seed 0 thresholds the uniforms of seed 0: drawing the hidden entries from
    them again would hide none of the observed ones."""
    from tfimpute import masks

    mask = masks.generate_masks("independent", 0.5, 200, seed=0, shape=(28, 28, 1))
    _, held = selection.hide_observed(mask, 0.2, seed=0)
    assert held.sum() / mask.sum() == pytest.approx(0.2, abs=0.01)
