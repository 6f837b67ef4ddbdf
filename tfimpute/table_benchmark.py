"""Tables with holes: tfimpute's models against column means and scikit-learn's IterativeImputer.

    python -m tfimpute.table_benchmark --table=diabetes --missing_rate=0.3 --workdir=/tmp/tables

A scikit-learn table (``wine`` or ``diabetes``, bundled, no download) loses ``--missing_rate`` of
its cells completely at random (seed ``--seed``); a seeded 20% of the rows is held out. Every
imputer learns from the training rows with their holes only, then fills the holes of the held-out
rows; the RMSE is over those holes, against the values that were removed, on the [0, 1] scale of
the training rows' min-max (so that columns weigh alike) and in raw units. Each tfimpute model is
trained by :func:`tfimpute.experiment.train` on the data's own holes (as ``tfimpute.train`` does
with an ``npz:`` dataset) and fills through its ``impute_nan`` computation
(:mod:`tfimpute.filling`), as ``tfimpute.impute`` would. Prints a Markdown table and, last, one
JSON object.
"""

from __future__ import annotations

from tfimpute import cli  # noqa: F401  (quiets TensorFlow's start-up logs; import first)

import json
import os

import numpy as np
from absl import app, flags
from sklearn import datasets as sklearn_datasets
from sklearn.experimental import enable_iterative_imputer  # noqa: F401  (makes IterativeImputer importable)
from sklearn.impute import IterativeImputer, SimpleImputer

from tfimpute import experiment, filling
from tfimpute.datasets import load_dataset
from tfimpute.errors import InvalidInputError
from tfimpute.training import TrainingOptions

FLAGS = flags.FLAGS
TABLES = {"wine": sklearn_datasets.load_wine, "diabetes": lambda: sklearn_datasets.load_diabetes(scaled=False)}
# Settings per model for tables of a dozen columns (the zoo's defaults are sized for images).
MODEL_SETTINGS = {
    "lmrbm": {"hidden_units": 64, "learning_rate": 0.01, "momentum": 0.5},
    "rbm": {"hidden_units": 64, "learning_rate": 0.01, "momentum": 0.5},
    "vae": {"latent_dim": 4, "vae_hidden_units": [64, 64]},
    "misgan": {"latent_size": 16, "gan_width": 16, "imputer_units": 64},
    "mean": {},
}


def define_flags() -> None:
    flags.DEFINE_enum("table", "diabetes", sorted(TABLES), "scikit-learn table.")
    flags.DEFINE_float("missing_rate", 0.3, "Share of the cells removed completely at random.")
    flags.DEFINE_list("models", ["mean", "lmrbm", "vae", "misgan"], "tfimpute models to train.")
    flags.DEFINE_integer("epochs", 300, "Training epochs of every tfimpute model.")
    flags.DEFINE_integer("batch_size", 32, "Minibatch size.")
    flags.DEFINE_integer("seed", 0, "Seed of the holes, the split and the training.")
    flags.DEFINE_string("workdir", None, "Where the data file and the models' workdirs go (required).")


def rmse(truth: np.ndarray, filled: np.ndarray, holes: np.ndarray, spread: np.ndarray) -> tuple[float, float]:
    """RMSE over the holes: on the training rows' [0, 1] scale, and in raw units."""
    scaled = ((filled - truth) / spread)[holes]
    return float(np.sqrt(np.mean(scaled ** 2))), float(np.sqrt(np.mean((filled - truth)[holes] ** 2)))


def main(argv: list[str]) -> None:
    if not FLAGS.workdir:
        raise InvalidInputError("--workdir is required")
    if not 0.0 < FLAGS.missing_rate < 1.0:
        raise InvalidInputError(f"--missing_rate must be in (0, 1), got {FLAGS.missing_rate}")
    unknown = [name for name in FLAGS.models if name not in MODEL_SETTINGS]
    if unknown:
        raise InvalidInputError(f"--models: {', '.join(unknown)} not benchmarked here; choose from "
                                f"{', '.join(MODEL_SETTINGS)}")
    rng = np.random.default_rng(FLAGS.seed)
    truth = TABLES[FLAGS.table]().data.astype(np.float32)
    order = rng.permutation(len(truth))
    cut = int(round(0.8 * len(truth)))
    holes = rng.random(truth.shape) < FLAGS.missing_rate
    with_holes = np.where(holes, np.nan, truth).astype(np.float32)
    train_rows, test_rows = order[:cut], order[cut:]
    os.makedirs(FLAGS.workdir, exist_ok=True)
    path = os.path.join(FLAGS.workdir, f"{FLAGS.table}.npz")
    np.savez(path, x=with_holes[train_rows], x_test=with_holes[test_rows])
    observed_train = with_holes[train_rows]
    spread = np.nanmax(observed_train, axis=0) - np.nanmin(observed_train, axis=0)
    test_truth, test_holes = truth[test_rows], holes[test_rows]
    print(f"{FLAGS.table}: {len(train_rows)} training rows, {len(test_rows)} held-out rows, "
          f"{truth.shape[1]} columns; {holes.mean():.3f} of the cells missing; scored: the "
          f"{int(test_holes.sum())} holes of the held-out rows")

    results: dict[str, dict[str, float]] = {}
    for name, imputer in (("column means (sklearn SimpleImputer)", SimpleImputer(strategy="mean")),
                          ("sklearn IterativeImputer", IterativeImputer(max_iter=10, random_state=FLAGS.seed))):
        imputer.fit(observed_train)
        filled = imputer.transform(with_holes[test_rows])
        results[name] = dict(zip(("rmse", "rmse_raw"), rmse(test_truth, filled, test_holes, spread)))
    dataset = load_dataset(f"npz:{path}")
    data = {"dataset": f"npz:{path}", "test_fraction": 0.1, "train_size": len(dataset.train_x),
            "test_size": len(dataset.test_x), "missingness": "independent", "missing_rate": FLAGS.missing_rate,
            "mask_seed": FLAGS.seed, "num_patches": 32, "own_holes_only": True}
    for model in FLAGS.models:
        run_dir = os.path.join(FLAGS.workdir, model)
        experiment.train(model, dataset, data, {**MODEL_SETTINGS[model], "seed": FLAGS.seed},
                         TrainingOptions(epochs=FLAGS.epochs, batch_size=FLAGS.batch_size, seed=FLAGS.seed,
                                         eval_size=len(dataset.test_x)), run_dir)
        imputer, _, _ = filling.from_workdir(run_dir)
        filled = filling.fill(imputer, with_holes[test_rows], verbose=False)
        results[f"tfimpute {model}"] = dict(zip(("rmse", "rmse_raw"), rmse(test_truth, filled, test_holes, spread)))

    reference = results["column means (sklearn SimpleImputer)"]["rmse"]
    print("\n| imputer | RMSE ([0, 1] scale) | × column means | RMSE (raw units) |\n|---|---|---|---|")
    for name, figures in results.items():
        print(f"| {name} | {figures['rmse']:.4f} | {figures['rmse'] / reference:.3f} | {figures['rmse_raw']:.3f} |")
    print(json.dumps({"table": FLAGS.table, "missing_rate": FLAGS.missing_rate, "epochs": FLAGS.epochs,
                      "seed": FLAGS.seed, "results": results}))


if __name__ == "__main__":
    define_flags()
    app.run(cli.run_main(main))
