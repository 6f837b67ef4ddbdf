"""Exports a training workdir as a SavedModel laid out for TensorFlow Serving.

    python -m tfimpute.export --workdir=runs/lmrbm --export_dir=export/ [--version=N]

writes ``export_dir/NAME/VERSION/`` atomically (see :mod:`tfimpute.savedmodel` for the layout and
the signatures). The model name comes from the workdir; ``--model`` is accepted and checked.
"""

from __future__ import annotations

from tfimpute import cli  # noqa: F401  (quiets TensorFlow's start-up logs; import first)

import os

from absl import app, flags

from tfimpute import experiment, savedmodel, workdir
from tfimpute.errors import InvalidInputError

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("model", None, "Model name; checked against the workdir's (optional).")
    flags.DEFINE_string("workdir", None, "Training workdir to export (config.json + checkpoints/).")
    flags.DEFINE_string("export_dir", None, "Base directory; the model lands in EXPORT_DIR/NAME/VERSION.")
    flags.DEFINE_string("name", None, "Serving name (directory under --export_dir); default: the model name.")
    flags.DEFINE_integer("version", None, "Version number; default: the next free one.")


def main(argv: list[str]) -> None:
    if not FLAGS.workdir or not FLAGS.export_dir:
        raise InvalidInputError("--workdir and --export_dir are required")
    model, config = workdir.load_trained(FLAGS.workdir)
    if FLAGS.model and FLAGS.model != config["model"]:
        raise InvalidInputError(f"--model={FLAGS.model} but {FLAGS.workdir} holds a {config['model']} run")
    name = FLAGS.name or config["model"]
    codec = experiment.codec_of(config, model.data_shape)
    path = savedmodel.export_model(model, FLAGS.export_dir, name, FLAGS.version,
                                   provenance={"workdir": os.path.abspath(FLAGS.workdir), "config": config},
                                   codec=codec)
    print(f"exported {name} version {os.path.basename(path)} to {path}; "
          f"signatures: {', '.join(sorted(savedmodel.all_signatures(model, codec)))}")


if __name__ == "__main__":
    define_flags()
    app.run(cli.run_main(main))
