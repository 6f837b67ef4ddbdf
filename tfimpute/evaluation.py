"""Table-1 evaluation as a library (the paper's Section 4): RMSE, FID and classification accuracy
per cell (method x missingness x rate); the program is ``python -m tfimpute.evaluate``.

The figures, cell by cell, are described in :mod:`tfimpute.evaluate`.
"""


from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from typing import Any, Callable, Iterator

import keras
import numpy as np
import tensorflow as tf

from scipy import stats

from tfimpute import masks, metrics, report, workdir
from tfimpute.classifier import FeatureFid
from tfimpute.data import Mnist
from tfimpute.datasets import MNIST, Codec, Dataset, as_dataset, rescaled
from tfimpute.errors import InvalidInputError, WorkdirError
from tfimpute.experiment import codec_of, own_holes, prepared, test_mask, train, training_mask
from tfimpute.files import write_json_atomically
from tfimpute.models import registry
from tfimpute.models.base import Imputer
from tfimpute.models.capabilities import HasHiddenFeatures
from tfimpute.training import TrainingOptions, model_inputs

CELLS_DIR = "cells"
RESULTS_FILE = "results.json"
TABLE_FILE = "results.md"
PLOT_FILE = "perception_distortion.png"
GRID_FILE = "imputations.png"
GRID_DIGITS = 10
HIDDEN_BATCH = 1000


@dataclasses.dataclass(frozen=True)
class Cell:
    method: str
    missingness: str
    missing_rate: float

    @property
    def name(self) -> str:
        return f"{self.method}_{self.missingness}_{self.missing_rate:g}"


@dataclasses.dataclass(frozen=True)
class EvaluationSettings:
    """What a cell's figures depend on besides its model; a finished cell is reused only if unchanged."""

    repeats: int
    test_size: int
    test_mask_seed: int
    classifier_dir: str
    logistic_fit: metrics.LogisticFit = metrics.LogisticFit()

    @property
    def test_mask_seeds(self) -> list[int]:
        return [self.test_mask_seed + repeat for repeat in range(self.repeats)]

    def as_dict(self) -> dict[str, Any]:
        return {"repeats": self.repeats, "test_size": self.test_size, "test_mask_seeds": self.test_mask_seeds,
                "classifier_dir": os.path.abspath(self.classifier_dir),
                "logistic_fit": dataclasses.asdict(self.logistic_fit)}


@dataclasses.dataclass(frozen=True)
class TrainingRequest:
    """How cells without a workdir are trained (None: they are an error)."""

    data: dict[str, Any]  # train_size, test_size, mask_seed, num_patches
    model_settings: dict[str, Any]
    options: TrainingOptions


def parse_rates(values: list[str]) -> list[float]:
    rates = []
    for value in values:
        try:
            rate = float(value)
        except ValueError:
            raise InvalidInputError(f"--missing_rates: {value!r} is not a number") from None
        if not 0.0 < rate < 1.0:
            raise InvalidInputError(f"--missing_rates: {value} is not in (0, 1)")
        rates.append(rate)
    return rates


def plan_cells(methods: list[str], mechanisms: list[str], rates: list[float]) -> list[Cell]:
    """Every method x mechanism x rate, after checking the names."""
    if not methods or not mechanisms or not rates:
        raise InvalidInputError("--methods, --missingness and --missing_rates must not be empty")
    for method in methods:
        registry.get(method)
    for mechanism in mechanisms:
        if mechanism not in masks.MECHANISMS:
            raise InvalidInputError(f"unknown missingness {mechanism!r}; choose from {', '.join(masks.MECHANISMS)}")
    return [Cell(method, mechanism, rate) for mechanism in dict.fromkeys(mechanisms)
            for rate in dict.fromkeys(rates) for method in dict.fromkeys(methods)]


def _training_marker(output_dir: str, cell: Cell) -> str:
    """Present while this evaluation trains the cell, so that a rerun may resume that training."""
    return os.path.join(output_dir, CELLS_DIR, f"{cell.name}.training")


def is_finished(model_dir: str) -> bool:
    return os.path.exists(os.path.join(model_dir, "metrics.json"))


