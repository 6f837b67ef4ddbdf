"""The perception–distortion frontier (the LM-RBM paper's §5, first open question): where RMSE and
FID trade off when the training data are incomplete, and which methods reach the lower envelope.

Each method's knob is its model class's ``frontier_points`` (:class:`~tfimpute.models.capabilities.FrontierPoint`):
the RBMs' imputation mode and Gibbs steps, DCGAN's and CGAN's restart temperature, the VAE's number of
importance samples, MisGAN's leave-out reconstruction weight γ_h. A point whose settings are all
inference settings is the cell's trained model with them; a point with a training setting (γ_h) is
the trained model fine-tuned with it for ``fine_tune_epochs`` more epochs into
``OUTPUT_DIR/frontier/fine_tuned/CELL_pN``, and then every point of that method is fine-tuned the same
way, so that its points differ in the knob only (γ_h = 0 is the paper's MisGAN trained that much longer).

Every point is scored as the Table-1 evaluation scores a cell (:mod:`tfimpute.evaluation`): RMSE over
the missing test entries and FID of the imputed test examples, under the same test maskings for every
method. Outputs in ``OUTPUT_DIR/frontier/``: ``points/CELL_pN.json`` as each point finishes (an
interrupted run resumes with the next one; a fine-tuning resumes from its checkpoint), then
``frontier.json`` (every point, the envelope and the settings), ``frontier.md`` (a table per cell) and
``frontier.png`` (RMSE against FID, one curve per method and the lower envelope).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any, Callable

from tfimpute import metrics, report, workdir
from tfimpute.classifier import FeatureFid
from tfimpute.datasets import Dataset, as_dataset
from tfimpute.errors import InvalidInputError
from tfimpute.evaluation import (Cell, EvaluationSettings, TrainingRequest, cell_dataset, ensure_trained, is_finished,
                                 model_identity, stored_result, summarize, test_imputations, training_subset)
from tfimpute.experiment import own_holes, train
from tfimpute.files import write_json_atomically
from tfimpute.models import registry
from tfimpute.models.capabilities import FrontierPoint
from tfimpute.training import TrainingOptions

FRONTIER_DIR = "frontier"
POINTS_DIR = "points"
FINE_TUNED_DIR = "fine_tuned"
RESULTS_FILE = "frontier.json"
TABLE_FILE = "frontier.md"
PLOT_FILE = "frontier.png"
AS_TRAINED = FrontierPoint("as trained", {})


@dataclasses.dataclass(frozen=True)
class FrontierSettings:
    """How the points are scored (``evaluation``: test maskings, test size, FID classifier) and how
    long a point with a training setting is fine-tuned."""

    evaluation: EvaluationSettings
    fine_tune_epochs: int = 1

    def as_dict(self) -> dict[str, Any]:
        return {**self.evaluation.as_dict(), "fine_tune_epochs": self.fine_tune_epochs}


def points_of(method: str) -> tuple[FrontierPoint, ...]:
    """The method's frontier points (a model without a knob: the trained model alone)."""
    return registry.get(method).cls.frontier_points or (AS_TRAINED,)


def is_fine_tuned(method: str) -> bool:
    """Whether some point of ``method`` changes a training setting (then all its points are fine-tuned)."""
    inference = set(registry.get(method).cls.inference_settings)
    return any(set(point.settings) - inference for point in points_of(method))


def lower_envelope(rmse: list[float], fid: list[float]) -> list[int]:
    """Indices of the points no other point beats in both RMSE and FID (the Pareto front of
    minimising both), in order of increasing RMSE."""
    order = sorted(range(len(rmse)), key=lambda i: (rmse[i], fid[i]))
    envelope: list[int] = []
    for index in order:
        if not envelope or fid[index] < fid[envelope[-1]]:
            envelope.append(index)
    return envelope


def fine_tuned_workdir(cell: Cell, point: FrontierPoint, model_dir: str, target_dir: str, dataset: Dataset,
                       epochs: int, log: Callable[[str], None]) -> str:
    """``target_dir``: the cell's trained model (config and checkpoints, copied) with ``point``'s settings,
    trained ``epochs`` epochs more (resumed when an earlier run was interrupted)."""
    if is_finished(target_dir):
        return target_dir
    config = workdir.read_config(model_dir)
    with open(os.path.join(model_dir, "metrics.json")) as f:
        trained = json.load(f)
    if not os.path.exists(target_dir):
        partial = f"{target_dir}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(os.path.join(model_dir, "checkpoints"), os.path.join(partial, "checkpoints"))
        write_json_atomically(os.path.join(partial, workdir.CONFIG_FILE),
                              {**config, "model_config": {**config["model_config"], **point.settings}})
        os.replace(partial, target_dir)
    log(f"fine-tuning {cell.name} with {point.settings} for {epochs} epoch(s) into {target_dir}")
    data = config["data"]
    train(cell.method, training_subset(dataset, data["train_size"]), data, {**config["model_config"], **point.settings},
          TrainingOptions(epochs=trained["epochs"] + epochs, batch_size=config["training"]["batch_size"],
                          seed=config["training"]["seed"], dtype_policy=trained.get("dtype_policy", "float32")),
          target_dir)
    return target_dir


