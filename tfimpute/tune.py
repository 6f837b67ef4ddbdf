"""Chooses an inference setting of a trained model by leave-out validation on its TRAINING data.

    python -m tfimpute.tune --workdir=runs/lmrbm --setting=impute_mode --values=mean_field,sample,gibbs

hides ``--hide_fraction`` of the observed entries of the first ``--examples`` training examples
(under the masks the model was trained with; one by one, or in ``--hide_block`` x ``--hide_block``
squares of pixels, ``--hide_block=auto`` the side of the training patches), imputes them with each
value, prints the RMSE over the hidden entries per value and the best one, and ends with one JSON line. No test example is
used (see :mod:`tfimpute.selection`). Settings that can be tuned are the model's inference settings
(RBMs: ``impute_mode``, ``gibbs_steps``; DCGAN / CGAN: the latent search's).
"""

from __future__ import annotations

from tfimpute import cli  # noqa: F401  (quiets TensorFlow's start-up logs; import first)

import json
from typing import Any

from absl import app, flags

from tfimpute import selection, workdir
from tfimpute.errors import InvalidInputError
from tfimpute.models import registry

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("workdir", None, "Training workdir of the model (config.json + checkpoints/).")
    flags.DEFINE_string("setting", None, "The inference setting to choose (e.g. impute_mode).")
    flags.DEFINE_list("values", [], "Candidate values of --setting.")
    flags.DEFINE_integer("examples", selection.DEFAULT_EXAMPLES,
                         "Training examples whose observed entries are partly hidden.")
    flags.DEFINE_float("hide_fraction", selection.DEFAULT_HIDE_FRACTION,
                       "Share of their observed entries hidden and scored (small: they add to the holes, "
                       "so validation runs at a higher missing rate than the model's).")
    flags.DEFINE_string("hide_block", "auto", "Side of the squares of pixels hidden together (images); 1: single "
                        "entries; auto: the side of the training patches (patch masks), else 1. Near the size "
                        "of the test holes (patches) the validation sees holes like them.")
    flags.DEFINE_integer("hide_seed", 0, "Seed of the hidden entries (and of stochastic imputers).")
    flags.DEFINE_list("fixed", [], "Other inference settings held at one value for every candidate, as "
                      "setting=value (e.g. impute_mode=gibbs to choose --gibbs_steps).")
    flags.DEFINE_string("data_dir", None, "MNIST's IDX directory (or TFDS's data directory), as for training.")


def parsed_values(model_name: str, setting: str, texts: list[str]) -> list[Any]:
    """``texts`` as values of ``setting`` (typed like its default); refuses what is not an inference setting."""
    spec = registry.get(model_name)
    if setting not in spec.cls.inference_settings:
        raise InvalidInputError(f"--setting={setting} is not an inference setting of {model_name} "
                                f"({', '.join(spec.cls.inference_settings) or 'it has none'})")
    kind = type(spec.fields[setting].default)
    try:
        return [kind(text) for text in texts]
    except ValueError:
        raise InvalidInputError(f"--values: {','.join(texts)} are not all {kind.__name__} values") from None


def given_hide_block(text: str) -> int | None:
    """``--hide_block`` as a side, or None for ``auto`` (resolved once the data are read); checked
    before the data are loaded, so that a bad value fails at once."""
    if text == "auto":
        return None
    if not text.isdigit() or int(text) < 1:
        raise InvalidInputError(f"--hide_block={text} is neither a positive integer nor auto")
    return int(text)


def main(argv: list[str]) -> None:
    if not FLAGS.workdir or not FLAGS.setting or not FLAGS.values:
        raise InvalidInputError("--workdir, --setting and --values are required")
    config = workdir.read_config(FLAGS.workdir)
    if config is None:
        raise InvalidInputError(f"{FLAGS.workdir}: no {workdir.CONFIG_FILE}; is this a tfimpute training workdir?")
    values = parsed_values(config["model"], FLAGS.setting, FLAGS.values)
    block = given_hide_block(FLAGS.hide_block)
    fixed = {}
    for item in FLAGS.fixed:
        name, separator, text = item.partition("=")
        if not separator or name == FLAGS.setting:
            raise InvalidInputError(f"--fixed: {item!r} is not setting=value for a setting other than --setting")
        fixed[name] = parsed_values(config["model"], name, [text])[0]
    data = config["data"]
    dataset = cli.load_dataset(data, data["train_size"], data["test_size"])
    if block is None:
        block = selection.hide_block_like_holes(data, dataset.shape)
        print(f"--hide_block=auto: {block}x{block} squares ({data['missingness']} training holes)")
    results = selection.leave_out_rmse(FLAGS.workdir, dataset, FLAGS.setting, values, FLAGS.examples,
                                       FLAGS.hide_fraction, FLAGS.hide_seed, fixed, block)
    for result in results:
        print(f"--{FLAGS.setting}={result['value']}: RMSE {result['validation_rmse']:.4f} over "
              f"{result['hidden_entries']} hidden observed entries")
    best = min(results, key=lambda result: result["validation_rmse"])
    print(f"best: --{FLAGS.setting}={best['value']} (chosen on training examples only)")
    hidden = {"fraction": FLAGS.hide_fraction, "examples": FLAGS.examples, "block": block,
              "seed": FLAGS.hide_seed}
    print(json.dumps({"setting": FLAGS.setting, "fixed": fixed, "hidden": hidden, "best": best["value"],
                      "results": results}))


if __name__ == "__main__":
    define_flags()
    app.run(cli.run_main(main))