def check_comparable(cell: Cell, data: dict[str, Any]) -> None:
    """Refuses a model trained on data the table's other methods never get.

    ``complete_training_data``: it saw every true pixel. ``binarize``: its RMSE would be against
    binarised digits, while the FID reference is the grey-level training digits.
    """
    for setting in ("complete_training_data", "binarize"):
        if data.get(setting):
            raise WorkdirError(f"{cell.name}: its model was trained with --{setting}, so its figures "
                               "cannot stand beside the other methods'; train it without that flag")


DATASET_KEYS = ("dataset", "test_fraction", "split_seed", "label_column", "categorical_columns", "image_size")


def check_cell(cell: Cell, model_dir: str, output_dir: str, settings: EvaluationSettings,
               training: TrainingRequest | None, dataset_options: dict[str, Any] | None = None) -> int:
    """Checks that the cell's model exists (trained on the dataset of ``dataset_options``; None or
    empty: MNIST) or can be trained; returns the training examples it needs."""
    dataset_options = dataset_options or {}
    config = workdir.read_config(model_dir)
    if config is None:
        if os.path.exists(model_dir) and os.listdir(model_dir):
            raise WorkdirError(f"{model_dir}: exists but holds no {workdir.CONFIG_FILE}")
        if training is None:
            raise WorkdirError(f"{model_dir}: no trained {cell.method} model (and --notrain_missing)")
        if registry.get(cell.method).cls.trainable_imputer and training.options.epochs < 1:
            raise InvalidInputError(f"{model_dir} does not exist and {cell.method} cannot be trained "
                                    "with --epochs=0")
        mask_seed, train_size = training.data["mask_seed"], training.data["train_size"]
    else:
        data = config["data"]
        if (config["model"], data["missingness"], float(data["missing_rate"])) != \
                (cell.method, cell.missingness, cell.missing_rate):
            raise WorkdirError(f"{model_dir} holds a {config['model']} model for {data['missingness']} "
                               f"missingness at rate {data['missing_rate']}, not the cell {cell.name}")
        check_comparable(cell, data)
        trained_on = {key: data[key] for key in DATASET_KEYS if key in data}
        if trained_on != dataset_options:
            raise WorkdirError(f"{model_dir} was trained on {trained_on or {'dataset': MNIST}}, not on "
                               f"{dataset_options or {'dataset': MNIST}}; give the same dataset flags")
        resumable = training is not None and os.path.exists(_training_marker(output_dir, cell))
        if not is_finished(model_dir) and not resumable:
            raise WorkdirError(f"{model_dir}: training has not finished (no metrics.json); finish it with "
                               f"`python -m tfimpute.train ... --workdir={model_dir}` (it resumes)")
        mask_seed, train_size = data["mask_seed"], data["train_size"]
    if mask_seed in settings.test_mask_seeds:
        raise InvalidInputError(f"{cell.name}: training mask seed {mask_seed} is also a test mask seed; "
                                "choose another --test_mask_seed")
    return train_size


def training_subset(dataset: Dataset, train_size: int) -> Dataset:
    """``dataset`` with its first ``train_size`` training examples (what a cell's model trained on)."""
    labels = None if dataset.train_labels is None else dataset.train_labels[:train_size]
    return dataclasses.replace(dataset, train_x=dataset.train_x[:train_size],
                               train_mask=dataset.train_mask[:train_size], train_labels=labels)


def trained_model(cell: Cell, model_dir: str, output_dir: str, dataset: Dataset,
                  training: TrainingRequest | None, log: Callable[[str], None]) -> tuple[Imputer, dict[str, Any]]:
    """The cell's model, trained first (or its training resumed) when needed."""
    ensure_trained(cell, model_dir, output_dir, dataset, training, log)
    return workdir.load_trained(model_dir)


