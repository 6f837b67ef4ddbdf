"""tfimpute.datasets on real data that needs no download: scikit-learn's bundled datasets written
as CSV / npz / PNG folders, MNIST's IDX files, and TFDS through its mock."""

import csv
import json
import os

import numpy as np
import pytest
from PIL import Image
from sklearn import datasets as sk

from tfimpute import data, datasets
from tfimpute.datasets import Codec, load_dataset
from tfimpute.errors import DataError, InvalidInputError


def write_csv(path, header, rows) -> str:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def one_line_error(match: str, call, *args, **kwargs) -> str:
    with pytest.raises(DataError, match=match) as caught:
        call(*args, **kwargs)
    assert "\n" not in str(caught.value)
    return str(caught.value)


COLOURS = ("red", "white", "rose")


@pytest.fixture(scope="module")
def wine(tmp_path_factory):
    """Wine as CSV: a 'sample' id column, 13 numeric columns with NaN (written as '', 'NA' or 'nan'),
    a categorical text column 'colour' in third place and the label column 'cultivar' last."""
    bunch = sk.load_wine()
    rng = np.random.default_rng(5)
    values = bunch.data.copy()
    values[rng.random(values.shape) < 0.1] = np.nan
    colours = np.array([COLOURS[i % 3] for i in range(len(values))], dtype=object)
    colours[rng.random(len(values)) < 0.1] = ""
    names = list(bunch.feature_names)
    header = ["sample", names[0], "colour", *names[1:], "cultivar"]
    blanks = ("", "NA", "nan")
    rows = []
    for i, row in enumerate(values):
        cells = [blanks[(i + k) % 3] if np.isnan(v) else repr(float(v)) for k, v in enumerate(row)]
        rows.append([str(i), cells[0], colours[i], *cells[1:], f"class_{bunch.target[i]}"])
    path = write_csv(tmp_path_factory.mktemp("wine") / "wine.csv", header, rows)
    return path, values, colours, bunch.target, names


def load_wine_csv(path, **kwargs):
    return load_dataset(f"csv:{path}", label_column="cultivar", categorical_columns=["colour"],
                        test_fraction=0.2, split_seed=3, **kwargs)


def test_csv_scales_on_train_observed_entries_and_masks_the_holes(wine):
    path, values, colours, target, names = wine
    ds = load_wine_csv(path)
    codec = ds.codec
    assert ds.name == f"csv:{path}" and codec.kind == "table" and not ds.is_image
    assert [c["name"] for c in codec.columns] == ["sample", names[0], "colour", *names[1:]]
    assert codec.columns[2] == {"name": "colour", "kind": "categorical", "start": 2, "width": 3,
                                "categories": ["red", "rose", "white"]}
    assert ds.shape == (17,) and codec.categorical_blocks() == [(2, 3)]
    assert codec.label_column == "cultivar" and codec.label_names == ("class_0", "class_1", "class_2")
    assert ds.num_classes == 3 and ds.has_own_holes
    assert len(ds.test_x) == round(0.2 * 178) and len(ds.train_x) == 178 - len(ds.test_x)

    def ids(x):
        return np.rint(codec.unscale_values(x)[:, 0]).astype(int)

    train_ids, test_ids = ids(ds.train_x), ids(ds.test_x)
    assert sorted([*train_ids, *test_ids]) == list(range(178))
    assert list(train_ids) == sorted(train_ids)  # each split keeps file order
    np.testing.assert_array_equal(ds.train_labels, target[train_ids])
    np.testing.assert_array_equal(ds.test_labels, target[test_ids])

    numeric = [0, 1, *range(5, 17)]
    for split_ids, x, mask in ((train_ids, ds.train_x, ds.train_mask), (test_ids, ds.test_x, ds.test_mask)):
        raw = np.column_stack([split_ids, values[split_ids]])
        np.testing.assert_array_equal(mask[:, numeric], ~np.isnan(raw))
        assert np.all(x[mask == 0] == 0)
        np.testing.assert_allclose(codec.unscale_values(x)[:, numeric][~np.isnan(raw)], raw[~np.isnan(raw)],
                                   rtol=1e-6)
        expected_block = np.array([[float(c == name) for name in ("red", "rose", "white")]
                                   for c in colours[split_ids]])
        np.testing.assert_array_equal(x[:, 2:5], expected_block)
        np.testing.assert_array_equal(mask[:, 2:5], np.repeat((colours[split_ids] != "")[:, None], 3, axis=1))
    for j in numeric:  # min-max over the observed TRAIN entries: inside [0, 1], touching both ends
        observed = ds.train_x[ds.train_mask[:, j] == 1, j]
        assert 0.0 <= observed.min() < 1e-6 and 1.0 - 1e-6 < observed.max() <= 1.0
    train_raw = values[train_ids]
    low, high = np.nanmin(train_raw, axis=0), np.nanmax(train_raw, axis=0)
    test_raw = values[test_ids]
    seen = ~np.isnan(test_raw)
    np.testing.assert_allclose(ds.test_x[:, numeric[1:]][seen], ((test_raw - low) / (high - low))[seen], atol=1e-6)


