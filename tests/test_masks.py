import numpy as np
import pytest

from tfimpute import masks
from tfimpute.errors import InvalidInputError


@pytest.mark.parametrize("mechanism", masks.IMAGE_MECHANISMS)
def test_masks_are_binary_reproducible_and_seeded(mechanism):
    first = masks.generate_masks(mechanism, 0.6, 200, seed=3)
    assert first.shape == (200, 28, 28, 1) and first.dtype == np.float32
    assert set(np.unique(first)) <= {0.0, 1.0}
    np.testing.assert_array_equal(first, masks.generate_masks(mechanism, 0.6, 200, seed=3))
    assert not np.array_equal(first, masks.generate_masks(mechanism, 0.6, 200, seed=4))


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.6, 0.9])
def test_independent_rate(rate):
    mask = masks.generate_masks("independent", rate, 2000, seed=0)
    assert masks.realised_missing_fraction(mask) == pytest.approx(rate, abs=0.005)


@pytest.mark.parametrize("rate,side", [(0.3, 23), (0.6, 18), (0.9, 9)])
def test_square_observes_exactly_one_square(rate, side):
    assert masks.square_side(rate) == side
    mask = masks.generate_masks("square", rate, 300, seed=1)[..., 0]
    for m in mask[:50]:
        rows, cols = np.nonzero(m)
        assert rows.max() - rows.min() + 1 == side and cols.max() - cols.min() + 1 == side
        assert m.sum() == side * side
    assert masks.realised_missing_fraction(mask) == pytest.approx(1 - side * side / 784)
    # Positions vary over the image.
    positions = (28 - side + 1) ** 2
    assert len({tuple(np.argwhere(m)[0]) for m in mask}) > min(positions - 3, 100)


@pytest.mark.parametrize("rate", [0.3, 0.6, 0.9])
def test_patch_rate_is_calibrated(rate):
    mask = masks.generate_masks("patch", rate, 3000, seed=2)
    assert masks.realised_missing_fraction(mask) == pytest.approx(rate, abs=0.02)
    # Missing pixels form rectangles: a missing pixel's left neighbour is missing
    # far more often than under independent missingness at the same rate.
    def left_neighbour_missing(mask):
        missing = 1 - mask[..., 0]
        return (missing[:, :, 1:] * missing[:, :, :-1]).sum() / missing[:, :, 1:].sum()

    independent = masks.generate_masks("independent", rate, 3000, seed=2)
    assert left_neighbour_missing(mask) > left_neighbour_missing(independent) + 0.05


def test_bad_arguments_are_rejected():
    with pytest.raises(InvalidInputError, match="unknown missingness mechanism 'blocks'"):
        masks.generate_masks("blocks", 0.5, 10, seed=0)
    for rate in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(InvalidInputError, match="missing_rate must be in"):
            masks.generate_masks("independent", rate, 10, seed=0)
    with pytest.raises(InvalidInputError, match="num_patches must be >= 1"):
        masks.generate_masks("patch", 0.5, 10, seed=0, num_patches=0)


def test_make_incomplete_discards_missing_values():
    rng = np.random.default_rng(0)
    images = rng.random((5, 28, 28, 1)).astype(np.float32)
    mask = masks.generate_masks("independent", 0.5, 5, seed=0)
    incomplete = masks.make_incomplete(images, mask)
    assert np.all(incomplete.observed[mask == 0] == 0)
    np.testing.assert_array_equal(incomplete.observed[mask == 1], images[mask == 1])
    with pytest.raises(InvalidInputError, match="differ in shape"):
        masks.make_incomplete(images, mask[:4])


def test_observed_pixel_means_average_observed_values_and_fall_back_to_the_overall_mean():
    """Per pixel: the mean where observed (here over 1 and over 2 digits); a never-observed pixel gets
    the mean of all observed values; what missing positions hold never counts."""
    observed = np.zeros((2, 28, 28, 1), np.float32)
    mask = np.zeros_like(observed)
    observed[:, 0, 0, 0], mask[:, 0, 0, 0] = [0.2, 0.6], 1.0  # observed twice: mean 0.4
    observed[0, 0, 1, 0], mask[0, 0, 1, 0] = 0.9, 1.0  # observed once: 0.9
    observed[1, 0, 1, 0] = 0.5  # present but missing: ignored
    data = masks.IncompleteData(observed=observed, mask=mask)
    means = data.observed_pixel_means()
    assert means[0, 0, 0] == pytest.approx(0.4) and means[0, 1, 0] == pytest.approx(0.9)
    overall = (0.2 + 0.6 + 0.9) / 3
    np.testing.assert_allclose(means[1:, :, 0], overall)  # every never-observed pixel
    assert means.shape == (28, 28, 1)
    # One observed pixel in the whole set: every other pixel gets exactly its value.
    single = np.zeros((1, 28, 28, 1), np.float32)
    single_mask = np.zeros_like(single)
    single[0, 3, 3, 0], single_mask[0, 3, 3, 0] = 0.7, 1.0
    np.testing.assert_allclose(masks.IncompleteData(observed=single, mask=single_mask).observed_pixel_means(), 0.7)


