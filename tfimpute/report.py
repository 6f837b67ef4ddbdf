"""Tables and figures of an evaluation (the paper's Table 1 and Fig. 1 layouts).

* :func:`markdown_report`: RMSE / FID / accuracy per mechanism x rate x method, plus the
  "RBM †" hidden-layer accuracy columns, with the paper's Table 1 for the same cells.
* :func:`plot_perception_distortion`: RMSE (distortion) against FID (perception), one
  curve per method across rates, one panel per mechanism.
* :func:`plot_imputations`: the same test digits masked and imputed by every method.
* :func:`frontier_report` and :func:`plot_frontier`: the perception–distortion frontier of
  :mod:`tfimpute.frontier` (every point of every method's knob, the lower envelope marked).

Figures are drawn with matplotlib's Agg canvas (no display, no global pyplot state).
Cells are the dicts :mod:`tfimpute.evaluation` writes (``method``, ``missingness``,
``missing_rate`` and ``{"mean", "stderr"}`` summaries).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tfimpute import visualize
from tfimpute.datasets import MNIST

MECHANISM_LABELS = {"independent": "I.M.", "square": "S.O.", "patch": "P.M."}
# (result key, column title, decimals at most, factor for display)
COLUMNS = (("rmse", "RMSE", 3, 1.0), ("fid", "FID", 1, 1.0), ("accuracy", "Acc. %", 1, 100.0))
TABLE_COLUMNS = (("rmse", "RMSE", 3, 1.0), ("rmse_raw", "RMSE raw", 3, 1.0), ("wasserstein", "W1", 3, 1.0),
                 ("fid", "FID", 1, 1.0), ("accuracy", "Acc. %", 1, 100.0))
HIDDEN_COLUMN = ("hidden_accuracy", "RBM † %", 1, 100.0)

# Table 1 of the paper: (RMSE, FID, accuracy %) per method, and the RBM † accuracies.
PAPER_TABLE1: dict[tuple[str, float], dict[str, tuple[float, float, float]]] = {
    ("independent", 0.3): {"mean": (.257, 25, 90.5), "inpaint": (.126, 3.4, 91.9), "misgan": (.128, 0.2, 92.2),
                           "rbm": (.124, 0.6, 92.8), "lmrbm": (.121, 0.5, 92.8)},
    ("independent", 0.6): {"mean": (.257, 72, 87.4), "inpaint": (.155, 22, 89.7), "misgan": (.167, 0.8, 89.5),
                           "rbm": (.156, 5.8, 90.4), "lmrbm": (.152, 5.3, 90.8)},
    ("independent", 0.9): {"mean": (.257, 115, 71.5), "inpaint": (.224, 87, 74.2), "misgan": (.326, 11, 35),
                           "rbm": (.228, 53, 57.8), "lmrbm": (.222, 46, 60.0)},
    ("square", 0.3): {"mean": (.058, 0.1, 92.0), "inpaint": (.067, 0.1, 92.0), "misgan": (.044, 0.0, 92.5),
                      "rbm": (.042, 0.0, 92.2), "lmrbm": (.036, 0.0, 92.3)},
    ("square", 0.6): {"mean": (.169, 6.3, 88.3), "inpaint": (.175, 6.4, 88.3), "misgan": (.159, 1, 89.7),
                      "rbm": (.179, 4.3, 88.8), "lmrbm": (.156, 2.9, 89.3)},
    ("square", 0.9): {"mean": (.247, 69, 47), "inpaint": (.277, 64, 49.9), "misgan": (.322, 4, 34.8),
                      "rbm": (.287, 54, 41.4), "lmrbm": (.271, 47, 42.5)},
    ("patch", 0.3): {"mean": (.262, 18, 85.4), "inpaint": (.200, 8.8, 87.9), "misgan": (.196, 0.7, 89.1),
                     "rbm": (.217, 4.2, 87.3), "lmrbm": (.183, 2.8, 89.3)},
    ("patch", 0.6): {"mean": (.264, 58, 74.6), "inpaint": (.227, 39, 79.3), "misgan": (.247, 2.9, 74.6),
                     "rbm": (.249, 24, 76.2), "lmrbm": (.219, 18, 78.7)},
    ("patch", 0.9): {"mean": (.262, 111, 44.2), "inpaint": (.277, 100, 48.0), "misgan": (.369, 16, 18.4),
                     "rbm": (.282, 87, 30.8), "lmrbm": (.267, 63, 33.4)},
}
PAPER_HIDDEN_ACCURACY: dict[tuple[str, float], dict[str, float]] = {
    ("independent", 0.3): {"rbm": 97.4, "lmrbm": 97.7}, ("independent", 0.6): {"rbm": 94.5, "lmrbm": 95.1},
    ("independent", 0.9): {"rbm": 70.7, "lmrbm": 71.8}, ("square", 0.3): {"rbm": 98.4, "lmrbm": 98.4},
    ("square", 0.6): {"rbm": 96.4, "lmrbm": 96.4}, ("square", 0.9): {"rbm": 54.2, "lmrbm": 53.6},
    ("patch", 0.3): {"rbm": 93.0, "lmrbm": 95.0}, ("patch", 0.6): {"rbm": 80.7, "lmrbm": 85.4},
    ("patch", 0.9): {"rbm": 39.9, "lmrbm": 46.2},
}
PAPER_FORMATS = (".3f", "g", ".1f")  # RMSE, FID (as printed: 115, 3.4, 0.1), accuracy
MISSING = "–"


def format_estimate(mean: float, stderr: float | None, decimals: int) -> str:
    """``mean(se)`` as in Table 1: at most ``decimals`` decimals and no finer than the first
    significant digit of the standard error, which is shown in units of the last digit."""
    if stderr is None or not math.isfinite(stderr):
        return f"{mean:.{decimals}f}"
    if stderr > 0:
        decimals = min(decimals, max(0, -math.floor(math.log10(stderr))))
    return f"{mean:.{decimals}f}({round(stderr * 10 ** decimals)})"


def _ordered(values: list[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


def _row_keys(cells: list[dict[str, Any]]) -> list[tuple[str, float]]:
    return _ordered([(cell["missingness"], cell["missing_rate"]) for cell in cells])


def _row_label(missingness: str, rate: float) -> list[str]:
    return [MECHANISM_LABELS.get(missingness, missingness), f"{rate:g}"]


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def results_table(cells: list[dict[str, Any]]) -> str:
    """Our figures in Table 1's layout: mean(standard error over test maskings); a figure no cell
    has (e.g. FID without labels) gets no column."""
    methods = _ordered([cell["method"] for cell in cells])
    hidden_methods = _ordered([cell["method"] for cell in cells if "hidden_accuracy" in cell])
    by_key = {(cell["method"], cell["missingness"], cell["missing_rate"]): cell for cell in cells}
    present = [column for column in TABLE_COLUMNS if any(column[0] in cell for cell in cells)]
    columns = [(column, method) for column in present for method in methods]
    columns += [(HIDDEN_COLUMN, method) for method in hidden_methods]
    header = ["Mech.", "Rate"] + [f"{title} {method}" for (_, title, _, _), method in columns]
    rows = []
    for missingness, rate in _row_keys(cells):
        row = _row_label(missingness, rate)
        for (key, _, decimals, factor), method in columns:
            cell = by_key.get((method, missingness, rate))
            if cell is None or key not in cell:
                row.append(MISSING)
                continue
            stderr = cell[key]["stderr"]
            row.append(format_estimate(cell[key]["mean"] * factor,
                                       None if stderr is None else stderr * factor, decimals))
        rows.append(row)
    return _table(header, rows)


def paper_table(cells: list[dict[str, Any]]) -> str | None:
    """The paper's Table 1 for the same cells and methods (None when it has none of them)."""
    methods = _ordered([cell["method"] for cell in cells])
    hidden_methods = _ordered([cell["method"] for cell in cells if "hidden_accuracy" in cell])
    keys = [key for key in _row_keys(cells) if key in PAPER_TABLE1]
    paper_methods = [m for m in methods if any(m in PAPER_TABLE1[key] for key in keys)]
    if not paper_methods:
        return None
    header = ["Mech.", "Rate"] + [f"{title} {method}" for _, title, _, _ in COLUMNS for method in paper_methods]
    header += [f"{HIDDEN_COLUMN[1]} {method}" for method in hidden_methods]
    rows = []
    for key in keys:
        row = _row_label(*key)
        for index, number_format in enumerate(PAPER_FORMATS):
            row += [format(PAPER_TABLE1[key][m][index], number_format) if m in PAPER_TABLE1[key] else MISSING
                    for m in paper_methods]
        row += [f"{PAPER_HIDDEN_ACCURACY[key][m]:.1f}" if m in PAPER_HIDDEN_ACCURACY[key] else MISSING
                for m in hidden_methods]
        rows.append(row)
    return _table(header, rows)