def test_csv_split_is_seeded_and_sizes_take_the_first_rows(wine):
    path = wine[0]
    first, again = load_wine_csv(path), load_wine_csv(path)
    np.testing.assert_array_equal(first.train_x, again.train_x)
    other = load_dataset(f"csv:{path}", label_column="cultivar", categorical_columns=["colour"],
                         test_fraction=0.2, split_seed=4)
    assert not np.array_equal(first.test_labels, other.test_labels) or not np.array_equal(
        first.test_mask, other.test_mask)
    small = load_wine_csv(path, train_size=10, test_size=4)
    ids = np.rint(small.codec.unscale_values(small.train_x)[:, 0]).astype(int)
    full_ids = np.rint(first.codec.unscale_values(first.train_x)[:, 0]).astype(int)
    np.testing.assert_array_equal(ids, full_ids[:10])
    assert len(small.test_x) == 4
    one_line_error("wine.csv: train_size=500, but the train split holds 142 examples", load_wine_csv, path,
                   train_size=500)


def test_codec_encodes_decodes_and_survives_json(wine):
    path, values, colours, target, names = wine
    codec = load_wine_csv(path).codec
    cells = [["3", "13.2", "rose", *["1.5"] * 12], ["4", "NA", "green", *[""] * 12],
             ["5", " 12 ", " red ", *["2"] * 12]]
    x, mask = codec.encode_rows(cells, "new.csv")
    assert x.dtype == np.float32 and x.shape == (3, 17)
    np.testing.assert_array_equal(x[0, 2:5], [0, 1, 0])
    np.testing.assert_array_equal(mask[1, 2:5], [0, 0, 0])  # an unknown category hides its whole block
    np.testing.assert_array_equal(x[1, 2:5], [0, 0, 0])
    np.testing.assert_array_equal(mask[1], [1] + [0] * 16)
    np.testing.assert_array_equal(x[2, 2:5], [1, 0, 0])
    decoded = codec.decode_rows(np.where(mask == 1, x, 0.3))
    assert decoded[0][:3] == ["3", "13.2", "rose"] and decoded[2][:3] == ["5", "12", "red"]
    np.testing.assert_allclose(np.array([decoded[0][3:], decoded[2][3:]], float), [[1.5] * 12, [2.0] * 12],
                               rtol=2e-5)  # float32 precision of values far outside the training range
    one_line_error(r"new\.csv: row 3, column 'alcohol': 'abc' is not a number", codec.encode_rows,
                   [cells[0], ["4", "abc", "red", *[""] * 12]], "new.csv")

    restored = Codec.from_json(json.loads(json.dumps(codec.to_json())))
    assert restored == codec and restored.to_json() == codec.to_json()
    np.testing.assert_array_equal(restored.offset, codec.offset)
    np.testing.assert_array_equal(restored.scale, codec.scale)
    assert restored.decode_rows(x) == codec.decode_rows(x)
    assert restored.columns[2]["categories"] == ["red", "rose", "white"]
    assert restored != Codec.from_json({**codec.to_json(), "label_names": ["a", "b", "c"]})
    with pytest.raises(InvalidInputError, match="malformed codec"):
        Codec.from_json({"kind": "table"})