# sha256 prefixes of the MNIST masks (300 masks, seed 7, 32 patches) that the paper's protocol
# produced before masks knew other shapes: generalising them must not move a single pixel.
MNIST_MASK_DIGESTS = {
    ("independent", 0.3): "bd441840fa1b424b", ("independent", 0.6): "c4358af915a1ca47",
    ("independent", 0.9): "5224dd0f4d113866", ("square", 0.3): "bbffe8275b2d2fb6",
    ("square", 0.6): "b202505e8e0351e0", ("square", 0.9): "b81e91225ade45ed",
    ("patch", 0.3): "623faf4f934342da", ("patch", 0.6): "f8a3a43ffb5e64ba", ("patch", 0.9): "4049cab58b05e402",
}


@pytest.mark.parametrize("mechanism,rate", sorted(MNIST_MASK_DIGESTS))
def test_mnist_masks_are_unchanged(mechanism, rate):
    import hashlib

    mask = masks.generate_masks(mechanism, rate, 300, 7, 32)
    assert hashlib.sha256(mask.tobytes()).hexdigest()[:16] == MNIST_MASK_DIGESTS[(mechanism, rate)]


def test_image_mechanisms_scale_with_the_image_and_hide_all_channels_of_a_pixel():
    shape = (12, 20, 3)
    for mechanism in masks.IMAGE_MECHANISMS:
        mask = masks.generate_masks(mechanism, 0.6, 400, seed=5, shape=shape)
        assert mask.shape == (400, *shape)
        np.testing.assert_array_equal(mask[..., 0], mask[..., 2])  # channels together
        tolerance = 0.03 if mechanism != "square" else 0.06
        assert masks.realised_missing_fraction(mask) == pytest.approx(0.6, abs=tolerance)
    square = masks.generate_masks("square", 0.6, 20, seed=1, shape=shape)[..., 0]
    height, width = masks.rectangle_sides(0.6, 12, 20)
    assert (height, width) == (round(12 * np.sqrt(0.4)), round(20 * np.sqrt(0.4)))
    for m in square:
        rows, cols = np.nonzero(m)
        assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == (height, width)
        assert m.sum() == height * width


def test_vectors_take_the_entrywise_mechanisms_only():
    mask = masks.generate_masks("independent", 0.3, 1000, seed=0, shape=(7,))
    assert mask.shape == (1000, 7) and masks.realised_missing_fraction(mask) == pytest.approx(0.3, abs=0.02)
    for mechanism in ("square", "patch"):
        with pytest.raises(InvalidInputError, match=f"--missingness={mechanism} needs images; on vectors"):
            masks.generate_masks(mechanism, 0.3, 10, seed=0, shape=(7,))
    with pytest.raises(InvalidInputError, match="needs the values"):
        masks.generate_masks("mar", 0.3, 10, seed=0, shape=(7,))


def test_mnar_hides_larger_values_more_often_at_the_requested_rate():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(5000, 4)) * [1.0, 10.0, 0.1, 3.0] + [0.0, 5.0, -2.0, 1.0]
    mask = masks.generate_masks("mnar", 0.3, 5000, seed=1, shape=(4,), values=values)
    for column in range(4):
        missing = mask[:, column] == 0
        assert missing.mean() == pytest.approx(0.3, abs=0.025)
        # Self-masking: the hidden values are larger than the observed ones.
        assert values[missing, column].mean() > values[~missing, column].mean() + 0.5 * values[:, column].std()


def test_mar_depends_on_the_always_observed_columns_only():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(6000, 10))
    mask = masks.generate_masks("mar", 0.4, 6000, seed=2, shape=(10,), values=values)
    always = np.flatnonzero(mask.min(axis=0) == 1)
    driven = np.setdiff1d(np.arange(10), always)
    assert len(always) == round(masks.MAR_OBSERVED_FRACTION * 10)
    np.testing.assert_allclose((1 - mask[:, driven]).mean(axis=0), 0.4, atol=0.03)
    # A driven column's missingness is predictable from the observed columns ...
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    column = driven[0]
    fit = LogisticRegression().fit(values[:, always], mask[:, column])
    assert roc_auc_score(mask[:, column], fit.predict_proba(values[:, always])[:, 1]) > 0.6  # 0.5: unrelated
    # ... and (given them) not from its own value: a fresh draw with the column's values changed
    # alone gives the same mask.
    shuffled = values.copy()
    shuffled[:, column] = rng.normal(size=6000)
    again = masks.generate_masks("mar", 0.4, 6000, seed=2, shape=(10,), values=shuffled)
    np.testing.assert_array_equal(again[:, column], mask[:, column])


def test_combine_keeps_the_data_own_holes():
    own = np.array([[1, 0, 1, 1]], np.float32)
    synthetic = np.array([[1, 1, 0, 1]], np.float32)
    np.testing.assert_array_equal(masks.combine(own, synthetic), [[1, 0, 0, 1]])
    np.testing.assert_array_equal(masks.combine(None, synthetic), synthetic)
