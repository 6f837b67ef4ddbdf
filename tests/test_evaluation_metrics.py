"""FID's Fréchet distance, the logistic-regression accuracy and Table 1's number format."""

import numpy as np
import pytest

from tfimpute import metrics, report
from tfimpute.errors import InvalidInputError


def test_frechet_distance_of_diagonal_gaussians_has_a_closed_form():
    # |mu_a - mu_b|^2 = 1 + 4; sum_i (sqrt(a_i) - sqrt(b_i))^2 = (1 - 2)^2 + (2 - 3)^2.
    distance = metrics.frechet_distance(np.array([0.0, 0.0]), np.diag([1.0, 4.0]),
                                        np.array([1.0, 2.0]), np.diag([4.0, 9.0]))
    assert distance == pytest.approx(7.0, abs=1e-9)


def test_frechet_distance_is_rotation_invariant_and_zero_for_equal_gaussians():
    angle = 0.3
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    covariance_a = rotation @ np.diag([1.0, 9.0]) @ rotation.T
    covariance_b = rotation @ np.diag([4.0, 1.0]) @ rotation.T
    # Commuting covariances: (1 - 2)^2 + (3 - 1)^2; the means differ by (3, 4): 25.
    assert metrics.frechet_distance(np.zeros(2), covariance_a, np.array([3.0, 4.0]), covariance_b) \
        == pytest.approx(30.0, abs=1e-9)
    assert metrics.frechet_distance(np.ones(2), covariance_a, np.ones(2), covariance_a) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_rejects_mismatched_dimensions():
    with pytest.raises(InvalidInputError, match="different dimensions"):
        metrics.frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def test_feature_statistics_are_the_sample_mean_and_unbiased_covariance():
    features = np.array([[1.0, 2.0], [3.0, 6.0], [5.0, 4.0]])
    mean, covariance = metrics.feature_statistics(features)
    np.testing.assert_allclose(mean, [3.0, 4.0])
    np.testing.assert_allclose(covariance, [[4.0, 2.0], [2.0, 4.0]])  # sums of products / (n - 1)


def test_logistic_accuracy_on_a_separable_problem():
    rng = np.random.default_rng(0)
    centres = np.array([[8.0, 0.0], [0.0, 8.0], [-8.0, -8.0]])
    labels = rng.integers(0, 3, 300)
    features = centres[labels] + rng.normal(0.0, 0.5, (300, 2))
    fit = metrics.LogisticFit(epochs=30, batch_size=32, learning_rate=0.05)
    classifier = metrics.fit_logistic_regression(features[:200], labels[:200], num_classes=3, fit=fit)
    assert metrics.classification_accuracy(classifier, features[200:], labels[200:]) == 1.0
    # Relabelling the first half of the test points wrongly leaves exactly half correct.
    wrong = labels[200:].copy()
    wrong[:50] = (wrong[:50] + 1) % 3
    assert metrics.classification_accuracy(classifier, features[200:], wrong) == 0.5
    assert metrics.logistic_accuracy(features[:200], labels[:200], features[200:], labels[200:], fit=fit) \
        == pytest.approx(1.0)


@pytest.mark.parametrize("mean,stderr,decimals,expected", [
    (0.1672, 0.0021, 3, "0.167(2)"),
    (0.2571, 0.0001, 3, "0.257(0)"),
    (11.3, 1.2, 1, "11(1)"),
    (92.23, 0.14, 1, "92.2(1)"),
    (0.2571, None, 3, "0.257"),
])
def test_numbers_are_formatted_as_in_table_1(mean, stderr, decimals, expected):
    assert report.format_estimate(mean, stderr, decimals) == expected
