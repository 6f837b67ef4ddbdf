"""`python -m tfimpute.evaluate` end to end on a tiny slice, its resumption and its errors."""

import json
import re
import shutil

import numpy as np
import pytest

from test_cli import run
from program_support import run_here
from tfimpute import classifier, evaluation, masks, metrics
from tfimpute.classifier import FeatureFid
from tfimpute.data import Mnist, load_mnist
from tfimpute.errors import InvalidInputError, WorkdirError
from tfimpute.training import TrainingOptions

TINY = ["--train_size=300", "--test_size=100", "--repeats=2"]


def expected_mean_imputation_rmse(mnist_dir, seeds):
    """Table 1's mean imputation recomputed in NumPy: S.O. 0.6, training masks seed 0, 300 digits."""
    mnist = load_mnist(mnist_dir, 300, 100)
    train_mask = masks.generate_masks("square", 0.6, 300, seed=0)
    means = (mnist.train_images * train_mask).sum(axis=0) / np.maximum(train_mask.sum(axis=0), 1)
    rmses = []
    for seed in seeds:
        test_mask = masks.generate_masks("square", 0.6, 100, seed=seed)
        imputed = np.where(test_mask > 0.5, mnist.test_images, means[None])
        rmses.append(metrics.missing_rmse(mnist.test_images, imputed, test_mask))
    return rmses


def test_evaluate_writes_results_and_resumes_without_recomputing(mnist_dir, classifier_dir, tmp_path,
                                                                 monkeypatch):
    args = ["--methods=mean,inpaint", "--missingness=square", "--missing_rates=0.6", f"--data_dir={mnist_dir}",
            f"--workdir={tmp_path}", f"--classifier_dir={classifier_dir}", *TINY]
    first = run("tfimpute.evaluate", *args)
    assert first.returncode == 0, first.stderr
    assert "training mean into" in first.stdout and "[2/2] inpaint_square_0.6: RMSE" in first.stdout

    with open(tmp_path / "results.json") as f:
        results = json.load(f)
    assert results["settings"]["test_mask_seeds"] == [1000, 1001]
    cell = results["cells"]["mean_square_0.6"]
    np.testing.assert_allclose(cell["rmse"]["values"], expected_mean_imputation_rmse(mnist_dir, [1000, 1001]),
                               rtol=1e-5)
    assert cell["rmse"]["stderr"] == pytest.approx(np.std(cell["rmse"]["values"], ddof=1) / np.sqrt(2))
    for key in ("fid", "accuracy"):
        assert len(cell[key]["values"]) == 2 and cell[key]["stderr"] is not None
    assert 0.0 <= cell["accuracy"]["mean"] <= 1.0 and cell["fid"]["mean"] >= 0.0
    assert "hidden_accuracy" not in cell  # RBMs only
    assert cell["model"]["config"]["data"]["train_size"] == 300
    table = (tmp_path / "results.md").read_text()
    assert "| S.O. | 0.6 | " in table and "RMSE inpaint" in table
    assert "| S.O. | 0.6 | 0.169 | 0.175 | 6.3 | 6.4 | 88.3 | 88.3 |" in table  # the paper's row
    for name in ("perception_distortion.png", "imputations.png"):
        assert (tmp_path / name).stat().st_size > 1000

    # As if interrupted while evaluating the second cell: only that one is computed again.
    (tmp_path / "cells" / "inpaint_square_0.6.json").unlink()
    evaluated = []
    evaluate_cell = evaluation.evaluate_cell
    monkeypatch.setattr(evaluation, "evaluate_cell", lambda cell, *args: evaluated.append(cell.name)
                        or evaluate_cell(cell, *args))
    monkeypatch.setattr(evaluation, "train", lambda *args: pytest.fail("a trained cell was trained again"))
    cells = evaluation.plan_cells(["mean", "inpaint"], ["square"], [0.6])
    settings = evaluation.EvaluationSettings(repeats=2, test_size=100, test_mask_seed=1000,
                                           classifier_dir=classifier_dir)
    messages = []
    resumed = evaluation.run_evaluation(cells, str(tmp_path), str(tmp_path), load_mnist(mnist_dir, 300, 100),
                                      FeatureFid(classifier_dir), settings, None, results["settings"],
                                      log=messages.append)
    assert evaluated == ["inpaint_square_0.6"]
    assert messages[0].startswith("[1/2] mean_square_0.6: already evaluated")
    assert resumed[0] == cell
    assert resumed[1]["rmse"] == results["cells"]["inpaint_square_0.6"]["rmse"]


