"""Your own incomplete data, end to end: a CSV with NaN and a text column, a folder of PNG images,
an npz of vectors; train, fill a file, export ``impute_nan``, evaluate; one-line errors.

Real data that needs no download: scikit-learn's bundled wine, diabetes and digits.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from sklearn.datasets import load_diabetes, load_digits, load_wine

from conftest import REPO
from program_support import run_here
from tfimpute import experiment, filling, savedmodel
from tfimpute.datasets import load_dataset
from tfimpute.training import TrainingOptions
from tfimpute.workdir import load_trained

COLOURS = ["red", "white", "rose"]


def run(module, *args):
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def one_line_error(result) -> str:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines == [result.stderr.strip()] and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def wine_csv(tmp_path_factory) -> str:
    """The wine data with 30% of the numbers missing, a categorical text column and the class."""
    wine = load_wine()
    rng = np.random.default_rng(0)
    path = str(tmp_path_factory.mktemp("wine") / "wine.csv")
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*wine.feature_names, "colour", "class"])
        for i, row in enumerate(wine.data):
            cells = ["" if rng.random() < 0.3 else repr(float(v)) for v in row]
            colour = COLOURS[wine.target[i]] if rng.random() > 0.3 else "NA"
            writer.writerow([*cells, colour, wine.target_names[wine.target[i]]])
    return path


def test_a_csv_with_holes_trains_fills_and_exports(wine_csv, tmp_path):
    workdir, filled, export_dir = tmp_path / "run", tmp_path / "filled.csv", tmp_path / "export"
    trained = run_here("tfimpute.train", "--model=vae", f"--dataset=csv:{wine_csv}", "--label_column=class",
                       "--categorical_columns=colour", "--latent_dim=2", "--vae_hidden_units=16", "--epochs=1",
                       "--batch_size=32", f"--workdir={workdir}")
    assert trained.returncode == 0, trained.stderr
    assert "training on the data's own holes (no missingness flag given)" in trained.stdout
    metrics = json.loads(trained.stdout.strip().splitlines()[-1])
    assert metrics["own_holes_only"] and 0 < metrics["test_rmse"] < 0.5
    with open(workdir / "config.json") as f:
        codec = json.load(f)["codec"]
    assert [c["name"] for c in codec["columns"]][-1] == "colour" and codec["shape"] == [13 + 3]

    done = run_here("tfimpute.impute", f"--workdir={workdir}", f"--input={wine_csv}", f"--output={filled}")
    assert done.returncode == 0, done.stderr
    with open(wine_csv) as f:
        original = list(csv.reader(f))
    with open(filled) as f:
        result = list(csv.reader(f))
    assert result[0] == original[0] and len(result) == len(original)
    for before, after in zip(original[1:], result[1:]):
        for column, (old, new) in enumerate(zip(before, after)):
            if old not in ("", "NA"):
                assert new == old  # observed cells unchanged, label copied
            elif original[0][column] == "colour":
                assert new in COLOURS
            else:
                assert np.isfinite(float(new))

    model, config = load_trained(str(workdir))
    version = savedmodel.export_model(model, str(export_dir), "vae", codec=experiment.codec_of(config, (16,)))
    with open(os.path.join(version, "assets.extra", "tfimpute.json")) as f:
        info = json.load(f)
    assert info["codec"] == codec
    # impute_nan from plain TensorFlow: raw units with NaN in, raw units out.
    x = np.array([[14.2, np.nan, 2.4, np.nan, 127.0, 2.8, 3.0, 0.3, 2.3, 5.6, 1.0, 3.9, 1065.0, 1, 0, 0],
                  [np.nan] * 13 + [np.nan] * 3], np.float32)
    out = tf.saved_model.load(version).signatures["impute_nan"](x=tf.constant(x))["imputed"].numpy()
    observed = ~np.isnan(x)
    np.testing.assert_array_equal(out[observed], x[observed])
    assert np.all(np.isfinite(out)) and sorted(out[1, 13:]) == [0.0, 0.0, 1.0]  # a category, one-hot
    low, high = np.nanmin(load_wine().data, axis=0), np.nanmax(load_wine().data, axis=0)
    assert np.all(out[1, :13] >= low - 1e-3 * abs(low)) and np.all(out[1, :13] <= high * 1.001)

    refused = run_here("tfimpute.impute", f"--workdir={workdir}", f"--input={wine_csv}", f"--output={wine_csv}")
    assert "write the results elsewhere" in one_line_error(refused)


def write_digit_folder(root, count=120) -> np.ndarray:
    """scikit-learn's 8x8 digits as PNG files, one sub-folder per class (0 and 1)."""
    digits = load_digits(n_class=2)
    images = np.rint(digits.images[:count] / 16.0 * 255.0).astype(np.uint8)
    for i, (image, label) in enumerate(zip(images, digits.target[:count])):
        os.makedirs(root / f"class_{label}", exist_ok=True)
        Image.fromarray(image).save(root / f"class_{label}" / f"{i:03d}.png")
    return images


