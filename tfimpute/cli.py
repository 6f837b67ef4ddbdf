"""Flags and helpers shared by the command-line programs (train, bench, evaluate, export, ...).

Importing this module imports TensorFlow with its C++ start-up lines silenced (the oneDNN,
CUDA-driver, ``cuInit`` and "rebuild TensorFlow" lines every program would otherwise print):
standard error is pointed at /dev/null while TensorFlow loads and looks for devices. Asked
for with ``--verbosity`` (absl's flag, e.g. ``--verbosity=1``), nothing is silenced; otherwise
TF_CPP_MIN_LOG_LEVEL defaults to 2 for what TensorFlow logs later.
It must therefore be imported by programs before TensorFlow; library modules never import it.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any, Callable


def _verbose_requested(argv: list[str]) -> bool:
    return any(arg.startswith("--verbosity") or arg == "-v" or arg.startswith("-v=") for arg in argv[1:])


def _import_tensorflow_quietly() -> None:
    """Imports TensorFlow and lists its devices with file descriptor 2 on /dev/null."""
    if _verbose_requested(sys.argv):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's later C++ INFO and WARNING lines
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf

        tf.config.list_physical_devices()  # loads the device plug-ins (CUDA's cuInit) now, silenced
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


_import_tensorflow_quietly()

from absl import flags  # noqa: E402

from tfimpute import datasets, masks, precision  # noqa: E402
from tfimpute.errors import ClusterError, InvalidInputError, Terminated, TfImputeError  # noqa: E402
if TYPE_CHECKING:
    from tfimpute.models.registry import Field, ModelSpec

FLAGS = flags.FLAGS


def define_dataset_flags() -> None:
    """The data flags shared by every mechanism and rate (evaluate takes lists of those)."""
    flags.DEFINE_string("dataset", datasets.MNIST,
                        "mnist (from --data_dir, $TFIMPUTE_DATA_DIR or TFDS), tfds:NAME (a TFDS image dataset), "
                        "npz:PATH (x [N,H,W(,C)] images or [N,D] vectors, NaN = missing; optional mask, y, "
                        "x_test, mask_test, y_test), csv:PATH (header row; empty/NA/NaN cells missing) or "
                        "images:DIR (PNG/JPEG; sub-folders are classes). See README 'Your own data'.")
    flags.DEFINE_string("data_dir", None,
                        "Directory of the MNIST IDX gzip files; default: $TFIMPUTE_DATA_DIR, else TFDS.")
    flags.DEFINE_integer("train_size", None, "Number of training examples (default: all; MNIST: the "
                         "paper's first 50,000).")
    flags.DEFINE_integer("test_size", None, "Number of test examples (default: all; MNIST: all 10,000).")
    flags.DEFINE_float("test_fraction", 0.1, "Share of the rows held out for testing when the dataset has "
                       "no test split of its own (seeded by --split_seed).")
    flags.DEFINE_integer("split_seed", 0, "Seed of the --test_fraction hold-out.")
    flags.DEFINE_string("label_column", None, "csv: the column holding the class label (kept out of the inputs).")
    flags.DEFINE_list("categorical_columns", [], "csv: text columns to one-hot encode (others must be numeric).")
    flags.DEFINE_string("image_size", None, "images: resize every image to HxW (e.g. 32x32).")
    flags.DEFINE_integer("mask_seed", 0, "Seed of the training masks (test masks use mask_seed + 1).")
    flags.DEFINE_integer("num_patches", masks.DEFAULT_NUM_PATCHES, "Rectangles per image for --missingness=patch.")


def _registry():
    """The model registry, filled (imported on first use: the serving programs never need the zoo)."""
    from tfimpute.models import registry  # importing the package registers every model

    return registry


def define_data_flags() -> None:
    define_dataset_flags()
    registry = _registry()
    complete_by_default = [spec.name for spec in registry.specs() if spec.cls.complete_training_data_by_default]
    flags.DEFINE_enum("missingness", "independent", list(masks.MECHANISMS),
                      "Synthetic missingness on top of the data's own holes: I.M., S.O., P.M. (images), "
                      "mar or mnar (see tfimpute/masks.py). Data with holes of its own train on those alone "
                      "unless a missingness flag is given (the test split is still masked for the RMSE).")
    flags.DEFINE_float("missing_rate", 0.6, "Missing rate in (0, 1).")
    flags.DEFINE_boolean("binarize", False, "Threshold every digit's pixels at 0.5 (binarised MNIST).")
    flags.DEFINE_boolean("complete_training_data", False,
                         "Train on complete digits (nothing missing); the test digits are still masked "
                         "by --missingness / --missing_rate for the imputation RMSE. "
                         f"{', '.join(complete_by_default) or 'No model'} default to complete digits unless "
                         "a missingness flag is given.")


def define_model_flags() -> None:
    """``--model`` and one flag per model setting (:mod:`tfimpute.models.registry`)."""
    flags.DEFINE_string("model", "lmrbm", f"Model name ({', '.join(_registry().names())}; "
                        "tfimpute.train also takes mnist_classifier).")
    define_setting_flags()


def dataset_options() -> dict[str, Any]:
    """``--dataset`` and its reading options as a workdir's ``data`` records them: nothing for MNIST
    (workdirs written before other datasets existed say nothing either)."""
    if FLAGS.dataset == datasets.MNIST:
        return {}
    options = {"dataset": FLAGS.dataset, "test_fraction": FLAGS.test_fraction, "split_seed": FLAGS.split_seed}
    options.update({name: FLAGS[name].value for name in ("label_column", "categorical_columns", "image_size")
                    if FLAGS[name].value})
    return options


def load_dataset(options: dict[str, Any], train_size: int | None, test_size: int | None,
                 stream: str = "never") -> datasets.Dataset | datasets.StreamedDataset:
    """The dataset of ``options`` (see :func:`dataset_options`); ``stream``: see :func:`tfimpute.datasets.load_dataset`."""
    image_size = options.get("image_size")
    return datasets.load_dataset(
        options.get("dataset", datasets.MNIST), data_dir=FLAGS.data_dir, train_size=train_size, test_size=test_size,
        test_fraction=options.get("test_fraction", 0.1), split_seed=options.get("split_seed", 0),
        label_column=options.get("label_column"), categorical_columns=tuple(options.get("categorical_columns", ())),
        image_size=datasets.parse_image_size(image_size) if image_size else None, stream=stream)


TRAINING_FLAGS = ("batch_size", "seed")  # the training loop's; ``seed`` also seeds the models


def define_training_flags() -> None:
    """The flags of the shared training loop (not model settings)."""
    flags.DEFINE_integer("batch_size", 128, "Minibatch size (paper: 128).")
    flags.DEFINE_integer("seed", 0, "Seed of initialisation, shuffling and training draws.")
    flags.DEFINE_enum("dtype_policy", precision.FLOAT32, list(precision.DTYPE_POLICIES),
                      "Keras dtype policy of the model: float32, mixed_bfloat16 (CPUs with bf16 units, "
                      "recent GPUs) or mixed_float16 (GPUs). Parameters stay float32, so a run may resume "
                      "under another policy; exports always take and return float32.")


def _setting_fields() -> dict[str, list[tuple[str, Field]]]:
    """Every setting name -> the (model, field) pairs that have it."""
    fields: dict[str, list[tuple[str, Field]]] = {}
    for spec in _registry().specs():
        for name, field in spec.fields.items():
            fields.setdefault(name, []).append((spec.name, field))
    return fields


def _flag_default(value: Any) -> Any:
    return [str(item) for item in value] if isinstance(value, (list, tuple)) else value


def _flag_kind(field: Field) -> tuple:
    if field.choices:
        return ("enum", tuple(sorted(field.choices)))
    for kind in (bool, int, float):  # bool first: it is an int
        if isinstance(field.default, kind):
            return (kind.__name__,)
    return ("list",) if isinstance(field.default, (list, tuple)) else ("string",)


def define_setting_flags(flag_values: flags.FlagValues = FLAGS) -> None:
    """One flag per model setting, named as the setting; a setting shared by several models is one
    flag whose default, when the models differ, is None ("the model's own"), and whose help gives
    each model's description. Flags already defined (``--seed``, a training flag too) are shared
    as they are. Models sharing a setting name must agree on its kind (and choices)."""
    for name, owners in _setting_fields().items():
        if name in flag_values:
            continue
        field = owners[0][1]
        if len({_flag_kind(f) for _, f in owners}) > 1:
            raise TypeError(f"setting {name!r} has different kinds in {', '.join(m for m, _ in owners)}; "
                            "rename it in one model")
        defaults = {model: _flag_default(f.default) for model, f in owners}
        if len({repr(d) for d in defaults.values()}) == 1:
            default, suffix = defaults[owners[0][0]], ""
        else:
            default = None
            suffix = " Default: the model's own (" + ", ".join(f"{m} {d}" for m, d in defaults.items()) + ")."
        helps: dict[str, list[str]] = {}
        for model, owner_field in owners:
            helps.setdefault(owner_field.help, []).append(model)
        help_text = field.help if len(helps) == 1 else " ".join(
            f"{', '.join(models)}: {text}" for text, models in helps.items())
        help_text += suffix
        if field.choices:
            flags.DEFINE_enum(name, default, list(field.choices), help_text, flag_values=flag_values)
        elif isinstance(field.default, bool):
            flags.DEFINE_boolean(name, default, help_text, flag_values=flag_values)
        elif isinstance(field.default, int):
            flags.DEFINE_integer(name, default, help_text, flag_values=flag_values)
        elif isinstance(field.default, float):
            flags.DEFINE_float(name, default, help_text, flag_values=flag_values)
        elif isinstance(field.default, (list, tuple)):
            flags.DEFINE_list(name, default, help_text, flag_values=flag_values)
        else:
            flags.DEFINE_string(name, default, help_text, flag_values=flag_values)


def _parsed(field: Field, value: Any) -> Any:
    """A flag's value as the model's constructor takes it (lists of numbers from ``DEFINE_list``)."""
    if isinstance(field.default, (list, tuple)) and value is not None:
        kind = type(field.default[0]) if field.default else str
        try:
            return [kind(item) for item in value]
        except ValueError:
            raise InvalidInputError(f"--{field.name}: {','.join(value)} is not a list of "
                                    f"{kind.__name__} values") from None
    return value


def settings_from_flags(spec: ModelSpec, flag_values: flags.FlagValues = FLAGS) -> dict[str, Any]:
    """The settings of model ``spec`` as the flags give them (None: the model's own default)."""
    return {name: _parsed(field, flag_values[name].value) for name, field in spec.fields.items()}


def all_settings_from_flags() -> dict[str, Any]:
    """Every setting flag's value (for programs that build several models, e.g. evaluate)."""
    return {name: _parsed(owners[0][1], FLAGS[name].value) for name, owners in _setting_fields().items()}


def check_settings_apply(spec: ModelSpec) -> None:
    """Refuses a setting flag given explicitly that model ``spec`` does not have."""
    given = [name for name in _setting_fields()
             if FLAGS[name].present and name not in spec.fields and name not in TRAINING_FLAGS]
    if given:
        owners = _setting_fields()[given[0]]
        raise InvalidInputError(
            f"--{given[0]} does not apply to {spec.name} (it is a setting of "
            f"{', '.join(model for model, _ in owners)}); {spec.name}'s settings: "
            f"{', '.join('--' + name for name in spec.fields) or 'none'}")


def quiet_logs() -> None:
    """Keeps absl INFO chatter (e.g. checkpoint sharding) out of the progress output."""
    from absl import logging

    logging.set_verbosity(logging.WARNING)


def run_main(main: Callable[[list[str]], Any]) -> Callable[[list[str]], Any]:
    """Wraps an absl main so that user errors print one line and exit with status 2."""

    def wrapped(argv: list[str]) -> Any:
        quiet_logs()
        try:
            if len(argv) > 1:
                raise InvalidInputError(f"unexpected arguments: {' '.join(argv[1:])}")
            return main(argv)
        except TfImputeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            if isinstance(exc, ClusterError) and exc.exit_at_once:  # TensorFlow may hang on the lost cluster
                sys.stderr.flush()
                sys.stdout.flush()
                os._exit(2)
            sys.exit(2)
        except Terminated as exc:  # its message says what was saved and how to resume
            print(exc, file=sys.stderr)
            sys.exit(143)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)

    return wrapped
