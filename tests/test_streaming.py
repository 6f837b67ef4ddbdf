"""Splits streamed through tf.data (tfimpute.streaming): per-example masks against the mechanisms'
definitions, statistics against the same examples in memory, epoch order and resumption, and a
``tfds:`` training run with ``--stream=always`` whose figures match the in-memory computation."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import load_digits

from program_support import run_here
from test_datasets import write_tfds_metadata
from tfimpute import datasets, experiment, masks, metrics, streaming
from tfimpute.datasets import StreamedDataset, load_dataset
from tfimpute.errors import InvalidInputError
from tfimpute.masks import make_incomplete
from tfimpute.streaming import Holes, StreamedData, example_mask, example_masks
from tfimpute.workdir import load_trained


def digits_uint8() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits as uint8 images [N, 8, 8, 1] and their labels."""
    digits = load_digits()
    images = np.clip(digits.images * 16, 0, 255).astype(np.uint8)[..., None]
    return images, digits.target.astype(np.int64)


def source(images: np.ndarray, labels: np.ndarray):
    return lambda: tf.data.Dataset.from_tensor_slices((images, labels))


def test_independent_masks_are_the_stateless_draws_of_seed_and_example_number():
    holes = Holes("independent", 0.3, seed=7, shape=(8, 6, 3))
    drawn = example_masks(holes, 400)
    for index in (0, 1, 399):
        expected = tf.random.stateless_uniform((8, 6), tf.constant([7, index], tf.int64)).numpy() >= 0.3
        np.testing.assert_array_equal(drawn[index], np.repeat(expected[..., None], 3, axis=-1))
    np.testing.assert_array_equal(example_masks(holes, 5), drawn[:5])  # a number's mask, whatever the count
    assert not np.array_equal(example_masks(Holes("independent", 0.3, seed=8, shape=(8, 6, 3)), 5), drawn[:5])
    assert abs((1 - drawn.mean()) - 0.3) < 0.02
    vectors = example_masks(Holes("independent", 0.5, seed=0, shape=(13,)), 200)
    assert vectors.shape == (200, 13) and abs(vectors.mean() - 0.5) < 0.03


def test_square_masks_keep_one_rectangle_of_the_mechanisms_sides_anywhere_inside():
    shape, rate = (12, 9, 2), 0.6
    side_h, side_w = masks.rectangle_sides(rate, 12, 9)
    drawn = example_masks(Holes("square", rate, seed=3, shape=shape), 300)
    corners = set()
    for mask in drawn:
        np.testing.assert_array_equal(mask[..., 0], mask[..., 1])
        rows, cols = np.nonzero(mask[..., 0])
        top, left = rows.min(), cols.min()
        expected = np.zeros((12, 9))
        expected[top:top + side_h, left:left + side_w] = 1
        np.testing.assert_array_equal(mask[..., 0], expected)
        corners.add((top, left))
    assert len(corners) == (12 - side_h + 1) * (9 - side_w + 1)  # every position is drawn


@pytest.mark.parametrize("shape", [(28, 28, 1), (10, 14, 3)])
def test_patch_masks_hide_the_calibrated_fraction(shape):
    drawn = example_masks(Holes("patch", 0.6, seed=1, shape=shape), 1500)
    assert abs((1 - drawn.mean()) - 0.6) < 0.015
    np.testing.assert_array_equal(drawn[..., 0:1].repeat(shape[2], -1), drawn)
    assert drawn.min() == 0 and len({m.tobytes() for m in drawn}) == len(drawn)


def test_mechanisms_that_need_the_whole_split_or_images_are_refused():
    with pytest.raises(InvalidInputError, match="needs statistics of the whole split"):
        Holes("mnar", 0.3, seed=0, shape=(8, 8, 1))
    with pytest.raises(InvalidInputError, match="--missingness=square needs images"):
        Holes("square", 0.3, seed=0, shape=(20,))
    with pytest.raises(InvalidInputError, match="holes drawn for examples shaped"):
        StreamedData(source(*digits_uint8()), 10, (8, 8, 1), Holes("independent", 0.3, 0, (4, 4, 1)))