def point_workdir(cell: Cell, index: int, point: FrontierPoint, model_dir: str, output_dir: str,
                  dataset: Dataset, settings: FrontierSettings, log: Callable[[str], None]) -> tuple[str, dict]:
    """(the workdir the point's model comes from, the inference settings to load it with)."""
    if not is_fine_tuned(cell.method):
        return model_dir, point.settings
    if settings.fine_tune_epochs < 1:
        raise InvalidInputError(f"{cell.method}'s frontier fine-tunes its model ({point.settings}); "
                                "--frontier_fine_tune_epochs must be >= 1")
    target = os.path.join(output_dir, FRONTIER_DIR, FINE_TUNED_DIR, f"{cell.name}_p{index}")
    fine_tuned_workdir(cell, point, model_dir, target, dataset, settings.fine_tune_epochs, log)
    inference = set(registry.get(cell.method).cls.inference_settings)
    return target, {key: value for key, value in point.settings.items() if key in inference}


def evaluate_point(cell: Cell, point_dir: str, overrides: dict[str, Any], dataset: Dataset,
                   evaluation: EvaluationSettings, fid: FeatureFid) -> dict[str, Any]:
    """RMSE over the missing test entries (that the data observed) and FID of the imputed test
    examples, per test masking."""
    model, config = workdir.load_trained(point_dir, overrides)
    cell_data = cell_dataset(cell, model, config, dataset)
    own_test = own_holes(cell_data.test_mask, cell_data)
    figures: dict[str, list[float]] = {"rmse": [], "fid": []}
    for _, mask, _, imputed in test_imputations(cell, model, config["data"], cell_data, evaluation):
        figures["rmse"].append(metrics.missing_rmse(cell_data.test_x, imputed, mask, own_test))
        figures["fid"].append(fid.fid(imputed))
    return {key: summarize(values) for key, values in figures.items()}


def run_frontier(cells: list[Cell], models_dir: str, output_dir: str, dataset: Dataset, fid: FeatureFid,
                 settings: FrontierSettings, training: TrainingRequest | None, run_settings: dict[str, Any],
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """Scores every point of every cell (training a missing cell first, as the evaluation does) and
    writes the outputs; returns the content of ``frontier.json``."""
    dataset = as_dataset(dataset)
    run_settings = {**run_settings, "fine_tune_epochs": settings.fine_tune_epochs,
                    "fine_tuned_methods": [cell.method for cell in cells if is_fine_tuned(cell.method)]}
    frontier_dir = os.path.join(output_dir, FRONTIER_DIR)
    os.makedirs(os.path.join(frontier_dir, POINTS_DIR), exist_ok=True)
    results: list[dict[str, Any]] = []
    for cell in cells:
        model_dir = os.path.join(models_dir, cell.name)
        ensure_trained(cell, model_dir, output_dir, dataset, training, log)
        points = points_of(cell.method)
        for index, point in enumerate(points):
            prefix = f"{cell.name} [{index + 1}/{len(points)}] {point.label}"
            point_dir, overrides = point_workdir(cell, index, point, model_dir, output_dir, dataset, settings, log)
            provenance = {**model_identity(point_dir), "settings": point.settings, "scoring": settings.as_dict(),
                          "classifier": fid.identity}
            path = os.path.join(frontier_dir, POINTS_DIR, f"{cell.name}_p{index}.json")
            stored = stored_result(path, provenance)
            if stored is not None:
                log(f"{prefix}: already scored (RMSE {stored['rmse']['mean']:.4f}, FID {stored['fid']['mean']:.2f})")
                results.append(stored)
                continue
            log(f"{prefix}: scoring {point_dir} with {point.settings or 'its own settings'}")
            result = {"cell": cell.name, "method": cell.method, "missingness": cell.missingness,
                      "missing_rate": cell.missing_rate, "point": point.label,
                      **evaluate_point(cell, point_dir, overrides, dataset, settings.evaluation, fid),
                      "provenance": provenance}
            write_json_atomically(path, result)
            log(f"{prefix}: RMSE {result['rmse']['mean']:.4f}, FID {result['fid']['mean']:.2f}")
            results.append(result)
    return write_frontier(frontier_dir, results, run_settings, fid.info, log)


def condition(result: dict[str, Any]) -> str:
    """The missingness and rate of a point's cell, e.g. ``independent_0.6``: its frontier's name."""
    return f"{result['missingness']}_{result['missing_rate']:g}"


def with_envelopes(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The results, each with ``on_envelope``: whether it lies on its condition's lower envelope."""
    on_envelope = set()
    for name in dict.fromkeys(condition(result) for result in results):
        indices = [i for i, result in enumerate(results) if condition(result) == name]
        on_envelope.update(indices[i] for i in lower_envelope([results[i]["rmse"]["mean"] for i in indices],
                                                              [results[i]["fid"]["mean"] for i in indices]))
    return [{**result, "on_envelope": i in on_envelope} for i, result in enumerate(results)]


def write_frontier(frontier_dir: str, results: list[dict[str, Any]], run_settings: dict[str, Any],
                   classifier_info: dict[str, Any] | None, log: Callable[[str], None]) -> dict[str, Any]:
    """frontier.json (every point, marked when on its condition's envelope), frontier.md and frontier.png."""
    results = with_envelopes(results)
    content = {"settings": run_settings, "classifier": classifier_info, "points": results}
    write_json_atomically(os.path.join(frontier_dir, RESULTS_FILE), content)
    temporary = os.path.join(frontier_dir, f"{TABLE_FILE}.tmp")
    with open(temporary, "w") as f:
        f.write(report.frontier_report(results, run_settings))
    os.replace(temporary, os.path.join(frontier_dir, TABLE_FILE))
    report.plot_frontier(results, os.path.join(frontier_dir, PLOT_FILE))
    log(f"frontier: {os.path.join(frontier_dir, RESULTS_FILE)}, {os.path.join(frontier_dir, TABLE_FILE)}, "
        f"{os.path.join(frontier_dir, PLOT_FILE)}")
    return content
