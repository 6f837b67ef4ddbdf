"""Fills the holes of your own file with a trained model.

    python -m tfimpute.impute --workdir=runs/wine --input=wine_with_holes.csv --output=wine_filled.csv
    python -m tfimpute.impute --export=export/vae/1 --input=photos/ --output=photos_filled/

The output has the input's format:

* CSV: the same columns in the same order; observed cells unchanged (their text as it was),
  empty / ``NA`` / ``NaN`` cells filled (numbers in the training data's units, categorical
  columns with a category seen in training; a category training never saw counts as missing).
  The label column, if any, is copied.
* NPZ: the same arrays, ``x`` filled (NaN and ``mask == 0`` entries); uint8 images stay uint8.
* A folder of PNG/JPEG images: the same relative paths as PNG, transparent pixels
  (alpha = 0) filled.

The model comes from a training workdir (``--workdir``) or an export version directory
(``--export=EXPORT_DIR/NAME/VERSION``, its ``impute_nan`` signature). The input is never
overwritten; the output is written atomically.
"""

from __future__ import annotations

from tfimpute import cli  # noqa: F401  (quiets TensorFlow's start-up logs; import first)

import os

from absl import app, flags

from tfimpute import datasets, filling
from tfimpute.errors import InvalidInputError

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("workdir", None, "Training workdir of the model (or give --export).")
    flags.DEFINE_string("export", None, "Export version directory EXPORT_DIR/NAME/VERSION (or give --workdir).")
    flags.DEFINE_string("input", None, "CSV file, NPZ file or folder of images with holes.")
    flags.DEFINE_string("output", None, "Where the filled data go (same format; never the input).")
    flags.DEFINE_integer("batch_size", 256, "Examples imputed per call.")


def main(argv: list[str]) -> None:
    if bool(FLAGS.workdir) == bool(FLAGS.export):
        raise InvalidInputError("give exactly one of --workdir and --export")
    if not FLAGS.input or not FLAGS.output:
        raise InvalidInputError("--input and --output are required")
    if not os.path.exists(FLAGS.input):
        raise InvalidInputError(f"--input={FLAGS.input}: no such file or folder")
    datasets.check_not_overwriting(FLAGS.input, FLAGS.output)
    imputer, codec, name = (filling.from_workdir(FLAGS.workdir) if FLAGS.workdir
                            else filling.from_export(FLAGS.export))
    fill = lambda x: filling.fill(imputer, x, FLAGS.batch_size)  # noqa: E731
    kind = filling.file_kind(FLAGS.input)
    if kind == "csv":
        count, holes = filling.fill_csv(FLAGS.input, FLAGS.output, codec, fill)
    elif kind == "npz":
        count, holes = filling.fill_npz(FLAGS.input, FLAGS.output, codec, fill)
    else:
        count, holes = filling.fill_image_folder(FLAGS.input, FLAGS.output, codec, fill)
    print(f"filled {holes} missing entries in {count} examples of {FLAGS.input} with {name}; "
          f"wrote {FLAGS.output}")


if __name__ == "__main__":
    define_flags()
    app.run(cli.run_main(main))
