"""tfimpute.frontier: the lower envelope, every knob setting scored as Table 1 scores a cell, a training
knob fine-tuned from the trained model, resumption, and ``tfimpute.evaluate --frontier``."""

import json

import numpy as np
import pytest

from test_cli import run
from tfimpute import evaluation, experiment, frontier, masks, metrics, workdir
from tfimpute.classifier import FeatureFid
from tfimpute.data import load_mnist
from tfimpute.datasets import as_dataset
from tfimpute.models import registry
from tfimpute.models.capabilities import FrontierPoint
from tfimpute.models.misgan import MisGAN
from tfimpute.training import TrainingOptions

TRAIN, TEST = 300, 100
CELL_DATA = {"train_size": TRAIN, "test_size": TEST, "missingness": "independent", "missing_rate": 0.6,
             "mask_seed": 0, "num_patches": 32}


def test_lower_envelope_keeps_the_points_nothing_beats_in_both():
    rmse = [0.20, 0.25, 0.30, 0.22, 0.40, 0.26, 0.30]
    fid = [9.0, 4.0, 1.0, 12.0, 0.5, 3.9, 2.0]
    # 3 is beaten by 0 in both; 6 by 2 (same RMSE, higher FID).
    assert frontier.lower_envelope(rmse, fid) == [0, 1, 5, 2, 4]
    assert frontier.lower_envelope([0.3], [7.0]) == [0]


def test_a_method_is_fine_tuned_when_its_knob_is_a_training_setting():
    assert frontier.is_fine_tuned("misgan")
    assert not any(frontier.is_fine_tuned(name) for name in ("rbm", "lmrbm", "dcgan", "cgan", "vae", "mean"))
    assert frontier.points_of("mean") == (frontier.AS_TRAINED,)


def test_frontier_scores_every_point_fine_tunes_a_training_knob_and_resumes(mnist_dir, classifier_dir, tmp_path,
                                                                             monkeypatch):
    mnist = as_dataset(load_mnist(mnist_dir, TRAIN, TEST))
    models, output = tmp_path / "models", tmp_path / "out"
    for method in ("rbm", "misgan"):
        experiment.train(method, mnist, CELL_DATA, registry.get(method).cls.tiny_settings,
                         TrainingOptions(epochs=1, batch_size=64), str(models / f"{method}_independent_0.6"))
    monkeypatch.setattr(MisGAN, "frontier_points", (FrontierPoint("γ_h=0", {"misgan_holdout_weight": 0.0}),
                                                    FrontierPoint("γ_h=5", {"misgan_holdout_weight": 5.0})))
    cells = evaluation.plan_cells(["rbm", "misgan"], ["independent"], [0.6])
    scoring = evaluation.EvaluationSettings(repeats=2, test_size=TEST, test_mask_seed=1000,
                                          classifier_dir=classifier_dir)
    settings = frontier.FrontierSettings(scoring, fine_tune_epochs=1)
    fid = FeatureFid(classifier_dir)
    messages = []
    content = frontier.run_frontier(cells, str(models), str(output), mnist, fid, settings, None, scoring.as_dict(),
                                    log=messages.append)

    points = content["points"]
    assert [(p["method"], p["point"]) for p in points] == [
        ("rbm", "mean-field"), ("rbm", "mean-field +1"), ("rbm", "mean-field +3"), ("rbm", "sampled h"),
        ("rbm", "Gibbs 1"), ("rbm", "Gibbs 3"), ("rbm", "Gibbs 10"), ("rbm", "sampled v"), ("misgan", "γ_h=0"), ("misgan", "γ_h=5")]
    # The paper's single pass is scored exactly as the Table-1 evaluation scores the cell.
    rbm_dir = str(models / "rbm_independent_0.6")
    model, config = workdir.load_trained(rbm_dir)
    table_cell, _ = evaluation.evaluate_cell(cells[0], model, config, mnist, scoring, fid)
    assert points[0]["rmse"] == table_cell["rmse"] and points[0]["fid"] == table_cell["fid"]
    # A knob setting is the trained model with it: Gibbs 3 recomputed by hand for the first masking.
    gibbs, _ = workdir.load_trained(rbm_dir, {"impute_mode": "gibbs", "gibbs_steps": 3})
    mask = masks.generate_masks("independent", 0.6, TEST, seed=1000)
    imputed = gibbs.impute(mnist.test_x * mask, mask, seed=0)
    assert points[5]["rmse"]["values"][0] == pytest.approx(metrics.missing_rmse(mnist.test_x, imputed, mask))
    assert len({p["rmse"]["mean"] for p in points[:8]}) == 8  # every setting changes the imputation

    # MisGAN's γ_h is a training setting: each point is the trained MisGAN fine-tuned one epoch with it.
    tuned = output / "frontier" / "fine_tuned"
    weights = {}
    for index, weight in enumerate((0.0, 5.0)):
        point_dir = tuned / f"misgan_independent_0.6_p{index}"
        assert workdir.read_config(str(point_dir))["model_config"]["misgan_holdout_weight"] == weight
        assert json.loads((point_dir / "metrics.json").read_text())["epochs"] == 2
        weights[weight] = workdir.load_trained(str(point_dir))[0].imputer_network.get_weights()[0]
    original = workdir.load_trained(str(models / "misgan_independent_0.6"))[0].imputer_network.get_weights()[0]
    assert not np.allclose(weights[0.0], original) and not np.allclose(weights[0.0], weights[5.0])
    assert workdir.read_config(str(models / "misgan_independent_0.6"))["model_config"]["misgan_holdout_weight"] == 0

    # The envelope is the Pareto front of all ten points; the table and the plot are written.
    envelope = frontier.lower_envelope([p["rmse"]["mean"] for p in points], [p["fid"]["mean"] for p in points])
    assert [p["on_envelope"] for p in points] == [i in envelope for i in range(len(points))]
    stored = json.loads((output / "frontier" / "frontier.json").read_text())
    assert stored["points"] == points and stored["settings"]["fine_tuned_methods"] == ["misgan"]
    table = (output / "frontier" / "frontier.md").read_text()
    assert "## I.M. 0.6" in table
    assert sum(line.startswith("| **") for line in table.splitlines()) == len(envelope)
    assert (output / "frontier" / "frontier.png").stat().st_size > 1000

    # Run again: nothing is scored or trained twice.
    monkeypatch.setattr(frontier, "evaluate_point", lambda *args: pytest.fail("a point was scored again"))
    monkeypatch.setattr(frontier, "train", lambda *args: pytest.fail("a point was fine-tuned again"))
    again = frontier.run_frontier(cells, str(models), str(output), mnist, fid, settings, None, scoring.as_dict(),
                                  log=messages.append)
    assert again["points"] == points
    assert sum("already scored" in message for message in messages) == len(points)


def test_evaluate_frontier_program(mnist_dir, classifier_dir, tmp_path):
    result = run("tfimpute.evaluate", "--frontier", "--methods=mean,inpaint", "--missingness=square",
                 "--missing_rates=0.6", f"--data_dir={mnist_dir}", f"--workdir={tmp_path}",
                 f"--classifier_dir={classifier_dir}", "--train_size=300", "--test_size=100", "--repeats=1")
    assert result.returncode == 0, result.stderr
    assert "Frontier of 2 cells" in result.stdout and "inpaint_square_0.6 [1/1] as trained: RMSE" in result.stdout
    stored = json.loads((tmp_path / "frontier" / "frontier.json").read_text())
    assert [p["method"] for p in stored["points"]] == ["mean", "inpaint"]
    assert not (tmp_path / "results.json").exists()  # the frontier instead of the Table-1 evaluation