def test_diabetes_without_labels_and_with_integer_labels_in_numeric_order(tmp_path):
    bunch = sk.load_diabetes()
    rng = np.random.default_rng(0)
    values = bunch.data.copy()
    values[rng.random(values.shape) < 0.2] = np.nan
    sex = np.where(bunch.data[:, 1] > 0, "male", "female")
    grade = np.array([10, 2, 1])[np.digitize(bunch.target, [100, 200])]
    rows = [[("" if np.isnan(v) else str(v)) for v in row] + [sex[i], str(grade[i])] for i, row in enumerate(values)]
    path = write_csv(tmp_path / "diabetes.csv", [*bunch.feature_names, "sex_text", "grade"], rows)

    plain = load_dataset(f"csv:{path}", categorical_columns=["sex_text"])
    assert plain.train_labels is None and plain.num_classes is None
    assert plain.shape == (10 + 2 + 1,) and plain.codec.columns[-1]["name"] == "grade"
    assert 0.0 <= plain.train_x.min() and plain.train_x.max() <= 1.0
    np.testing.assert_allclose(plain.train_mask[:, :10].mean(), 0.8, atol=0.02)

    labelled = load_dataset(f"csv:{path}", label_column="grade", categorical_columns=["sex_text"])
    assert labelled.codec.label_names == ("1", "2", "10") and labelled.num_classes == 3
    all_labels = np.concatenate([labelled.train_labels, labelled.test_labels])
    assert labelled.train_labels.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(all_labels), [np.sum(grade == g) for g in (1, 2, 10)])


def test_csv_errors_are_one_line_and_name_file_row_and_column(tmp_path):
    header = ["a", "b", "colour", "size", "y"]
    good = [["1", "2", "red", "L", "0"], ["2", "", "blue", "M", "1"], ["3", "4", "red", "S", "0"]]
    ragged = write_csv(tmp_path / "ragged.csv", header, [*good, ["1", "2", "3"]])
    one_line_error(r"ragged\.csv: row 5 has 3 cells, the header has 5", load_dataset, f"csv:{ragged}")
    empty = write_csv(tmp_path / "empty.csv", header, [[*row[:1], "NA", *row[2:]] for row in good])
    one_line_error(r"empty\.csv: column 'b' is empty in every row", load_dataset, f"csv:{empty}",
                   categorical_columns=["colour", "size"])
    texts = write_csv(tmp_path / "texts.csv", header, good)
    message = one_line_error("texts.csv: column 'colour' holds text", load_dataset, f"csv:{texts}", label_column="y")
    assert message.endswith("column 'colour' holds text (row 2: 'red'); column 'size' holds text (row 2: 'L'); "
                            "list them in --categorical_columns")
    one_line_error(r"holds text \(row 2: 'L'\); list it in --categorical_columns", load_dataset, f"csv:{texts}",
                   categorical_columns=["colour"])
    no_label = write_csv(tmp_path / "nolabel.csv", header, [*good, ["4", "5", "red", "L", "NaN"]])
    one_line_error(r"nolabel\.csv: row 5: the label column 'y' is missing \('NaN'\)", load_dataset,
                   f"csv:{no_label}", label_column="y", categorical_columns=["colour", "size"])
    one_line_error(r"texts\.csv: no label column 'label' \(columns: a, b, colour, size, y\)", load_dataset,
                   f"csv:{texts}", label_column="label")
    one_line_error(r"--categorical_columns names 'shade', not an input column", load_dataset, f"csv:{texts}",
                   categorical_columns=["colour", "shade"])
    one_line_error(r"missing\.csv: file not found", load_dataset, f"csv:{tmp_path / 'missing.csv'}")
    single = write_csv(tmp_path / "single.csv", ["a"], [["1"]])
    one_line_error(r"single\.csv: 1 example\(s\); at least 2 are needed", load_dataset, f"csv:{single}")


