"""Evaluates imputers as the paper's Table 1 does (Section 4): RMSE, FID and classification accuracy.

    python -m tfimpute.evaluate --methods=mean,inpaint --missingness=independent,square,patch \
        --missing_rates=0.3,0.6,0.9 --repeats=2 --data_dir=../shared/data/mnist \
        --workdir=/work/runs/eval_baselines --classifier_dir=/work/runs/mnist_classifier

Cells are method x mechanism x rate. The trained model of a cell lives at
``WORKDIR/{method}_{missingness}_{rate}`` (rate as typed in Python, e.g.
``lmrbm_independent_0.3``). A finished workdir (with ``metrics.json``) is used as it
is; a missing one is trained first through :func:`tfimpute.experiment.train` with the
flags given (``--epochs``, ``--train_size``, ``--mask_seed``, ``--hidden_units``, ...),
unless ``--notrain_missing``. A workdir whose training has not finished is an error
(another process may be training it), except when this evaluation started it. So is
a model trained with ``--complete_training_data`` or ``--binarize`` (not comparable).

For each cell:

* the model imputes the incomplete training digits it was trained on (the masks
  its ``config.json`` implies) and a multinomial logistic regression is fit on
  the imputations (:class:`tfimpute.metrics.LogisticFit`); RBMs (``lmrbm``,
  ``rbm``) also get one fit on their hidden activations p(h | v_o) (the paper's
  "RBM †" columns);
* for each of ``--repeats`` independent test maskings (seed ``--test_mask_seed``
  + repeat, distinct from the training mask seed, the same for every method): the
  RMSE over the missing pixels, the FID of the imputed test digits
  (:class:`tfimpute.classifier.FeatureFid`) and the accuracies.

Figures are means over the maskings with standard errors (std / sqrt(repeats)).

``--frontier`` sweeps each method's perception–distortion knob instead (its model's
``frontier_points``; see :mod:`tfimpute.frontier`) and writes ``OUTPUT_DIR/frontier/``:

    python -m tfimpute.evaluate --frontier --methods=rbm,lmrbm,dcgan,cgan,vae,misgan \
        --missingness=independent --missing_rates=0.6 --data_dir=../shared/data/mnist \
        --workdir=runs/frontier --classifier_dir=runs/mnist_classifier

``--dataset`` other than MNIST (see README, "Your own data"): the RMSE is over the hidden entries
the data observed; tables also get it in raw units and a per-column Wasserstein-1 distance; the
FID classifier is trained on the dataset's labelled training split into WORKDIR/feature_classifier
when missing (no labels: no FID, said in one line); the logistic regression gets at least
``LOGISTIC_STEPS`` steps. A trained cell must come from the same dataset flags.

Writes to ``--output_dir`` (default: ``--workdir``): ``cells/CELL.json`` and
``cells/CELL.npz`` (digits for the grid) as each cell finishes, atomically, so an
interrupted evaluation resumes with the next cell; then, after every cell,
``results.json`` (every figure, its standard error and the settings), ``results.md``
(Table 1's layout, next to the paper's), ``perception_distortion.png`` and
``imputations.png``.

``--collect`` writes those four files from the cells stored in ``OUTPUT_DIR/cells`` alone,
without models or data: a table whose cells were evaluated in several runs (other machines,
sessions or cluster jobs, each with ``--output_dir`` pointing at copies of the same folder).
The cells must share the test maskings, the logistic fit and the FID classifier (the hash of
its weights); otherwise the first that differs is named in one line. Cells asked for but not
evaluated yet are named in the output and in ``results.md``. The grid is drawn only when every
cell's ``.npz`` is there (it holds test digits, which a repository may not carry); otherwise the
existing ``imputations.png`` is left as it was and the cells without it are named.
"""

from __future__ import annotations

import math
import os

from tfimpute import cli  # noqa: F401  (quiets TensorFlow's start-up logs; import first)

from absl import app, flags

from tfimpute import classifier, datasets, frontier
from tfimpute.classifier import FeatureFid, default_classifier_dir
from tfimpute.errors import InvalidInputError
from tfimpute.metrics import LogisticFit
from tfimpute.models import registry
from tfimpute.evaluation import (GRID_FILE, RESULTS_FILE, TABLE_FILE, Cell, EvaluationSettings, TrainingRequest,
                                 check_cell, collect_results, parse_rates, plan_cells, run_evaluation, write_outputs)
from tfimpute.training import TrainingOptions

FLAGS = flags.FLAGS
CLASSIFIER_EPOCHS = 5  # the feature classifier of a dataset other than MNIST, trained when missing
LOGISTIC_STEPS = 1000  # about what the Table-1 fit takes on MNIST's 50,000 digits
FEATURE_CLASSIFIER_DIR = "feature_classifier"  # under --workdir, for a dataset other than MNIST


