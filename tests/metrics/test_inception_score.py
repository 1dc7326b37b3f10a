"""Tests for the Inception Score formula."""

import numpy as np

from metrics.inception_score import inception_score


def test_uniform_predictions_score_one():
    mean, std = inception_score(np.full([20, 5], 0.2), num_splits=4)
    assert abs(mean - 1) < 1e-12 and std < 1e-12


def test_confident_balanced_predictions_score_number_of_classes():
    probs = np.tile(np.eye(4), (5, 1))   # 20 images, each class 5 times, one-hot
    mean, std = inception_score(probs, num_splits=5)
    assert abs(mean - 4) < 1e-9 and std < 1e-9