def evaluate_in_process(cells, models_dir, output_dir, mnist_dir, classifier_dir, log=lambda message: None):
    """run_evaluation as the program calls it, on 300 training and 100 test digits (mean and inpaint)."""
    settings = evaluation.EvaluationSettings(repeats=2, test_size=100, test_mask_seed=1000,
                                           classifier_dir=classifier_dir)
    training = evaluation.TrainingRequest(data={"train_size": 300, "test_size": 100, "mask_seed": 0, "num_patches": 0},
                                        model_settings={}, options=TrainingOptions(epochs=1, batch_size=64))
    return evaluation.run_evaluation(cells, str(models_dir), str(output_dir), load_mnist(mnist_dir, 300, 100),
                                     FeatureFid(classifier_dir), settings, training,
                                     {"dataset": "mnist", **settings.as_dict()}, log=log)


def test_collect_tabulates_cells_evaluated_in_separate_runs(mnist_dir, classifier_dir, tmp_path):
    """Two runs (say two machines) evaluate one cell each; --collect makes their one table from the
    stored cells alone, and refuses a cell whose FID came from another classifier."""
    own_classifier = tmp_path / "classifier"  # retrained below
    shutil.copytree(classifier_dir, own_classifier)
    table = tmp_path / "table"
    separate = {}
    for method in ("mean", "inpaint"):
        cell = evaluation.Cell(method, "square", 0.6)
        [separate[cell.name]] = evaluate_in_process([cell], tmp_path / f"models_{method}", tmp_path / method,
                                                    mnist_dir, str(own_classifier))
        (table / "cells").mkdir(parents=True, exist_ok=True)
        for suffix in (".json", ".npz"):
            shutil.copy(tmp_path / method / "cells" / f"{cell.name}{suffix}", table / "cells")
    args = ["--collect", "--methods=mean,inpaint", "--missingness=square", "--missing_rates=0.6"]
    collected = run_here("tfimpute.evaluate", *args, f"--output_dir={table}")
    assert collected.returncode == 0, collected.stderr
    with open(table / "results.json") as f:
        results = json.load(f)
    assert results["cells"] == separate  # every figure as each run stored it
    assert results["settings"]["test_mask_seeds"] == [1000, 1001] and results["settings"]["collected"]
    assert results["classifier"] == FeatureFid(classifier_dir).info
    assert "| S.O. | 0.6 | " in (table / "results.md").read_text()
    for name in ("perception_distortion.png", "imputations.png"):
        assert (table / name).stat().st_size > 1000

    partial = run_here("tfimpute.evaluate", "--collect", "--methods=mean,inpaint,rbm", "--missingness=square",
                       "--missing_rates=0.6", f"--output_dir={table}")
    assert partial.returncode == 0, partial.stderr
    assert partial.stdout.strip().endswith("; not evaluated yet: rbm_square_0.6")
    assert "collected 2 of 3 cells" in partial.stdout
    assert "Not evaluated yet: rbm_square_0.6." in (table / "results.md").read_text()
    none = run_here("tfimpute.evaluate", "--collect", "--methods=rbm", "--missingness=square",
                    "--missing_rates=0.6", f"--output_dir={table}")
    assert none.returncode == 2
    assert none.stderr.strip().splitlines()[-1] == (
        f"error: {table / 'cells'}: none of the 1 cells asked for has been evaluated there; evaluate them "
        "first (without --collect)")

    # A part evaluated on other data cannot join.
    stored = (table / "cells" / "inpaint_square_0.6.json").read_text()
    other_data = json.loads(stored)
    other_data["model"]["config"]["data"]["split_seed"] = 5
    (table / "cells" / "inpaint_square_0.6.json").write_text(json.dumps(other_data))
    refused = run_here("tfimpute.evaluate", *args, f"--output_dir={table}")
    assert refused.returncode == 2
    assert ("inpaint_square_0.6.json: evaluated with another dataset ({'split_seed': 5}) than mean_square_0.6 "
            "({'dataset': 'mnist'})") in refused.stderr.strip().splitlines()[-1]
    (table / "cells" / "inpaint_square_0.6.json").write_text(stored)

    # The classifier retrained in the same place (other weights, so other reference statistics):
    # the stored FID is stale and the cell is scored again ...
    with np.load(own_classifier / "reference_statistics.npz") as reference:
        statistics = dict(reference)
    np.savez(own_classifier / "reference_statistics.npz", **{**statistics, "mean": statistics["mean"] + 1e-3})
    messages = []
    evaluate_in_process([evaluation.Cell("inpaint", "square", 0.6)], tmp_path / "models_inpaint", tmp_path / "inpaint",
                        mnist_dir, str(own_classifier), log=messages.append)
    assert any(message.startswith("[1/1] inpaint_square_0.6: evaluating") for message in messages), messages
    # ... and it cannot stand in the table beside a cell scored with the first classifier.
    shutil.copy(tmp_path / "inpaint" / "cells" / "inpaint_square_0.6.json", table / "cells")
    refused = run_here("tfimpute.evaluate", *args, f"--output_dir={table}")
    assert refused.returncode == 2
    retrained_hash, first_hash = (FeatureFid(path).identity["sha256"][:12] for path in (own_classifier, classifier_dir))
    assert refused.stderr.strip().splitlines()[-1] == (
        f"error: {table / 'cells' / 'inpaint_square_0.6.json'}: evaluated with another FID classifier (SHA-256 "
        f"{retrained_hash}…) than mean_square_0.6 (SHA-256 {first_hash}…); the cells of one table must share it")

    # A cell without its grid digits (a fresh clone of a repository that carries only the JSON):
    # the table is collected, the complete grid drawn before is left as it was.
    (table / "cells" / "inpaint_square_0.6.json").write_text(stored)
    (table / "cells" / "inpaint_square_0.6.npz").unlink()
    complete_grid = (table / "imputations.png").read_bytes()
    (table / "results.md").unlink()
    without_grid = run_here("tfimpute.evaluate", *args, f"--output_dir={table}")
    assert without_grid.returncode == 0, without_grid.stderr
    assert (f"imputation grid not drawn ({table / 'imputations.png'} left as it was): no grid digits for "
            "inpaint_square_0.6;") in without_grid.stdout
    assert (table / "imputations.png").read_bytes() == complete_grid
    assert "| S.O. | 0.6 | " in (table / "results.md").read_text()
    with open(table / "results.json") as f:
        assert json.load(f)["cells"] == separate