def define_flags() -> None:
    """Defined only when run as a program (like tfimpute.train and tfimpute.export)."""
    cli.define_dataset_flags()
    cli.define_training_flags()
    cli.define_setting_flags()
    flags.DEFINE_list("methods", ["mean", "inpaint", "rbm", "lmrbm"], "Imputers to evaluate (registry names).")
    flags.DEFINE_list("missingness", ["independent", "square", "patch"], "Missingness mechanisms.")
    flags.DEFINE_list("missing_rates", ["0.3", "0.6", "0.9"], "Missing rates in (0, 1).")
    flags.DEFINE_integer("repeats", 2, "Independent test maskings per cell (paper: 10).")
    flags.DEFINE_integer("test_mask_seed", 1000,
                         "Seed of the first test masking; repeat r uses test_mask_seed + r.")
    flags.DEFINE_string("workdir", None,
                        "Directory of the trained models, one per cell: WORKDIR/{method}_{missingness}_{rate}.")
    flags.DEFINE_string("output_dir", None, "Where the results go; default: --workdir.")
    flags.DEFINE_string("classifier_dir", None,
                        "Trained MNIST classifier for the FID (python -m tfimpute.train --model=mnist_classifier); "
                        "default: $TFIMPUTE_CLASSIFIER_DIR, else WORKDIR/mnist_classifier.")
    flags.DEFINE_boolean("train_missing", True,
                         "Train the cells whose workdir does not exist (with the training flags); "
                         "--notrain_missing makes a missing workdir an error.")
    flags.DEFINE_integer("epochs", 20, "Training epochs of cells that are trained here (paper: 500).")
    flags.DEFINE_float("checkpoint_minutes", 10.0, "Mid-epoch checkpoint interval of cells trained here.")
    flags.DEFINE_boolean("frontier", False,
                         "Sweep each method's perception–distortion knob (RMSE and FID per setting, the lower "
                         "envelope) into OUTPUT_DIR/frontier instead of the Table-1 evaluation.")
    flags.DEFINE_boolean("collect", False,
                         "Write the table and plots of the cells already evaluated into OUTPUT_DIR/cells, in "
                         "this run or in earlier ones (other machines or cluster jobs), without their models "
                         "or data; they must share the test maskings and the FID classifier. Cells not "
                         "evaluated yet are named in the output.")
    flags.DEFINE_integer("frontier_fine_tune_epochs", 1,
                         "--frontier: epochs a method whose knob is a training setting (MisGAN's γ_h) is "
                         "fine-tuned from its trained model at each setting.")


def logistic_fit(train_size: int, dataset: str) -> LogisticFit:
    """MNIST: the Table-1 budget (10 epochs of 50,000 digits, about 1,000 steps). A smaller dataset
    gets as many epochs as give the same number of steps, so that the regression is not left unfit."""
    if dataset == datasets.MNIST:
        return LogisticFit()
    batches = math.ceil(train_size / LogisticFit.batch_size)
    return LogisticFit(epochs=max(LogisticFit.epochs, math.ceil(LOGISTIC_STEPS / batches)))


def feature_fid(dataset: datasets.Dataset, classifier_dir: str) -> FeatureFid | None:
    """The FID of ``classifier_dir``; for a dataset other than MNIST, the classifier is trained there
    first when missing (None, said in one line, when the dataset has no labels)."""
    if FLAGS.dataset != datasets.MNIST and not os.path.exists(os.path.join(classifier_dir, classifier.METRICS_FILE)):
        if dataset.train_labels is None:
            print(f"FID skipped: {dataset.name} has no labels to train a feature classifier on")
            return None
        print(f"training the feature classifier of the FID on {dataset.name} into {classifier_dir}")
        classifier.train_classifier(dataset, classifier_dir, CLASSIFIER_EPOCHS, FLAGS.batch_size, FLAGS.seed)
    return FeatureFid(classifier_dir, dataset.name)


def collect(cells: list[Cell], output_dir: str) -> None:
    """``--collect``: results.json, results.md and the plots of stored cells (no model, no data read)."""
    results, missing = collect_results(cells, output_dir)
    provenance = results[0]["provenance"]
    run_settings = {
        "dataset": results[0]["model"]["config"]["data"].get("dataset", datasets.MNIST),
        "methods": list(dict.fromkeys(cell.method for cell in cells)),
        "missingness": list(dict.fromkeys(cell.missingness for cell in cells)),
        "missing_rates": list(dict.fromkeys(cell.missing_rate for cell in cells)),
        "models_dirs": sorted({os.path.dirname(result["provenance"]["model_workdir"]) for result in results}),
        **{key: value for key, value in provenance["evaluation"].items() if key != "classifier_dir"},
        "classifier_sha256": None if provenance["classifier"] is None else provenance["classifier"]["sha256"],
        "collected": True,
        "not_evaluated": missing,
    }
    without_grid = write_outputs(output_dir, results, run_settings, results[0]["classifier"])
    if without_grid:
        print(f"imputation grid not drawn ({os.path.join(output_dir, GRID_FILE)} left as it was): no grid digits "
              f"for {', '.join(without_grid)}; they stay in cells/ where those cells were evaluated")
    print(f"collected {len(results)} of {len(cells)} cells into {os.path.join(output_dir, RESULTS_FILE)} and "
          f"{os.path.join(output_dir, TABLE_FILE)}" + (f"; not evaluated yet: {', '.join(missing)}" if missing else ""))