def test_a_folder_of_images_trains_and_its_transparent_pixels_are_filled(tmp_path):
    write_digit_folder(tmp_path / "digits")
    dataset = load_dataset(f"images:{tmp_path / 'digits'}")
    assert dataset.shape == (8, 8, 1) and dataset.num_classes == 2
    data = {"dataset": f"images:{tmp_path / 'digits'}", "test_fraction": 0.1, "train_size": len(dataset.train_x),
            "test_size": len(dataset.test_x), "missingness": "patch", "missing_rate": 0.4, "mask_seed": 0,
            "num_patches": 4}
    result = experiment.train("lmrbm", dataset, data, {"hidden_units": 16, "learning_rate": 0.01},
                              TrainingOptions(epochs=1, batch_size=16, eval_size=8), str(tmp_path / "run"))
    assert 0 < result["test_rmse"] < 0.6 and os.path.exists(tmp_path / "run" / "imputations.png")

    holes = tmp_path / "holes"
    os.makedirs(holes)
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., :3], rgba[..., 3] = 200, 255
    rgba[2:5, 3:6, 3] = 0  # a transparent 3x3 hole
    Image.fromarray(rgba, "RGBA").save(holes / "one.png")
    imputer, codec, _ = filling.from_workdir(str(tmp_path / "run"))
    count, filled_pixels = filling.fill_image_folder(str(holes), str(tmp_path / "out"), codec,
                                                     lambda x: filling.fill(imputer, x, verbose=False))
    assert (count, filled_pixels) == (1, 9)
    out = np.asarray(Image.open(tmp_path / "out" / "one.png"))
    assert out.shape == (8, 8)
    visible = rgba[..., 3] > 0
    np.testing.assert_array_equal(out[visible], 200)  # gray level of the RGB pixels, unchanged


def test_vectors_with_mnar_holes_evaluate_with_raw_units_and_wasserstein(tmp_path):
    diabetes = load_diabetes(scaled=False).data[:200].astype(np.float32)
    path = tmp_path / "diabetes.npz"
    np.savez(path, x=diabetes)
    done = run_here("tfimpute.evaluate", f"--dataset=npz:{path}", "--methods=mean,lmrbm", "--missingness=mnar",
                    "--missing_rates=0.3", "--repeats=1", "--epochs=1", "--batch_size=32", "--hidden_units=8",
                    f"--workdir={tmp_path / 'eval'}")
    assert done.returncode == 0, done.stderr
    assert "FID skipped: npz:" in done.stdout and "has no labels" in done.stdout
    with open(tmp_path / "eval" / "results.json") as f:
        cells = json.load(f)["cells"]
    mean_cell = cells["mean_mnar_0.3"]
    assert {"rmse", "rmse_raw", "wasserstein", "wasserstein_per_column"} <= set(mean_cell)
    assert "fid" not in mean_cell and "accuracy" not in mean_cell
    # Raw units: the scaled RMSE times the columns' ranges (10 columns of different ranges).
    assert mean_cell["rmse_raw"]["mean"] > 5 * mean_cell["rmse"]["mean"]
    assert len(mean_cell["wasserstein_per_column"]) == 10
    with open(tmp_path / "eval" / "results.md") as f:
        report = f.read()
    assert "RMSE raw" in report and "FID: not computed" in report


@pytest.mark.parametrize("args,message", [
    (["--model=dcgan", "--dataset=csv:WINE", "--label_column=class", "--categorical_columns=colour"],
     "--model=dcgan works on images [H, W, C] only; the data are vectors of 16 values (models for vectors: "),
    (["--dataset=csv:WINE", "--label_column=class", "--categorical_columns=colour", "--batch_size=500"],
     "160 training examples, fewer than one batch (--batch_size=500)"),
])
def test_bad_own_data_gives_one_line_errors(wine_csv, tmp_path, args, message):
    """Through the program (the library's messages for the other cases: test_datasets, test_masks)."""
    args = [arg.replace("WINE", wine_csv) for arg in args]
    result = run_here("tfimpute.train", f"--workdir={tmp_path}", "--epochs=1", *args)
    assert message in one_line_error(result)


def fill_with_half(x: np.ndarray) -> np.ndarray:
    """A stand-in imputer on raw values: every missing entry becomes 0.5."""
    return np.where(np.isnan(x), 0.5, x).astype(np.float32)


