import numpy as np
import pytest

from tfimpute import metrics, validation
from tfimpute.errors import InvalidInputError


def test_rmse_counts_only_missing_pixels_per_image():
    true = np.zeros((2, 28, 28, 1), np.float32)
    imputed = np.zeros_like(true)
    mask = np.ones_like(true)
    # Image 0: 4 missing pixels, errors 1, 1, 0, 0 -> sqrt(2/4).
    mask[0, 0, :4] = 0
    imputed[0, 0, :2] = 1.0
    # Image 1: 1 missing pixel with error 0.5 -> 0.5 (true 0.2, imputed 0.7: a difference, not a sum).
    mask[1, 5, 5] = 0
    true[1, 5, 5] = 0.2
    imputed[1, 5, 5] = 0.7
    # Errors on observed pixels must not count.
    imputed[:, 10:, :] = 0.9
    per_image = metrics.per_image_missing_rmse(true, imputed, mask)
    np.testing.assert_allclose(per_image, [np.sqrt(0.5), 0.5])
    assert metrics.missing_rmse(true, imputed, mask) == pytest.approx((np.sqrt(0.5) + 0.5) / 2)


def test_rmse_skips_complete_images_and_rejects_all_complete():
    true = np.zeros((2, 28, 28, 1), np.float32)
    mask = np.ones_like(true)
    mask[0, 0, 0] = 0
    imputed = true.copy()
    imputed[0, 0, 0] = 0.3
    assert metrics.missing_rmse(true, imputed, mask) == pytest.approx(0.3)
    with pytest.raises(InvalidInputError, match="no example has a missing entry with a known value"):
        metrics.missing_rmse(true, imputed, np.ones_like(true))


def test_rmse_never_scores_entries_the_data_itself_misses():
    true = np.array([[0.2, 0.4, 0.6, 0.8]], np.float32)
    imputed = np.array([[0.2, 0.5, 0.6, 0.0]], np.float32)
    test_mask = np.array([[1, 0, 1, 0]], np.float32)  # the test masking hides entries 1 and 3
    data_mask = np.array([[1, 1, 1, 0]], np.float32)  # ... but the data never had entry 3
    assert metrics.missing_rmse(true, imputed, test_mask, data_mask) == pytest.approx(0.1)
    assert metrics.missing_rmse(true, imputed, test_mask) == pytest.approx(np.sqrt((0.01 + 0.64) / 2))


def test_validation_accepts_three_layouts():
    flat = np.zeros((3, 784), np.float32)
    square = np.zeros((3, 28, 28))
    images, mask = validation.check_images_and_mask(flat, square, (28, 28, 1))
    assert images.shape == mask.shape == (3, 28, 28, 1)
    rgb, _ = validation.check_images_and_mask(np.zeros((2, 5 * 7 * 3)), np.ones((2, 5, 7, 3)), (5, 7, 3))
    assert rgb.shape == (2, 5, 7, 3)


def test_validation_of_vectors():
    vectors, mask = validation.check_images_and_mask(np.zeros((4, 13)), np.ones((4, 13)), (13,))
    assert vectors.shape == mask.shape == (4, 13)
    with pytest.raises(InvalidInputError, match=r"images: expected shape \[batch, 13\], got \[4, 12\]"):
        validation.check_images_and_mask(np.zeros((4, 12)), np.ones((4, 12)), (13,))
    with pytest.raises(InvalidInputError, match=r"expected shape \[batch, 5, 7, 3\] \(or \[batch, 105\]\)"):
        validation.check_images_and_mask(np.zeros((2, 5, 7)), np.ones((2, 5, 7)), (5, 7, 3))


@pytest.mark.parametrize("images,mask,message", [
    (np.zeros((3, 27, 28, 1)), np.ones((3, 27, 28, 1)), r"images: expected shape \[batch, 28, 28, 1\]"),
    (np.zeros((3, 28, 28, 1)), np.ones((2, 28, 28, 1)), "must have the same shape"),
    (np.full((1, 28, 28, 1), np.nan), np.ones((1, 28, 28, 1)), "NaN"),
    (np.full((1, 28, 28, 1), 255.0), np.ones((1, 28, 28, 1)), r"must be in \[0, 1\]"),
    (np.zeros((1, 28, 28, 1)), np.full((1, 28, 28, 1), 0.5), "mask: values must be 0 .* or 1"),
    ([["a"]], np.ones((1, 28, 28, 1)), "cannot be read as a float32 array"),
])
def test_validation_errors_name_the_problem(images, mask, message):
    with pytest.raises(InvalidInputError, match=message):
        validation.check_images_and_mask(images, mask, (28, 28, 1))