def test_bad_input_gives_a_one_line_error(classifier_dir, tmp_path):
    result = run_here("tfimpute.evaluate", "--methods=mean", "--missingness=square", "--missing_rates=0.6",
                      f"--workdir={tmp_path}", f"--classifier_dir={classifier_dir}",
                      "--data_dir=/nonexistent/mnist", *TINY)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == "error: /nonexistent/mnist: data directory does not exist"
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("rates,message", [(["0.3", "1.5"], "1.5 is not in (0, 1)"),
                                           (["abc"], "'abc' is not a number")])
def test_bad_rates_are_refused(rates, message):
    with pytest.raises(InvalidInputError, match=re.escape(f"--missing_rates: {message}")):
        evaluation.parse_rates(rates)


def test_unknown_names_and_untrainable_cells_are_refused(tmp_path):
    with pytest.raises(InvalidInputError, match="unknown model 'nope'; choose one of"):
        evaluation.plan_cells(["mean", "nope"], ["patch"], [0.3])
    with pytest.raises(InvalidInputError, match="unknown missingness 'blobs'"):
        evaluation.plan_cells(["mean"], ["blobs"], [0.3])
    settings = evaluation.EvaluationSettings(repeats=1, test_size=10, test_mask_seed=1000, classifier_dir="unused")
    cell = evaluation.Cell("lmrbm", "patch", 0.6)
    with pytest.raises(WorkdirError, match="no trained lmrbm model"):
        evaluation.check_cell(cell, str(tmp_path / cell.name), str(tmp_path), settings, training=None)
    no_epochs = evaluation.TrainingRequest(data={"mask_seed": 0, "train_size": 50}, model_settings={},
                                         options=TrainingOptions(epochs=0, batch_size=8))
    with pytest.raises(InvalidInputError, match="lmrbm cannot be trained with --epochs=0"):
        evaluation.check_cell(cell, str(tmp_path / cell.name), str(tmp_path), settings, training=no_epochs)
    mean_cell = evaluation.Cell("mean", "patch", 0.6)  # untrained imputers need no epochs
    assert evaluation.check_cell(mean_cell, str(tmp_path / mean_cell.name), str(tmp_path), settings, no_epochs) == 50