def ensure_trained(cell: Cell, model_dir: str, output_dir: str, dataset: Dataset,
                   training: TrainingRequest | None, log: Callable[[str], None]) -> None:
    """Trains the cell's model (or resumes its training) unless it has finished."""
    if not is_finished(model_dir):
        data = dict(training.data, missingness=cell.missingness, missing_rate=cell.missing_rate)
        marker = _training_marker(output_dir, cell)
        os.makedirs(os.path.dirname(marker), exist_ok=True)
        with open(marker, "w") as f:
            f.write(model_dir + "\n")
        log(f"training {cell.method} into {model_dir}")
        train(cell.method, training_subset(dataset, data["train_size"]), data, training.model_settings,
              training.options, model_dir)
        os.remove(marker)


def hidden_activations(model: HasHiddenFeatures, observed: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """p(h | v_o) for every image, batch by batch: the features of the "RBM †" classifier."""
    return np.concatenate([
        model.hidden(tf.constant(observed[start:start + HIDDEN_BATCH]),
                     tf.constant(mask[start:start + HIDDEN_BATCH])).numpy()
        for start in range(0, len(observed), HIDDEN_BATCH)])


def summarize(values: list[float]) -> dict[str, Any]:
    """Mean, standard error of the mean (None for a single value) and the values."""
    stderr = float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else None
    return {"mean": float(np.mean(values)), "stderr": stderr, "values": [float(v) for v in values]}


def column_wasserstein(codec: Codec, true: np.ndarray, imputed: np.ndarray, scored: np.ndarray) -> dict[str, float]:
    """Per table column, the Wasserstein-1 distance (raw units; one-hot blocks: their scaled entries)
    between the true and the imputed values of the scored entries."""
    distances = {}
    for column in codec.columns:
        block = slice(column["start"], column["start"] + column["width"])
        rows = scored[:, block].max(axis=1) > 0.5
        if rows.sum() < 1:
            continue
        distances[column["name"]] = float(np.mean([
            stats.wasserstein_distance(true[rows, j], imputed[rows, j]) for j in range(block.start, block.stop)]))
    return distances


def cell_dataset(cell: Cell, model: Imputer, config: dict[str, Any], dataset: Dataset) -> Dataset:
    """``dataset`` as the cell's model was trained on it: its training examples, scaled by its codec."""
    data = config["data"]
    check_comparable(cell, data)
    return prepared(rescaled(training_subset(dataset, data["train_size"]), codec_of(config, model.data_shape)), data)


def test_imputations(cell: Cell, model: Imputer, data: dict[str, Any], cell_data: Dataset,
                     settings: EvaluationSettings) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """(repeat, test mask, model input, imputation) for each of the settings' test maskings."""
    for repeat, seed in enumerate(settings.test_mask_seeds):
        # Every method of a table is scored under the same test masks, however it was trained
        # (a streamed run's training masks are drawn per example: "masks" in its data).
        mask = test_mask(cell_data, {**data, "missingness": cell.missingness, "missing_rate": cell.missing_rate,
                                     "masks": None}, seed)
        test_observed = model_inputs(cell_data.test_x) * mask  # held-out table rows may leave [0, 1]
        yield repeat, mask, test_observed, model.impute(test_observed, mask, seed=repeat)


def evaluate_cell(cell: Cell, model: Imputer, config: dict[str, Any], dataset: Dataset,
                  settings: EvaluationSettings, fid: FeatureFid | None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Figures of one cell (see the module docstring) and the first test examples for the grid."""
    data = config["data"]
    cell_data = cell_dataset(cell, model, config, dataset)
    train_mask = training_mask(cell_data, data)
    test_x, test_labels, codec = cell_data.test_x, cell_data.test_labels, cell_data.codec
    own_test = own_holes(cell_data.test_mask, cell_data)
    has_labels = cell_data.train_labels is not None and test_labels is not None
    has_hidden = has_labels and isinstance(model, HasHiddenFeatures)  # the paper's "RBM †" accuracy
    progbar = keras.utils.Progbar(settings.repeats + 1, unit_name="step",
                                  verbose=1 if sys.stdout.isatty() else 2)
    seconds: dict[str, Any] = {}

    started = time.perf_counter()
    train_observed = cell_data.train_x * train_mask
    imputed_train = model.impute(train_observed, train_mask)
    seconds["impute_training_digits"] = time.perf_counter() - started
    if has_labels:
        started = time.perf_counter()
        pixel_classifier = metrics.fit_logistic_regression(imputed_train, cell_data.train_labels,
                                                           num_classes=cell_data.num_classes,
                                                           fit=settings.logistic_fit)
        seconds["fit_logistic_regression"] = time.perf_counter() - started
    if has_hidden:
        started = time.perf_counter()
        hidden_classifier = metrics.fit_logistic_regression(
            hidden_activations(model, train_observed, train_mask), cell_data.train_labels,
            num_classes=cell_data.num_classes, fit=settings.logistic_fit)
        seconds["hidden_features_and_fit"] = time.perf_counter() - started
    progbar.update(1)

    figures: dict[str, list[float]] = {"rmse": [], "test_missing_fraction": []}
    if codec.kind == "table":
        figures.update(rmse_raw=[], wasserstein=[])
    if fid is not None:
        figures["fid"] = []
    if has_labels:
        figures["accuracy"] = []
    if has_hidden:
        figures["hidden_accuracy"] = []
    per_column: dict[str, list[float]] = {}
    seconds["per_repeat"] = []
    grid: dict[str, np.ndarray] = {}
    started = time.perf_counter()
    for repeat, mask, test_observed, imputed in test_imputations(cell, model, data, cell_data, settings):
        figures["rmse"].append(metrics.missing_rmse(test_x, imputed, mask, own_test))
        if codec.kind == "table":
            true_raw, imputed_raw = codec.unscale_values(test_x), codec.unscale_values(imputed)
            figures["rmse_raw"].append(metrics.missing_rmse(true_raw, imputed_raw, mask, own_test))
            scored = (1.0 - mask) * (1.0 if own_test is None else own_test)
            distances = column_wasserstein(codec, true_raw, imputed_raw, scored)
            for name, value in distances.items():
                per_column.setdefault(name, []).append(value)
            figures["wasserstein"].append(float(np.mean(list(distances.values()))))
        if fid is not None:
            figures["fid"].append(fid.fid(imputed))
        if has_labels:
            figures["accuracy"].append(metrics.classification_accuracy(pixel_classifier, imputed, test_labels))
        if has_hidden:
            figures["hidden_accuracy"].append(metrics.classification_accuracy(
                hidden_classifier, hidden_activations(model, test_observed, mask), test_labels))
        figures["test_missing_fraction"].append(masks.realised_missing_fraction(mask))
        seconds["per_repeat"].append(time.perf_counter() - started)
        started = time.perf_counter()
        if repeat == 0:
            grid = {"images": test_x[:GRID_DIGITS], "mask": mask[:GRID_DIGITS],
                    "imputed": imputed[:GRID_DIGITS]}
        progbar.update(repeat + 2, values=[(key, figures[key][-1]) for key in ("rmse", "fid", "accuracy")
                                           if key in figures])

    result = {"cell": cell.name, "method": cell.method, "missingness": cell.missingness,
              "missing_rate": cell.missing_rate, "train_size": len(train_mask), "test_size": len(test_x),
              "train_missing_fraction": masks.realised_missing_fraction(train_mask)}
    result.update({key: summarize(values) for key, values in figures.items()})
    if per_column:
        result["wasserstein_per_column"] = {name: summarize(values) for name, values in per_column.items()}
    result["seconds"] = {key: [round(s, 2) for s in value] if isinstance(value, list) else round(value, 2)
                         for key, value in seconds.items()}
    return result, grid


def figures_line(result: dict[str, Any]) -> str:
    """The cell's main figures in one line (those it has)."""
    names = {"rmse": "RMSE", "rmse_raw": "RMSE (raw units)", "wasserstein": "Wasserstein",
             "fid": "FID", "accuracy": "accuracy"}
    return ", ".join(f"{title} {result[key]['mean']:.4f}" for key, title in names.items() if key in result)


def model_identity(model_dir: str) -> dict[str, Any]:
    """Which trained model a cell's figures come from (a resumed or retrained model changes it)."""
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    return {"model_workdir": os.path.abspath(model_dir),
            "checkpoint": os.path.basename(latest) if latest else None}


def cell_provenance(model_dir: str, settings: EvaluationSettings, fid: FeatureFid | None) -> dict[str, Any]:
    """What a cell's figures come from: its model, the evaluation settings and the FID classifier's
    identity (its weights' hash, so that a classifier retrained in the same place makes the FID stale)."""
    return dict(model_identity(model_dir), evaluation=settings.as_dict(),
                classifier=None if fid is None else fid.identity)


def stored_result(path: str, provenance: dict[str, Any]) -> dict[str, Any] | None:
    """The result stored at ``path`` if it was computed with the same ``provenance`` (model and settings)."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        stored = json.load(f)
    return stored if stored.get("provenance") == provenance else None


def finished_cell(output_dir: str, cell: Cell, provenance: dict[str, Any]) -> dict[str, Any] | None:
    """The stored result of ``cell`` if it was computed with the same model and settings."""
    return stored_result(os.path.join(output_dir, CELLS_DIR, f"{cell.name}.json"), provenance)


def save_cell(output_dir: str, result: dict[str, Any], grid: dict[str, np.ndarray]) -> None:
    """Grid digits first, then the JSON (its presence marks the cell finished); both atomically."""
    cells_dir = os.path.join(output_dir, CELLS_DIR)
    os.makedirs(cells_dir, exist_ok=True)
    temporary = os.path.join(cells_dir, f"{result['cell']}.tmp.npz")
    with open(temporary, "wb") as f:
        np.savez_compressed(f, **grid)
    os.replace(temporary, os.path.join(cells_dir, f"{result['cell']}.npz"))
    write_json_atomically(os.path.join(cells_dir, f"{result['cell']}.json"), result)


def write_outputs(output_dir: str, results: list[dict[str, Any]], run_settings: dict[str, Any],
                  classifier_info: dict[str, Any] | None) -> list[str]:
    """results.json, results.md, the perception-distortion plot and the imputation grid; returns the
    cells without their grid digits (``cells/CELL.npz``). The grid is drawn only when every cell has
    them: a grid of some cells would replace a complete one drawn where all of them were evaluated."""
    write_json_atomically(os.path.join(output_dir, RESULTS_FILE), {
        "settings": run_settings, "classifier": classifier_info,
        "cells": {result["cell"]: result for result in results}})
    temporary = os.path.join(output_dir, f"{TABLE_FILE}.tmp")
    with open(temporary, "w") as f:
        f.write(report.markdown_report(results, run_settings, classifier_info))
    os.replace(temporary, os.path.join(output_dir, TABLE_FILE))
    if all("fid" in result for result in results):
        report.plot_perception_distortion(results, os.path.join(output_dir, PLOT_FILE))
    without_grid = [result["cell"] for result in results
                    if not os.path.exists(os.path.join(output_dir, CELLS_DIR, f"{result['cell']}.npz"))]
    if without_grid:
        return without_grid
    panels: dict[tuple[str, float], dict[str, Any]] = {}
    for result in results:
        with np.load(os.path.join(output_dir, CELLS_DIR, f"{result['cell']}.npz"), allow_pickle=False) as grid:
            key = (result["missingness"], result["missing_rate"])
            title = f"{report.MECHANISM_LABELS.get(key[0], key[0])} {key[1]:g}"
            panel = panels.setdefault(key, {"title": title, "images": grid["images"], "mask": grid["mask"],
                                            "imputed": {}})
            panel["imputed"][result["method"]] = grid["imputed"]
    if panels and all(panel["images"].ndim == 4 for panel in panels.values()):  # vectors make no picture
        report.plot_imputations(list(panels.values()), os.path.join(output_dir, GRID_FILE))
    return []


def run_evaluation(cells: list[Cell], models_dir: str, output_dir: str, dataset: Dataset | Mnist, fid: FeatureFid | None,
                   settings: EvaluationSettings, training: TrainingRequest | None,
                   run_settings: dict[str, Any], log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Evaluates every cell not already finished, writing the outputs after each; returns the results.

    ``dataset`` holds at least as many training examples as any cell's model was (or will be) trained
    on. ``fid``: None when the dataset has no labels to train a feature classifier on.
    """
    dataset = as_dataset(dataset)
    os.makedirs(output_dir, exist_ok=True)
    results = []
    for index, cell in enumerate(cells, start=1):
        model_dir = os.path.join(models_dir, cell.name)
        prefix = f"[{index}/{len(cells)}] {cell.name}"
        provenance = None
        if is_finished(model_dir):
            provenance = cell_provenance(model_dir, settings, fid)
            result = finished_cell(output_dir, cell, provenance)
            if result is not None:
                log(f"{prefix}: already evaluated ({figures_line(result)})")
                results.append(result)
                continue
        model, config = trained_model(cell, model_dir, output_dir, dataset, training, log)
        if provenance is None:
            provenance = cell_provenance(model_dir, settings, fid)
        log(f"{prefix}: evaluating the model in {model_dir}")
        result, grid = evaluate_cell(cell, model, config, dataset, settings, fid)
        with open(os.path.join(model_dir, "metrics.json")) as f:
            result["model"] = {"config": config, "metrics": json.load(f)}
        result["provenance"] = provenance
        result["classifier"] = None if fid is None else fid.info
        save_cell(output_dir, result, grid)
        seconds = result["seconds"]
        log(f"{prefix}: {figures_line(result)}; {seconds['impute_training_digits']:.1f}s imputing and "
            f"{seconds.get('fit_logistic_regression', 0.0):.1f}s fitting on the training examples, "
            f"{np.mean(seconds['per_repeat']):.1f}s per test masking")
        results.append(result)
        write_outputs(output_dir, results, run_settings, None if fid is None else fid.info)
    write_outputs(output_dir, results, run_settings, None if fid is None else fid.info)
    log(f"results: {os.path.join(output_dir, RESULTS_FILE)}, {os.path.join(output_dir, TABLE_FILE)}")
    return results


def comparable_settings(result: dict[str, Any]) -> dict[str, Any]:
    """What two cells must share to stand in one table: the data, the test maskings, the logistic fit
    and the FID classifier itself (not the directory it was read from, which differs between machines)."""
    provenance, data = result["provenance"], result["model"]["config"]["data"]
    return {"dataset": {key: data[key] for key in DATASET_KEYS if key in data} or {"dataset": MNIST},
            **{key: value for key, value in provenance["evaluation"].items() if key != "classifier_dir"},
            "FID classifier": provenance["classifier"]}


def _shown(key: str, value: Any) -> str:
    if key == "FID classifier":
        return "none" if value is None else f"SHA-256 {value['sha256'][:12]}…"
    return repr(value)


def collect_results(cells: list[Cell], output_dir: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The stored results of those ``cells`` evaluated so far (``OUTPUT_DIR/cells``), in one run or in
    several (other machines, sessions or cluster jobs), after checking that they are comparable;
    and the names of the cells not evaluated yet. None evaluated is an error."""
    results: list[dict[str, Any]] = []
    missing: list[str] = []
    for cell in cells:
        path = os.path.join(output_dir, CELLS_DIR, f"{cell.name}.json")
        if not os.path.exists(path):
            missing.append(cell.name)
            continue
        with open(path) as f:
            result = json.load(f)
        if "classifier" not in result.get("provenance", {}):
            raise WorkdirError(f"{path}: evaluated before cells recorded their FID classifier; evaluate "
                               "the cell again")
        if results:
            reference, own = comparable_settings(results[0]), comparable_settings(result)
            differing = [key for key in reference if reference[key] != own.get(key)]
            if differing:
                key = differing[0]
                raise WorkdirError(f"{path}: evaluated with another {key} ({_shown(key, own.get(key))}) than "
                                   f"{results[0]['cell']} ({_shown(key, reference[key])}); the cells of one "
                                   "table must share it")
        results.append(result)
    if not results:
        raise WorkdirError(f"{os.path.join(output_dir, CELLS_DIR)}: none of the {len(cells)} cells asked for "
                           "has been evaluated there; evaluate them first (without --collect)")
    return results, missing
