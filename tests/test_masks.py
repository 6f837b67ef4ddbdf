import numpy as np
import pytest

from tfimpute import masks
from tfimpute.errors import InvalidInputError


@pytest.mark.parametrize("mechanism", masks.MECHANISMS)
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