def test_unfinished_or_foreign_workdirs_are_refused(tmp_path):
    settings = evaluation.EvaluationSettings(repeats=1, test_size=10, test_mask_seed=1000, classifier_dir="unused")
    cell = evaluation.Cell("lmrbm", "independent", 0.3)
    model_dir = tmp_path / cell.name
    model_dir.mkdir()
    config = {"model": "lmrbm", "data": {"missingness": "independent", "missing_rate": 0.3, "mask_seed": 0,
                                         "train_size": 50}}
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(WorkdirError, match="training has not finished"):  # it may be training elsewhere
        evaluation.check_cell(cell, str(model_dir), str(tmp_path), settings, training=None)
    (model_dir / "metrics.json").write_text("{}")
    assert evaluation.check_cell(cell, str(model_dir), str(tmp_path), settings, training=None) == 50
    with pytest.raises(WorkdirError, match="not the cell rbm_independent_0.3"):
        evaluation.check_cell(evaluation.Cell("rbm", "independent", 0.3), str(model_dir), str(tmp_path), settings, None)
    clashing = evaluation.EvaluationSettings(repeats=1, test_size=10, test_mask_seed=0, classifier_dir="unused")
    with pytest.raises(ValueError, match="also a test mask seed"):
        evaluation.check_cell(cell, str(model_dir), str(tmp_path), clashing, training=None)


def test_cell_directories_are_named_as_the_training_runs():
    assert evaluation.Cell("lmrbm", "independent", 0.3).name == "lmrbm_independent_0.3"
    assert evaluation.parse_rates(["0.3", ".6", "0.90"]) == [0.3, 0.6, 0.9]
    assert [c.name for c in evaluation.plan_cells(["mean", "inpaint"], ["patch"], [0.9])] == \
        ["mean_patch_0.9", "inpaint_patch_0.9"]


def comparable_cell_workdir(tmp_path, setting):
    """The finished workdir of cell realnvp_independent_0.6, trained with ``--{setting}``."""
    model_dir = tmp_path / "realnvp_independent_0.6"
    model_dir.mkdir()
    config = {"model": "realnvp", "data": {"missingness": "independent", "missing_rate": 0.6, "mask_seed": 0,
                                           "train_size": 50, setting: True}}
    (model_dir / "config.json").write_text(json.dumps(config))
    (model_dir / "metrics.json").write_text("{}")
    return str(model_dir), config


@pytest.mark.parametrize("setting", ["complete_training_data", "binarize"])
def test_models_trained_on_other_data_are_refused(tmp_path, setting):
    model_dir, config = comparable_cell_workdir(tmp_path, setting)
    settings = evaluation.EvaluationSettings(repeats=1, test_size=10, test_mask_seed=1000, classifier_dir="unused")
    cell = evaluation.Cell("realnvp", "independent", 0.6)
    with pytest.raises(WorkdirError, match=f"realnvp_independent_0.6: its model was trained with --{setting}"):
        evaluation.check_cell(cell, model_dir, str(tmp_path), settings, training=None)
    with pytest.raises(WorkdirError, match=f"trained with --{setting}"):  # also when called as a library
        evaluation.evaluate_cell(cell, None, config, None, settings, None)


def test_a_model_trained_on_complete_data_gives_a_one_line_error(tmp_path):
    comparable_cell_workdir(tmp_path, "complete_training_data")
    result = run_here("tfimpute.evaluate", "--methods=realnvp", "--missingness=independent",
                      "--missing_rates=0.6", f"--workdir={tmp_path}", "--classifier_dir=/nonexistent",
                      "--notrain_missing")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: realnvp_independent_0.6: its model was trained with --complete_training_data")
    assert "Traceback" not in result.stderr


def test_a_finished_classifier_is_reused_only_with_its_settings(classifier_dir):
    def digits(n):
        return Mnist(train_images=np.zeros((n, 28, 28, 1), np.float32), train_labels=np.zeros(n, np.int64),
                     test_images=np.zeros((10, 28, 28, 1), np.float32), test_labels=np.zeros(10, np.int64))

    reused = classifier.train_classifier(digits(600), classifier_dir, epochs=1, batch_size=64, log=lambda m: None)
    assert reused["train_size"] == 600 and reused["seed"] == 0
    with pytest.raises(WorkdirError, match=re.escape("(train_size: 600 in the directory, 300 now; "
                                                     "seed: 0 in the directory, 1 now)")):
        classifier.train_classifier(digits(300), classifier_dir, epochs=1, batch_size=64, seed=1)


def test_one_pass_fid_and_classes_equal_the_separate_ones(mnist_dir, classifier_dir):
    fid = FeatureFid(classifier_dir)
    images = load_mnist(mnist_dir, 64, 300).test_images
    distance, classes = fid.fid_and_classes(images)
    assert distance == pytest.approx(fid.fid(images), rel=1e-6) and distance > 0
    np.testing.assert_array_equal(classes, fid.classify(images))