def test_statistics_of_one_pass_equal_those_of_the_same_examples_in_memory():
    images, labels = digits_uint8()
    holes = Holes("patch", 0.5, seed=2, shape=(8, 8, 1), num_patches=4)
    count = 1500  # more than one read batch, not a multiple of it
    streamed = StreamedData(source(images, labels), count, (8, 8, 1), holes)
    in_memory = make_incomplete(images[:count] / np.float32(255), example_masks(holes, count), labels[:count])
    np.testing.assert_allclose(streamed.observed_pixel_means(), in_memory.observed_pixel_means(), atol=1e-6)
    np.testing.assert_allclose(streamed.observed_fraction(), in_memory.observed_fraction(), atol=1e-12)
    assert streamed.missing_fraction() == pytest.approx(in_memory.missing_fraction(), abs=1e-7)
    assert streamed.label_count() == in_memory.label_count() == 10 and streamed.shape == in_memory.shape
    unlabelled = StreamedData(source(images, np.full(len(labels), -1)), 100, (8, 8, 1), None)
    assert unlabelled.label_count() is None and unlabelled.missing_fraction() == 0.0
    short = StreamedData(source(images[:50], labels[:50]), 60, (8, 8, 1), None)
    with pytest.raises(InvalidInputError, match="holds 50 examples, expected 60"):
        short.missing_fraction()


def test_an_epoch_reads_every_example_once_in_an_order_of_seed_and_epoch_and_resumes_mid_epoch(monkeypatch):
    monkeypatch.setattr(streaming, "SHUFFLE_BLOCK", 16)  # 50 examples: four blocks
    images, _ = digits_uint8()
    numbers = np.arange(50)  # the label is the example's number
    holes = Holes("independent", 0.4, seed=5, shape=(8, 8, 1))
    data = StreamedData(source(images[:50], numbers), 50, (8, 8, 1), holes)

    def epoch(seed, number, skip=0):
        return [tuple(part.numpy() for part in batch) for batch in data.epoch_batches(8, seed, number, skip)]

    first = epoch(0, 0)
    order = np.concatenate([labels for _, _, labels in first])
    assert sorted(order) == list(range(50)) and [len(b[2]) for b in first] == [8] * 6 + [2]
    assert all(set(order[16 * k:16 * k + 16]) == set(range(16 * k, min(50, 16 * k + 16))) for k in range(4))
    expected_masks = example_masks(holes, 50)
    for observed, mask, labels in first:
        np.testing.assert_array_equal(mask, expected_masks[labels])
        np.testing.assert_array_equal(observed, images[labels] / np.float32(255) * mask)
    again, resumed = epoch(0, 0), epoch(0, 0, skip=3)
    assert all(np.array_equal(a[2], b[2]) for a, b in zip(first, again))
    assert [b[2].tolist() for b in resumed] == [b[2].tolist() for b in first[3:]]
    assert not np.array_equal(np.concatenate([b[2] for b in epoch(0, 1)]), order)
    assert not np.array_equal(np.concatenate([b[2] for b in epoch(1, 0)]), order)


