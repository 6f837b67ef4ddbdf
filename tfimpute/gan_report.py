"""What a trained DCGAN, CGAN or MisGAN generates: FID, class coverage, interpolation, grids.

    python -m tfimpute.gan_report --workdir=/work/runs/cgan \
        --classifier_dir=/work/runs/mnist_classifier

Generates ``--samples`` digits (CGAN: equally many of every class) and measures
them with the project's MNIST classifier (``python -m tfimpute.train
--model=mnist_classifier``):

* ``fid``: Fréchet distance of the samples' features to the complete training
  digits' (the evaluation harness's FID, so the numbers are comparable);
* ``predicted_class_counts``: how the classifier labels the samples (a collapsed
  generator piles them onto a few digits);
* CGAN only: ``class_accuracy``, the fraction of samples of class c that the
  classifier calls c, overall and per class;
* MisGAN only: ``generated_missing_fraction``, the mean of 1 − G_m(ε) over as
  many generated masks (compare with the training data's ``train_missing_fraction``
  in ``metrics.json``). MisGAN never sees a complete digit, so its FID against
  the complete training digits measures what it learnt from incomplete ones.

Writes into ``--output_dir`` (default: the workdir) ``gan_report.json``,
``interpolation.png`` (9 digits along a straight latent line between two samples
the classifier puts in different classes; CGAN: between two different requested
classes, the label moving along with z) and
``samples.png`` (CGAN: one row per class).
"""

from __future__ import annotations

import json
import os

from tfimpute import cli  # noqa: F401  (quiets TensorFlow's start-up logs; import first)

import numpy as np
import tensorflow as tf
from absl import app, flags

from tfimpute import visualize, workdir
from tfimpute.classifier import CLASSIFIER_DIR_ENV, FeatureFid
from tfimpute.errors import InvalidInputError
from tfimpute.models.capabilities import GeneratesSamples
from tfimpute.files import write_json_atomically