def markdown_report(cells: list[dict[str, Any]], settings: dict[str, Any],
                    classifier: dict[str, Any] | None) -> str:
    """The evaluation as Markdown: our table, notes on how it was measured, the paper's table (MNIST)."""
    dataset = settings.get("dataset", MNIST)
    repeats = settings["repeats"]
    title = ("# Imputation of MNIST: distortion, perception and accuracy (Table 1 layout)" if dataset == MNIST
             else f"# Imputation of {dataset}: distortion, perception and accuracy")
    if classifier is None:
        fid_note = "* FID: not computed (the dataset has no labels to train a feature classifier on)."
    else:
        fid_note = (
            f"* FID: Fréchet distance between the features (layer `{classifier['feature_layer']}`, "
            f"{classifier['feature_units']} units) of this project's classifier trained on the dataset (test "
            f"accuracy {100 * classifier['test_accuracy']:.2f}%) for the imputed test examples and for its "
            f"{classifier['train_size']} training examples; the complete test examples score "
            f"{classifier['fid_of_complete_test_digits']:.2f}. Not on the scale of Inception-based FID nor of "
            "the paper's (its classifier differs): compare orderings, not values.")
    parts = [
        title,
        results_table(cells),
        f"Mean over {repeats} independent test masking(s) of {settings['test_size']} test examples "
        f"(seeds {', '.join(map(str, settings['test_mask_seeds']))}); in parentheses the standard error "
        "over maskings in units of the last digit shown (absent with a single masking). One trained "
        "model per cell (the paper also retrains 3 times).",
        "* RMSE: per example over its missing entries that the data observed (scaled to [0, 1]), "
        "averaged over examples; RMSE raw: the same in the data's units; W1: per column, the "
        "Wasserstein-1 distance between true and imputed values of those entries, averaged over columns.\n"
        f"{fid_note}\n"
        "* Acc.: multinomial logistic regression fit on the model's imputation of the incomplete "
        "training examples it was trained on, scored on the imputed test examples; RBM †: the same on "
        "hidden-layer activations p(h | v_o).",
    ]
    if settings.get("not_evaluated"):
        parts.append(f"Not evaluated yet: {', '.join(settings['not_evaluated'])}.")
    paper = paper_table(cells) if dataset == MNIST else None
    if paper is not None:
        parts += ["## The paper's Table 1 for the same cells", paper]
    return "\n\n".join(parts) + "\n"