def test_a_tfds_dataset_trains_streamed_resumes_and_scores_as_in_memory(tmp_path):
    import tensorflow_datasets as tfds

    write_tfds_metadata(tmp_path, "mnist", {"train": 60_000, "test": 10_000})
    workdir = tmp_path / "run"
    args = ["--dataset=tfds:mnist", f"--data_dir={tmp_path}", "--stream=always", "--model=lmrbm",
            "--hidden_units=16", "--train_size=40", "--test_size=24", "--batch_size=8", "--missing_rate=0.5",
            "--eval_size=10", f"--workdir={workdir}"]
    with tfds.testing.mock_data(num_examples=48, data_dir=str(tmp_path), policy=tfds.testing.MockPolicy.USE_FILES):
        streamed = load_dataset("tfds:mnist", data_dir=str(tmp_path), train_size=40, test_size=24, stream="always")
        in_memory = load_dataset("tfds:mnist", data_dir=str(tmp_path), train_size=40, test_size=24)
        first = run_here("tfimpute.train", *args, "--epochs=1")
        resumed = run_here("tfimpute.train", *args, "--epochs=2")
    assert isinstance(streamed, StreamedDataset) and not hasattr(streamed, "train_x")
    assert first.returncode == 0, first.stderr
    assert "tfds:mnist: streaming 40 training and 24 test examples through tf.data" in first.stdout
    assert "Reading the 40 training examples once" in first.stdout
    assert resumed.returncode == 0 and "Resuming from" in resumed.stdout, resumed.stderr
    result = json.loads((workdir / "metrics.json").read_text())
    assert result["epochs"] == 2 and result["test_size"] == 24 and result["masks"] == "per_example"

    # The same examples in memory, under the masks evaluation draws for this workdir.
    model, config = load_trained(str(workdir))
    data = config["data"]
    train_mask = experiment.training_mask(in_memory, data)
    test_mask = experiment.scored_test_mask(in_memory, data)
    np.testing.assert_array_equal(train_mask, example_masks(Holes("independent", 0.5, 0, (28, 28, 1)), 40))
    np.testing.assert_allclose(model.observed_probability.numpy(), train_mask.reshape(40, -1).mean(axis=0))
    imputed = model.impute(in_memory.test_x * test_mask, test_mask)
    assert result["test_rmse"] == pytest.approx(metrics.missing_rmse(in_memory.test_x, imputed, test_mask),
                                                rel=1e-6)
    assert result["test_missing_fraction"] == pytest.approx(1 - test_mask.mean(), abs=1e-7)


@pytest.mark.parametrize("args, message", [
    (["--dataset=npz:x.npz", "--stream=always"], "--stream=always applies to tfds: datasets; npz:x.npz is read"),
])
def test_streaming_refuses_what_it_cannot_do_in_one_line(tmp_path, args, message):
    result = run_here("tfimpute.train", *args, f"--workdir={tmp_path / 'w'}")
    assert result.returncode != 0 and result.stderr.strip() == f"error: {message} into memory"


def test_streamed_runs_refuse_mechanisms_that_need_the_whole_split(tmp_path):
    import tensorflow_datasets as tfds

    write_tfds_metadata(tmp_path, "mnist", {"train": 60_000, "test": 10_000})
    with tfds.testing.mock_data(num_examples=16, data_dir=str(tmp_path), policy=tfds.testing.MockPolicy.USE_FILES):
        result = run_here("tfimpute.train", "--dataset=tfds:mnist", f"--data_dir={tmp_path}", "--stream=always",
                          "--missingness=mar", "--batch_size=4", f"--workdir={tmp_path / 'w'}")
    assert result.returncode != 0
    assert result.stderr.strip().startswith("error: --missingness=mar needs statistics of the whole split")
    assert not os.path.exists(tmp_path / "w" / "checkpoints")


def test_auto_streams_a_split_whose_float32_copy_exceeds_a_quarter_of_memory(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    write_tfds_metadata(tmp_path, "mnist", {"train": 60_000, "test": 10_000})
    write_tfds_metadata(tmp_path, "fashion_mnist", {"train": 60_000})
    monkeypatch.setattr(datasets, "memory_bytes", lambda: 4 * (10 * 28 * 28 * 4))  # a quarter: 10 digits
    with tfds.testing.mock_data(num_examples=12, data_dir=str(tmp_path), policy=tfds.testing.MockPolicy.USE_FILES):
        spec = {"data_dir": str(tmp_path), "test_size": 2}
        assert isinstance(load_dataset("tfds:mnist", train_size=11, stream="auto", **spec), StreamedDataset)
        assert isinstance(load_dataset("tfds:mnist", train_size=10, stream="auto", **spec), datasets.Dataset)
        assert isinstance(load_dataset("tfds:mnist", train_size=11, stream="never", **spec), datasets.Dataset)
        held_out = load_dataset("tfds:fashion_mnist", data_dir=str(tmp_path), stream="always", test_fraction=0.25)
    # No test split: TFDS's percent slicing holds out the first quarter of 'train'.
    assert (held_out.train_size, held_out.test_size) == (45_000, 15_000) and held_out.labelled
    with pytest.raises(InvalidInputError, match="stream must be one of auto, always, never"):
        load_dataset("tfds:mnist", stream="sometimes")