def test_read_table_for_imputation_reorders_columns_and_keeps_the_rest(wine, tmp_path):
    path, *_ = wine
    codec = load_wine_csv(path).codec
    names = [c["name"] for c in codec.columns]
    cells = [["7", "13.0", "white", *["NA"] * 12], ["8", "", "red", *["1.0"] * 12]]
    shuffled = list(reversed(range(len(names))))
    table = write_csv(tmp_path / "input.csv", ["cultivar", *[names[j] for j in shuffled]],
                      [["class_1", *[row[j] for j in shuffled]] for row in cells])
    header, rows, x, mask = datasets.read_table_for_imputation(table, codec)
    assert header[0] == "cultivar" and rows[0][0] == "class_1" and len(rows) == 2
    expected_x, expected_mask = codec.encode_rows(cells, "cells")
    np.testing.assert_array_equal(x, expected_x)
    np.testing.assert_array_equal(mask, expected_mask)
    partial = write_csv(tmp_path / "partial.csv", names[:-1], [row[:-1] for row in cells])
    one_line_error(rf"partial\.csv: no column\(s\) '{names[-1]}'", datasets.read_table_for_imputation, partial, codec)


def test_npz_digits_with_own_test_split_nan_and_mask(tmp_path):
    digits = sk.load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    rng = np.random.default_rng(1)
    images[rng.random(images.shape) < 0.1] = np.nan
    mask = (rng.random(images.shape) > 0.1).astype(np.uint8)
    path = str(tmp_path / "digits.npz")
    np.savez(path, x=images[:1500], mask=mask[:1500], y=digits.target[:1500],
             x_test=images[1500:], y_test=digits.target[1500:].astype(np.float64))
    ds = load_dataset(f"npz:{path}", train_size=1000)
    assert ds.shape == (8, 8, 1) and ds.is_image and ds.codec.kind == "image" and ds.num_classes == 10
    assert ds.train_x.shape == (1000, 8, 8, 1) and ds.test_x.shape == (297, 8, 8, 1)
    observed = ~np.isnan(images[:1000]) & (mask[:1000] == 1)
    np.testing.assert_array_equal(ds.train_mask[..., 0], observed)
    np.testing.assert_array_equal(ds.train_x[..., 0], np.where(observed, images[:1000], 0))
    np.testing.assert_array_equal(ds.test_mask[..., 0], ~np.isnan(images[1500:]))
    np.testing.assert_array_equal(ds.train_labels, digits.target[:1000])
    np.testing.assert_array_equal(ds.test_labels, digits.target[1500:])
    assert ds.test_labels.dtype == np.int64 and ds.has_own_holes

    np.savez(path, x=images * 16)
    one_line_error(r"digits\.npz: 'x' holds values in \[0, 16\]; float images must be in \[0, 1\]", load_dataset,
                   f"npz:{path}")
    np.savez(path, x=np.nan_to_num(images), y=np.where(np.arange(1797) == 4, np.nan, digits.target))
    one_line_error(r"digits\.npz: 'y' holds NaN at index 4", load_dataset, f"npz:{path}")
    np.savez(path, x=np.nan_to_num(images), mask=mask * 2)
    one_line_error(r"digits\.npz: 'mask' must hold only 0 \(missing\) and 1 \(observed\)", load_dataset,
                   f"npz:{path}")
    np.savez(path, images=images, labels=digits.target)
    one_line_error(r"digits\.npz: no array 'x' \(found: images, labels\)", load_dataset, f"npz:{path}")


def test_npz_sample_image_patches_as_uint8(tmp_path):
    picture = sk.load_sample_images().images[0]  # 427 x 640 x 3 uint8
    patches = picture[:416, :640].reshape(26, 16, 40, 16, 3).swapaxes(1, 2).reshape(-1, 16, 16, 3)
    path = str(tmp_path / "patches.npz")
    np.savez(path, x=patches)
    ds = load_dataset(f"npz:{path}", test_fraction=0.25, split_seed=7)
    assert ds.shape == (16, 16, 3) and ds.train_labels is None and ds.num_classes is None
    assert not ds.has_own_holes and len(ds.test_x) == 260 and len(ds.train_x) == 780
    loaded = np.concatenate([ds.train_x, ds.test_x])
    expected = patches.astype(np.float32) / 255
    # Every patch appears once, exactly /255; match them by their bytes.
    assert sorted(p.tobytes() for p in loaded) == sorted(p.tobytes() for p in expected)
    np.testing.assert_array_equal(ds.codec.offset, 0)
    np.testing.assert_array_equal(ds.codec.scale, 1)
    assert ds.codec.to_json()["offset"] == 0.0 and ds.codec.to_json()["scale"] == 1.0