def _rmse_fid_curve(axes, points: list[dict[str, Any]], labels: list[str], name: str, fontsize: int) -> None:
    """One method's points as an RMSE-FID curve with standard-error bars, each point labelled."""
    rmse = [point["rmse"]["mean"] for point in points]
    fid = [point["fid"]["mean"] for point in points]
    axes.errorbar(rmse, fid, xerr=[point["rmse"]["stderr"] or 0.0 for point in points],
                  yerr=[point["fid"]["stderr"] or 0.0 for point in points], marker="o", capsize=2, label=name)
    for label, x, y in zip(labels, rmse, fid):
        axes.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=fontsize)


def _finish_rmse_fid_axes(axes, title: str, fid_label: str) -> None:
    axes.set_title(title)
    axes.set_xlabel("RMSE over missing pixels (distortion)")
    axes.set_ylabel(fid_label)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)


def plot_perception_distortion(cells: list[dict[str, Any]], path: str) -> None:
    """RMSE vs FID, one curve per method across rates (labelled), one panel per mechanism."""
    mechanisms = _ordered([cell["missingness"] for cell in cells])
    methods = _ordered([cell["method"] for cell in cells])
    figure = Figure(figsize=(4.8 * len(mechanisms), 4.2))
    FigureCanvasAgg(figure)
    for axes, missingness in zip(figure.subplots(1, len(mechanisms), squeeze=False)[0], mechanisms):
        for method in methods:
            points = sorted((cell["missing_rate"], cell) for cell in cells
                            if cell["method"] == method and cell["missingness"] == missingness)
            if points:
                _rmse_fid_curve(axes, [cell for _, cell in points], [f"{rate:g}" for rate, _ in points], method, 7)
        _finish_rmse_fid_axes(axes, f"{MECHANISM_LABELS.get(missingness, missingness)} (labels: missing rate)",
                              "FID, MNIST-classifier features (perception)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def frontier_report(points: list[dict[str, Any]], settings: dict[str, Any]) -> str:
    """The frontier as Markdown: per condition (mechanism x rate), every method's points with RMSE and
    FID, those on the lower envelope in bold."""
    parts = ["# The perception–distortion frontier",
             f"Mean over {settings['repeats']} test masking(s) of {settings['test_size']} test examples (seeds "
             f"{', '.join(map(str, settings['test_mask_seeds']))}); in parentheses the standard error in units "
             "of the last digit. **Bold**: on the lower envelope (no other point has both a lower RMSE and a "
             "lower FID). FID is on this project's classifier's features: compare orderings, not values."]
    if settings.get("fine_tuned_methods"):
        parts.append(f"{', '.join(_ordered(settings['fine_tuned_methods']))}: the knob is a training setting, so "
                     f"every point (the trained model's own setting included) is the trained model fine-tuned "
                     f"with it for {settings['fine_tune_epochs']} more epoch(s).")
    for missingness, rate in _row_keys(points):
        rows = []
        for point in points:
            if (point["missingness"], point["missing_rate"]) != (missingness, rate):
                continue
            cells = [point["method"], point["point"], format_estimate(point["rmse"]["mean"], point["rmse"]["stderr"], 4),
                     format_estimate(point["fid"]["mean"], point["fid"]["stderr"], 2)]
            rows.append([f"**{cell}**" for cell in cells] if point.get("on_envelope") else cells)
        parts += [f"## {' '.join(_row_label(missingness, rate))}", _table(["method", "setting", "RMSE", "FID"], rows)]
    return "\n\n".join(parts) + "\n"


def plot_frontier(points: list[dict[str, Any]], path: str) -> None:
    """RMSE against FID, one curve per method through its knob's settings (labelled), the lower
    envelope dashed; one panel per mechanism x rate."""
    conditions = _row_keys(points)
    figure = Figure(figsize=(6.4 * len(conditions), 5.2))
    FigureCanvasAgg(figure)
    for axes, (missingness, rate) in zip(figure.subplots(1, len(conditions), squeeze=False)[0], conditions):
        members = [point for point in points if (point["missingness"], point["missing_rate"]) == (missingness, rate)]
        for method in _ordered([point["method"] for point in members]):
            curve = [point for point in members if point["method"] == method]
            _rmse_fid_curve(axes, curve, [point["point"] for point in curve], method, 6)
        envelope = sorted((p["rmse"]["mean"], p["fid"]["mean"]) for p in members if p.get("on_envelope"))
        if envelope:
            axes.step(*zip(*envelope), where="post", color="black", linestyle="--", linewidth=1,
                      label="lower envelope")
        axes.set_yscale("log")
        _finish_rmse_fid_axes(axes, f"{' '.join(_row_label(missingness, rate))}: perception–distortion frontier",
                              "FID, classifier features (perception)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def plot_imputations(panels: list[dict[str, Any]], path: str) -> None:
    """One panel per mechanism x rate: the masked digits (missing pixels blue), each method's
    imputation, and the true digits.

    ``panels`` items: ``title``, ``images`` and ``mask`` [G, H, W, C], and ``imputed``,
    a dict method -> [G, H, W, C].
    """
    row_counts = [len(panel["imputed"]) + 2 for panel in panels]
    columns = max(len(panel["images"]) for panel in panels)
    figure = Figure(figsize=(0.5 * columns + 1.4, 0.5 * sum(row_counts) + 0.45 * len(panels)))
    FigureCanvasAgg(figure)
    axes_list = figure.subplots(len(panels), 1, squeeze=False, gridspec_kw={"height_ratios": row_counts})[:, 0]
    for axes, panel in zip(axes_list, panels):
        labels = ["observed", *panel["imputed"], "true"]
        rows = [panel["images"] * panel["mask"], *panel["imputed"].values(), panel["images"]]
        grid = visualize.image_grid(rows, masks=[panel["mask"]] + [None] * (len(rows) - 1))
        axes.imshow(grid, interpolation="nearest")
        row_height = grid.shape[0] / len(rows)
        axes.set_yticks(np.arange(len(rows)) * row_height + row_height / 2, labels, fontsize=8)
        axes.set_xticks([])
        axes.set_title(panel["title"], fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