FLAGS = flags.FLAGS
REPORT_FILE = "gan_report.json"
INTERPOLATION_STEPS = 9
BATCH = 1000
def generate_samples(model: GeneratesSamples, count: int,
                     seed: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """``count`` digits in batches; a class-conditional model: of labels 0, 1, ..., 9, 0, ...,
    returned second; a model that also generates masks (MisGAN): its masks, returned third."""
    images, masks, labels = [], [], None
    if model.num_classes:
        labels = np.arange(count, dtype=np.int32) % model.num_classes
    for start in range(0, count, BATCH):
        size = min(BATCH, count - start)
        batch_seed = tf.constant([seed, start])
        if labels is None:
            samples = model.sample(size, batch_seed)
            if isinstance(samples, (tuple, list)):  # digits and their generated masks
                samples, generated_masks = samples
                masks.append(generated_masks.numpy())
            images.append(samples.numpy())
        else:
            images.append(model.generate_labelled(tf.constant(labels[start:start + size]), batch_seed).numpy())
    return np.concatenate(images), labels, np.concatenate(masks) if masks else None


def interpolation_ends(model: GeneratesSamples, fid: FeatureFid, seed: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Two latents (and CGAN labels) whose digits the classifier puts in different classes; the
    first two probe latents when all 64 probe digits fall in one class (a collapsed or barely
    trained generator: ``predicted_class_counts`` shows it, the rest of the report stands)."""
    latents = model.draw_latents(tf.constant(64), tf.constant([seed, 1])).numpy()
    if model.num_classes:
        first, second = np.random.default_rng(seed).choice(model.num_classes, size=2, replace=False)
        return latents[0], latents[1], int(first), int(second)
    predicted = fid.classify(model.generate(tf.constant(latents)).numpy())
    different = np.flatnonzero(predicted != predicted[0])
    if len(different):
        other = different[0]
    else:
        other = 1
        print(f"warning: all 64 probe samples are classified as {predicted[0]}; the interpolation "
              "stays within that class")
    return latents[0], latents[other], int(predicted[0]), int(predicted[other])


def report(model: GeneratesSamples, fid: FeatureFid, count: int, seed: int, output_dir: str) -> dict:
    images, labels, masks = generate_samples(model, count, seed)
    distance, predicted = fid.fid_and_classes(images)
    result = {"samples": count, "seed": seed, "fid": distance,
              "fid_of_complete_test_digits": fid.info.get("fid_of_complete_test_digits"),
              "predicted_class_counts": np.bincount(predicted, minlength=10).tolist()}
    if labels is not None:
        result["class_accuracy"] = float(np.mean(predicted == labels))
        result["class_accuracy_per_class"] = [float(np.mean(predicted[labels == c] == c))
                                              for c in range(model.num_classes)]
        grid = model.class_grid()
    else:
        grid = model.sample_grid()
    visualize.save_png(grid, os.path.join(output_dir, "samples.png"))
    if masks is not None:
        result["generated_missing_fraction"] = float(1.0 - masks.mean())

    start, end, start_class, end_class = interpolation_ends(model, fid, seed)
    if model.num_classes:
        line = model.interpolate(tf.constant(start), tf.constant(end), start_class, end_class,
                                 INTERPOLATION_STEPS).numpy()
    else:
        line = model.interpolate(tf.constant(start), tf.constant(end), steps=INTERPOLATION_STEPS).numpy()
    visualize.save_png(visualize.image_grid([line]), os.path.join(output_dir, "interpolation.png"))
    result["interpolation_classes"] = fid.classify(line).tolist()
    return result


def define_flags() -> None:
    flags.DEFINE_string("workdir", None, "Training workdir of a model that generates digits from latents "
                        "(required).")
    flags.DEFINE_string("classifier_dir", None,
                        f"Trained MNIST classifier (python -m tfimpute.train --model=mnist_classifier); "
                        f"default: ${CLASSIFIER_DIR_ENV}.")
    flags.DEFINE_integer("samples", 10_000, "Generated digits to measure.")
    flags.DEFINE_integer("seed", 0, "Seed of the generated digits.")
    flags.DEFINE_string("output_dir", None, "Where the report and PNGs go; default: --workdir.")


def main(argv: list[str]) -> None:
    if not FLAGS.workdir:
        raise InvalidInputError("--workdir is required")
    if FLAGS.samples < 2:
        raise InvalidInputError("--samples must be >= 2")
    classifier_dir = FLAGS.classifier_dir or os.environ.get(CLASSIFIER_DIR_ENV)
    if not classifier_dir:
        raise InvalidInputError(f"--classifier_dir (or ${CLASSIFIER_DIR_ENV}) is required")
    model, config = workdir.load_trained(FLAGS.workdir)
    if not isinstance(model, GeneratesSamples):
        raise InvalidInputError(f"{FLAGS.workdir} holds a {config['model']} model; gan_report reads "
                                "workdirs of models that generate digits from latents (DCGAN, CGAN, MisGAN)")
    if not model.is_image_model:
        raise InvalidInputError(f"{FLAGS.workdir} holds a {config['model']} model of vectors; gan_report "
                                "draws and scores images (evaluate tables with tfimpute.evaluate)")
    if "codec" in config:
        raise InvalidInputError(f"{FLAGS.workdir} was trained on {config['data'].get('dataset')}; gan_report "
                                "scores MNIST models with the MNIST classifier")
    if FLAGS.samples < model.num_classes:
        raise InvalidInputError(f"--samples must be >= {model.num_classes} (one per class) for {config['model']}")
    output_dir = FLAGS.output_dir or FLAGS.workdir
    os.makedirs(output_dir, exist_ok=True)
    result = {"model": config["model"], "workdir": os.path.abspath(FLAGS.workdir),
              **report(model, FeatureFid(classifier_dir), FLAGS.samples, FLAGS.seed, output_dir)}
    write_json_atomically(os.path.join(output_dir, REPORT_FILE), result)
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    define_flags()
    app.run(cli.run_main(main))