def test_npz_vectors_are_min_max_scaled_per_column(tmp_path):
    rng = np.random.default_rng(2)
    x = np.column_stack([np.arange(50), rng.normal(5, 3, 50), np.full(50, 4.0)])
    x[rng.random(x.shape) < 0.2] = np.nan
    x[:, 0] = np.arange(50)
    path = str(tmp_path / "vectors.npz")
    np.savez(path, x=x, y=np.arange(50) % 3)
    ds = load_dataset(f"npz:{path}", test_fraction=0.2)
    assert ds.codec.kind == "table" and ds.shape == (3,)
    assert [c["name"] for c in ds.codec.columns] == ["x0", "x1", "x2"]
    ids = np.rint(ds.codec.unscale_values(ds.train_x)[:, 0]).astype(int)
    train = x[ids]
    np.testing.assert_array_equal(ds.train_mask, ~np.isnan(train))
    np.testing.assert_array_equal(ds.train_labels, ids % 3)
    for d in range(2):
        seen = ds.train_x[ds.train_mask[:, d] == 1, d]
        assert 0.0 <= seen.min() < 1e-6 and 1.0 - 1e-6 < seen.max() <= 1.0
        np.testing.assert_allclose(seen, (train[:, d][~np.isnan(train[:, d])] - np.nanmin(train[:, d]))
                                   / np.ptp(train[:, d][~np.isnan(train[:, d])]), atol=1e-6)
    assert ds.codec.scale[2] == 1.0  # a constant column
    np.testing.assert_allclose(ds.train_x[:, 2][ds.train_mask[:, 2] == 1], 0.0)
    assert ds.codec.decode_rows(ds.train_x[:1])[0][0] == str(ids[0])


def write_png(path, pixels) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(pixels).save(path)


def test_image_folder_with_class_subfolders(tmp_path):
    digits = sk.load_digits()
    written = {}
    for i in range(40):
        label = ("zero", "one")[digits.target[i] % 2]
        pixels = np.clip(digits.images[i] * 16, 0, 255).astype(np.uint8)
        name = f"{i:02d}.PNG" if i % 4 else f"{i:02d}.png"
        write_png(str(tmp_path / "digits" / label / "sub" / name), pixels)
        written[pixels.astype(np.float32).tobytes()] = label
    (tmp_path / "digits" / "zero" / "notes.txt").write_text("not an image")
    ds = load_dataset(f"images:{tmp_path / 'digits'}", test_fraction=0.25)
    assert ds.shape == (8, 8, 1) and ds.codec.label_names == ("one", "zero") and ds.num_classes == 2
    assert len(ds.train_x) == 30 and len(ds.test_x) == 10 and not ds.has_own_holes
    for x, labels in ((ds.train_x, ds.train_labels), (ds.test_x, ds.test_labels)):
        for image, label in zip(x, labels):
            assert written[(image[..., 0] * 255).round().astype(np.float32).tobytes()] == ds.codec.label_names[label]
    np.testing.assert_array_equal(ds.train_x * 255, np.round(ds.train_x * 255))