def main(argv: list[str]) -> None:
    if FLAGS.collect:
        if FLAGS.frontier:
            raise InvalidInputError("--collect and --frontier do not go together: --collect tabulates "
                                    "evaluated cells")
        if not (FLAGS.output_dir or FLAGS.workdir):
            raise InvalidInputError("--collect needs --output_dir (or --workdir): where the evaluated cells are")
        collect(plan_cells(FLAGS.methods, FLAGS.missingness, parse_rates(FLAGS.missing_rates)),
                FLAGS.output_dir or FLAGS.workdir)
        return
    if not FLAGS.workdir:
        raise InvalidInputError("--workdir is required")
    if FLAGS.repeats < 1:
        raise InvalidInputError("--repeats must be >= 1")
    if FLAGS.frontier and FLAGS.frontier_fine_tune_epochs < 1:
        raise InvalidInputError("--frontier_fine_tune_epochs must be >= 1")
    if FLAGS.epochs < 0 or FLAGS.batch_size < 1:
        raise InvalidInputError("--epochs must be >= 0 and --batch_size >= 1")
    cells = plan_cells(FLAGS.methods, FLAGS.missingness, parse_rates(FLAGS.missing_rates))
    output_dir = FLAGS.output_dir or FLAGS.workdir
    options = cli.dataset_options()
    classifier_dir = FLAGS.classifier_dir or (default_classifier_dir(FLAGS.workdir) if FLAGS.dataset == datasets.MNIST
                                              else os.path.join(FLAGS.workdir, FEATURE_CLASSIFIER_DIR))

    def training_request(train_size: int, test_size: int | None) -> TrainingRequest | None:
        if not FLAGS.train_missing:
            return None
        return TrainingRequest(
            data={**options, "train_size": train_size, "test_size": test_size,
                  "mask_seed": FLAGS.mask_seed, "num_patches": FLAGS.num_patches},
            model_settings=cli.all_settings_from_flags(),
            options=TrainingOptions(epochs=FLAGS.epochs, batch_size=FLAGS.batch_size, seed=FLAGS.seed,
                                    checkpoint_minutes=FLAGS.checkpoint_minutes))

    # The cells' workdirs are checked before any data are read, so a wrong one fails at once.
    unread = EvaluationSettings(repeats=FLAGS.repeats, test_size=FLAGS.test_size or 0,
                                test_mask_seed=FLAGS.test_mask_seed, classifier_dir=classifier_dir)
    needed = max(check_cell(cell, os.path.join(FLAGS.workdir, cell.name), output_dir, unread,
                            training_request(0, FLAGS.test_size), options) for cell in cells)
    dataset = cli.load_dataset(options, FLAGS.train_size, FLAGS.test_size)
    for cell in cells:
        registry.get(cell.method).check_data_shape(dataset.shape)
    train_size = len(dataset.train_x)  # what cells trained here train on
    if needed > train_size:  # a trained cell saw more examples than asked for now
        dataset = cli.load_dataset(options, needed, FLAGS.test_size)
    training = training_request(train_size, len(dataset.test_x))
    settings = EvaluationSettings(repeats=FLAGS.repeats, test_size=len(dataset.test_x),
                                  test_mask_seed=FLAGS.test_mask_seed, classifier_dir=classifier_dir,
                                  logistic_fit=logistic_fit(train_size, FLAGS.dataset))
    fid = feature_fid(dataset, settings.classifier_dir)
    run_settings = {
        "dataset": FLAGS.dataset,
        "methods": list(dict.fromkeys(FLAGS.methods)), "missingness": list(dict.fromkeys(FLAGS.missingness)),
        "missing_rates": list(dict.fromkeys(cell.missing_rate for cell in cells)),
        "models_dir": os.path.abspath(FLAGS.workdir), "data_dir": FLAGS.data_dir,
        **settings.as_dict(),
        "training_of_missing_cells": None if training is None else {
            **training.data, **training.model_settings, "epochs": training.options.epochs,
            "batch_size": training.options.batch_size},
    }
    if FLAGS.frontier:
        if fid is None:
            raise InvalidInputError(f"--frontier scores perception by FID, which {dataset.name} cannot give "
                                    "(no labels to train a feature classifier on)")
        print(f"Frontier of {len(cells)} cells ({len(settings.test_mask_seeds)} test masking(s) of "
              f"{settings.test_size} examples each) into {os.path.join(output_dir, frontier.FRONTIER_DIR)}")
        frontier.run_frontier(cells, FLAGS.workdir, output_dir, dataset, fid,
                              frontier.FrontierSettings(settings, FLAGS.frontier_fine_tune_epochs), training,
                              run_settings)
        return
    print(f"Evaluating {len(cells)} cells ({len(settings.test_mask_seeds)} test masking(s) of "
          f"{settings.test_size} examples each) into {output_dir}")
    run_evaluation(cells, FLAGS.workdir, output_dir, dataset, fid, settings, training, run_settings)


if __name__ == "__main__":
    define_flags()
    app.run(cli.run_main(main))
