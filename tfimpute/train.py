"""Trains a model of the zoo on incomplete data (MNIST by default, or ``--dataset``).

    python -m tfimpute.train --model=lmrbm --data_dir=../shared/data/mnist \
        --missingness=independent --missing_rate=0.6 --epochs=20 --workdir=/tmp/run1
    python -m tfimpute.train --model=vae --dataset=csv:table.csv --label_column=class --workdir=/tmp/run2

Writes to ``--workdir``: ``config.json`` (what was trained), ``checkpoints/``
(the same command resumes from the last one), ``tensorboard/``,
``imputations.png`` (observed / imputed / true test digits) and
``metrics.json`` (``test_rmse``, ``epochs``, ``train_seconds``, ...).
``--flagfile=configs/lmrbm.cfg`` loads the paper's settings.

``--model=mnist_classifier`` trains instead the network whose features define the
FID (see :mod:`tfimpute.classifier`) on the labelled training examples of the dataset
(MNIST by default); it reads the dataset flags, ``--epochs``, ``--batch_size``,
``--seed`` and ``--workdir`` (Adam at 1e-3, not ``--learning_rate``).

``--strategy=mirrored|multi_worker|tpu`` trains under that ``tf.distribute``
strategy (:mod:`tfimpute.distribute`), the global batch ``--batch_size`` split
across the replicas; ``--cpu_replicas=N`` with ``--strategy=mirrored`` mirrors
over N logical CPUs.
"""

from __future__ import annotations

import json
from typing import Any

from tfimpute import cli  # noqa: F401  (quiets TensorFlow's start-up logs; import first)

from absl import app, flags

from tfimpute import classifier, datasets, distribute, experiment
from tfimpute.errors import InvalidInputError
from tfimpute.models import registry
from tfimpute.training import TrainingOptions

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defined only when run as a program, so that `train` can be imported next to other CLIs' flags."""
    cli.define_data_flags()
    cli.define_training_flags()
    cli.define_model_flags()
    flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results (required).")
    flags.DEFINE_integer("epochs", 20, "Training epochs (paper: 500).")
    flags.DEFINE_float("checkpoint_minutes", 10.0, "Also checkpoint mid-epoch at this interval.")
    flags.DEFINE_integer("eval_size", 1000, "Test digits imputed after every epoch for TensorBoard.")
    flags.DEFINE_string("strategy", "default",
                        f"tf.distribute strategy: {', '.join(distribute.STRATEGIES)} (see README, "
                        "'Training on several devices'); --batch_size is the global batch.")
    flags.DEFINE_integer("cpu_replicas", 0, "With --strategy=mirrored: split the CPU into this many "
                         "logical devices and mirror over them (0: off).")
    flags.DEFINE_enum("stream", "auto", list(datasets.STREAM_CHOICES),
                      "tfds: datasets: read the splits through tf.data instead of into memory (see README "
                      "'Datasets larger than memory'); auto streams when the float32 training split would "
                      "take more than a quarter of this machine's memory.")
    flags.DEFINE_float("cluster_timeout", 300.0, "With --strategy=multi_worker: seconds to wait for the other "
                       "workers of TF_CONFIG's cluster before giving up.")


def data_settings(dataset: datasets.Dataset | datasets.StreamedDataset) -> dict[str, Any]:
    """The ``data`` section of the workdir's config: dataset, sizes and synthetic missingness."""
    settings = cli.dataset_options()
    streamed = isinstance(dataset, datasets.StreamedDataset)
    settings.update({"train_size": dataset.train_size if streamed else len(dataset.train_x),
                     "test_size": dataset.test_size if streamed else len(dataset.test_x),
                     "missingness": FLAGS.missingness, "missing_rate": FLAGS.missing_rate,
                     "mask_seed": FLAGS.mask_seed, "num_patches": FLAGS.num_patches})
    if streamed:
        print(f"{FLAGS.dataset}: streaming {dataset.train_size} training and {dataset.test_size} test examples "
              "through tf.data; masks are drawn per example")
        settings["masks"] = experiment.PER_EXAMPLE_MASKS
    # Recorded only when set, so that workdirs written before these options existed still resume.
    settings.update({name: True for name in ("binarize",) if FLAGS[name].value})
    if trains_on_own_holes_only(dataset):
        settings["own_holes_only"] = True
    elif trains_on_complete_data():
        settings["complete_training_data"] = True
    return settings


def missingness_flag_given() -> bool:
    return any(FLAGS[name].present for name in ("missingness", "missing_rate", "num_patches"))


def trains_on_own_holes_only(dataset: datasets.Dataset) -> bool:
    """Data with holes of their own train on those alone unless a missingness flag is given."""
    if not dataset.has_own_holes or missingness_flag_given() or FLAGS["complete_training_data"].present:
        return False
    print(f"{FLAGS.dataset}: training on the data's own holes (no missingness flag given); "
          f"test entries hidden by {FLAGS.missingness} at {FLAGS.missing_rate} are scored")
    return True


def trains_on_complete_data() -> bool:
    """Whether the training data get no synthetic holes: ``--complete_training_data``; for the GANs
    that learn complete images by default (DCGAN, CGAN) also true when it is not given and no
    missingness flag (``--missingness``, ``--missing_rate``, ``--num_patches``) is given either."""
    flag = FLAGS["complete_training_data"]
    if flag.present:
        return flag.value
    if missingness_flag_given():
        if registry.get(FLAGS.model).cls.complete_training_data_by_default:
            print(f"{FLAGS.model}: training on incomplete images (AmbientGAN)")
        return False
    if registry.get(FLAGS.model).cls.complete_training_data_by_default:
        print(f"{FLAGS.model}: training on complete images (no missingness flag given)")
        return True
    return flag.value


def main(argv: list[str]) -> None:
    # First: --cpu_replicas must split the CPU before anything touches a TensorFlow device.
    strategy = distribute.make_strategy(FLAGS.strategy, FLAGS.cpu_replicas, cluster_timeout=FLAGS.cluster_timeout)
    if FLAGS.model != classifier.MODEL_NAME:
        cli.check_settings_apply(registry.get(FLAGS.model))
    if not FLAGS.workdir:
        raise InvalidInputError("--workdir is required")
    if FLAGS.epochs < 0 or FLAGS.batch_size < 1:
        raise InvalidInputError("--epochs must be >= 0 and --batch_size >= 1")
    stream = "never" if FLAGS.model == classifier.MODEL_NAME else FLAGS.stream
    dataset = cli.load_dataset(cli.dataset_options(), FLAGS.train_size, FLAGS.test_size, stream)
    if FLAGS.model == classifier.MODEL_NAME:
        if FLAGS.epochs < 1:
            raise InvalidInputError(f"--model={classifier.MODEL_NAME} needs --epochs >= 1")
        with strategy.scope():  # Keras's fit distributes over the strategy it was built under
            result = classifier.train_classifier(dataset, distribute.worker_workdir(strategy, FLAGS.workdir),
                                                 FLAGS.epochs, FLAGS.batch_size, FLAGS.seed)
        print(json.dumps(result, sort_keys=True))
        return
    options = TrainingOptions(epochs=FLAGS.epochs, batch_size=FLAGS.batch_size, seed=FLAGS.seed,
                              checkpoint_minutes=FLAGS.checkpoint_minutes, eval_size=FLAGS.eval_size,
                              dtype_policy=FLAGS.dtype_policy)
    result = experiment.train(FLAGS.model, dataset, data_settings(dataset),
                              cli.settings_from_flags(registry.get(FLAGS.model)), options, FLAGS.workdir,
                              strategy)
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    define_flags()
    app.run(cli.run_main(main))