def test_fill_npz_keeps_observed_values_bytes_and_every_other_array(tmp_path):
    from tfimpute.datasets import Codec

    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4) * 10
    mask = np.ones_like(images)
    mask[0, 1, 2] = 0
    np.savez(tmp_path / "in.npz", x=images, mask=mask, y=np.array([3, 4]))
    count, holes = filling.fill_npz(str(tmp_path / "in.npz"), str(tmp_path / "out.npz"),
                                    Codec.identity((3, 4, 1)), fill_with_half)
    with np.load(tmp_path / "out.npz", allow_pickle=False) as out:
        assert (count, holes) == (2, 1) and out["x"].dtype == np.uint8
        expected = images.copy()
        expected[0, 1, 2] = 128  # round(0.5 * 255)
        np.testing.assert_array_equal(out["x"], expected)
        np.testing.assert_array_equal(out["mask"], mask)
        np.testing.assert_array_equal(out["y"], [3, 4])
    # uint8 vectors are numbers, not pixels: no 1/255 scaling.
    np.savez(tmp_path / "vectors.npz", x=np.array([[200, 7]], np.uint8), mask=np.array([[1, 0]]))
    filling.fill_npz(str(tmp_path / "vectors.npz"), str(tmp_path / "vectors_out.npz"), Codec.identity((2,)),
                     fill_with_half)
    with np.load(tmp_path / "vectors_out.npz", allow_pickle=False) as out:
        np.testing.assert_array_equal(out["x"], np.array([[200.0, 0.5]], np.float32))


def test_fill_csv_fills_only_missing_cells_and_decodes_categories(tmp_path):
    from tfimpute.datasets import Codec

    path = tmp_path / "t.csv"
    path.write_text("size,colour,label\n1.5,red,a\n,blue,b\n3.0,NA,a\n2.0,purple,b\n")
    codec = Codec("table", (4,), [1.0, 0, 0, 0], [2.0, 1, 1, 1], (
        {"name": "size", "kind": "numeric", "start": 0, "width": 1},
        {"name": "colour", "kind": "categorical", "start": 1, "width": 3, "categories": ["blue", "green", "red"]}))

    def prefer_green(x: np.ndarray) -> np.ndarray:  # raw layout: size, blue, green, red
        filled = np.where(np.isnan(x), 0.0, x)
        filled[np.isnan(x[:, 0]), 0] = 2.5
        filled[np.isnan(x[:, 2]), 2] = 0.9
        return filled.astype(np.float32)

    count, holes = filling.fill_csv(str(path), str(tmp_path / "out.csv"), codec, prefer_green)
    with open(tmp_path / "out.csv") as f:
        rows = list(csv.reader(f))
    assert (count, holes) == (4, 3)  # the empty size, the NA colour, the unknown category purple
    assert rows == [["size", "colour", "label"], ["1.5", "red", "a"], ["2.5", "blue", "b"],
                    ["3.0", "green", "a"], ["2.0", "green", "b"]]


def test_the_frontier_scores_own_data_as_the_evaluation_does(wine_csv, tmp_path):
    """On a table with holes of its own, a frontier point's RMSE is over the entries the data observed,
    exactly the Table-1 evaluation's figure for the same model; without labels there is no FID to plot."""
    common = [f"--dataset=csv:{wine_csv}", "--label_column=class", "--categorical_columns=colour",
              "--methods=mean", "--missingness=independent", "--missing_rates=0.3", "--repeats=2",
              f"--workdir={tmp_path / 'eval'}"]
    table = run_here("tfimpute.evaluate", *common)
    assert table.returncode == 0, table.stderr
    swept = run_here("tfimpute.evaluate", "--frontier", *common)
    assert swept.returncode == 0, swept.stderr
    with open(tmp_path / "eval" / "results.json") as f:
        cell = json.load(f)["cells"]["mean_independent_0.3"]
    with open(tmp_path / "eval" / "frontier" / "frontier.json") as f:
        point, = json.load(f)["points"]
    assert point["rmse"]["values"] == pytest.approx(cell["rmse"]["values"], rel=1e-6)
    assert point["fid"]["values"] == pytest.approx(cell["fid"]["values"], rel=1e-5)

    diabetes = tmp_path / "diabetes.npz"
    np.savez(diabetes, x=load_diabetes(scaled=False).data[:200].astype(np.float32))
    refused = run_here("tfimpute.evaluate", "--frontier", f"--dataset=npz:{diabetes}", "--methods=mean",
                       "--missingness=independent", "--missing_rates=0.3", f"--workdir={tmp_path / 'unlabelled'}")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1] == (
        f"error: --frontier scores perception by FID, which npz:{diabetes} cannot give (no labels to train a "
        "feature classifier on)")