def test_image_folder_mixes_grayscale_rgb_rgba_and_sizes(tmp_path):
    rng = np.random.default_rng(3)
    gray = rng.integers(0, 256, (6, 5), dtype=np.uint8)
    rgba = rng.integers(0, 256, (6, 5, 4), dtype=np.uint8)
    folder = tmp_path / "mixed"
    write_png(str(folder / "a.png"), gray)
    Image.fromarray(rgba).save(str(folder / "b.png"))
    Image.fromarray(rgba[..., :3]).save(str(folder / "c.jpg"), quality=95)
    ds = load_dataset(f"images:{folder}", test_fraction=0.3, split_seed=1)
    assert ds.shape == (6, 5, 3) and ds.train_labels is None
    loaded = np.concatenate([ds.train_x, ds.test_x])
    candidates = [np.repeat(gray[..., None], 3, axis=2), rgba[..., :3]]
    matched = [any(np.array_equal(np.round(image * 255), c) for c in candidates) for image in loaded]
    assert sorted(matched) == [False, True, True]  # gray repeated and RGBA's RGB exactly; the JPEG is lossy

    Image.fromarray(rng.integers(0, 256, (9, 7), dtype=np.uint8)).save(str(folder / "d.png"))
    message = one_line_error("pass --image_size=HxW to resize them all", load_dataset, f"images:{folder}")
    assert f"is 6x5 but {folder / 'd.png'} is 9x7 (height x width)" in message and message.startswith(str(folder))
    resized = load_dataset(f"images:{folder}", image_size=(4, 3), test_fraction=0.25)
    assert resized.shape == (4, 3, 3) and len(resized.train_x) + len(resized.test_x) == 4

    (folder / "e.png").write_text("not a png")
    one_line_error(rf"{folder / 'e.png'}: not a readable image", load_dataset, f"images:{folder}",
                   image_size=(4, 3))
    os.makedirs(tmp_path / "empty")
    write_png(str(tmp_path / "classes" / "cat" / "a.png"), gray)
    write_png(str(tmp_path / "classes" / "loose.png"), gray)
    one_line_error(r"loose\.png: lies beside the class sub-folders", load_dataset, f"images:{tmp_path / 'classes'}")
    one_line_error(r"empty: no PNG or JPEG files", load_dataset, f"images:{tmp_path / 'empty'}")


def write_tfds_metadata(data_dir, name, splits) -> None:
    """The metadata TFDS's mock reads split names and sizes from (the mock ignores slicing)."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=str(data_dir))
    builder.info.set_splits(tfds.core.SplitDict(
        [tfds.core.SplitInfo(name=split, shard_lengths=[size], num_bytes=0) for split, size in splits.items()]))
    os.makedirs(builder.data_dir, exist_ok=True)
    builder.info.write_to_directory(builder.data_dir)


def test_tfds_splits_scaling_and_labels(tmp_path):
    import tensorflow_datasets as tfds

    write_tfds_metadata(tmp_path, "mnist", {"train": 60_000, "test": 10_000})
    write_tfds_metadata(tmp_path, "fashion_mnist", {"train": 60_000})
    with tfds.testing.mock_data(num_examples=12, data_dir=str(tmp_path), policy=tfds.testing.MockPolicy.USE_FILES):
        ds = load_dataset("tfds:mnist", data_dir=str(tmp_path), train_size=5, test_size=3)
        reference = next(iter(tfds.as_numpy(
            tfds.builder("mnist", data_dir=str(tmp_path)).as_dataset(split="train").batch(5))))
        fashion = load_dataset("tfds:fashion_mnist", data_dir=str(tmp_path), test_fraction=0.25)
    assert ds.name == "tfds:mnist" and ds.shape == (28, 28, 1) == datasets.MNIST_SHAPE
    assert ds.train_x.shape == (5, 28, 28, 1) and ds.test_x.shape == (3, 28, 28, 1)
    np.testing.assert_array_equal(ds.train_x, reference["image"].astype(np.float32) / 255)
    np.testing.assert_array_equal(ds.train_labels, reference["label"])
    assert 0.0 <= ds.train_x.min() and ds.train_x.max() <= 1.0 and ds.train_x.max() > 0.5
    assert ds.num_classes == 10 and ds.codec.label_names == tuple(str(d) for d in range(10))
    assert ds.train_labels.dtype == np.int64 and not ds.has_own_holes
    assert len(fashion.train_x) == 9 and len(fashion.test_x) == 3  # held out of 'train': no 'test' split
    assert fashion.codec.label_names[0] == "T-shirt/top" and fashion.num_classes == 10
    one_line_error(r"tfds:no_such_dataset_xyz: tensorflow_datasets could not provide it \(DatasetNotFoundError",
                   load_dataset, "tfds:no_such_dataset_xyz")


def test_mnist_spec_equals_load_mnist(mnist_dir):
    ds = load_dataset("mnist", data_dir=mnist_dir, train_size=100, test_size=20)
    reference = data.load_mnist(mnist_dir, 100, 20)
    np.testing.assert_array_equal(ds.train_x, reference.train_images)
    np.testing.assert_array_equal(ds.test_x, reference.test_images)
    np.testing.assert_array_equal(ds.train_labels, reference.train_labels)
    np.testing.assert_array_equal(ds.test_labels, reference.test_labels)
    assert ds.train_x.dtype == np.float32 and ds.shape == datasets.MNIST_SHAPE and ds.is_image
    assert ds.train_mask.shape == ds.train_x.shape and ds.train_mask.min() == 1.0 and ds.test_mask.min() == 1.0
    assert not ds.has_own_holes and ds.num_classes == 10 and ds.codec.label_names == ()
    assert ds.codec == datasets.Codec.from_json(ds.codec.to_json())
    converted = datasets.as_dataset(reference)
    np.testing.assert_array_equal(converted.train_x, ds.train_x)
    assert converted.codec == ds.codec and converted.test_mask.min() == 1.0 and datasets.as_dataset(ds) is ds


def test_specs_and_options_are_checked():
    message = one_line_error("unknown dataset 'parquet:x.parquet'", load_dataset, "parquet:x.parquet")
    assert message.endswith("expected mnist, tfds:NAME, npz:PATH, csv:PATH or images:DIR")
    one_line_error("unknown dataset 'csv:'", load_dataset, "csv:")
    one_line_error("unknown dataset 'tfds:'", load_dataset, "tfds:")
    with pytest.raises(InvalidInputError, match="apply only to csv"):
        load_dataset("mnist", label_column="y")
    with pytest.raises(InvalidInputError, match="applies only to images"):
        load_dataset("npz:x.npz", image_size=(8, 8))
    with pytest.raises(InvalidInputError, match="test_fraction"):
        load_dataset("npz:x.npz", test_fraction=1.0)
    one_line_error("train_size must be >= 1, got 0", load_dataset, "mnist", train_size=0)
    assert datasets.parse_image_size("32x48") == (32, 48) and datasets.parse_image_size(" 8X9 ") == (8, 9)
    for bad in ("32", "0x4", "ax4", "3x4x5", "-3x4", ""):
        with pytest.raises(InvalidInputError, match="HxW"):
            datasets.parse_image_size(bad)


def test_atomic_writers_and_overwrite_check(tmp_path):
    table = str(tmp_path / "out.csv")
    datasets.write_csv_atomically(table, ["a", "b"], [["1", "x, y"], ["", "z"]])
    with open(table, newline="") as f:
        assert list(csv.reader(f)) == [["a", "b"], ["1", "x, y"], ["", "z"]]
    arrays = str(tmp_path / "out.npz")
    datasets.write_npz_atomically(arrays, x=np.arange(6.0).reshape(2, 3), path=np.array([1]))
    with np.load(arrays) as stored:
        np.testing.assert_array_equal(stored["x"], np.arange(6.0).reshape(2, 3))
        assert stored["path"].tolist() == [1]
    image = np.linspace(0, 1, 4 * 5 * 3).reshape(4, 5, 3)
    picture = str(tmp_path / "out.png")
    datasets.write_png_atomically(picture, image)
    np.testing.assert_array_equal(np.asarray(Image.open(picture)), np.round(image * 255).astype(np.uint8))
    datasets.write_png_atomically(picture, image[..., :1])
    assert Image.open(picture).mode == "L"
    assert sorted(os.listdir(tmp_path)) == ["out.csv", "out.npz", "out.png"]  # no temporary files left
    with pytest.raises(InvalidInputError, match="complete"):
        datasets.write_png_atomically(picture, np.full((2, 2, 1), np.nan))
    one_line_error("cannot write it", datasets.write_csv_atomically, str(tmp_path / "no" / "dir.csv"), ["a"], [])

    os.symlink(table, tmp_path / "link.csv")
    for same in (table, str(tmp_path / "." / "out.csv"), str(tmp_path / "link.csv")):
        one_line_error("is the input", datasets.check_not_overwriting, table, same)
    datasets.check_not_overwriting(table, str(tmp_path / "other.csv"))


def test_sixteen_bit_grayscale_png_scales_by_65535(tmp_path):
    pixels = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000)
    for name in ("a.png", "b.png"):
        Image.fromarray(pixels).save(str(tmp_path / name))
    ds = load_dataset(f"images:{tmp_path}")
    assert ds.shape == (3, 4, 1)
    np.testing.assert_allclose(ds.train_x[0, ..., 0], pixels / 65535, rtol=1e-6)
