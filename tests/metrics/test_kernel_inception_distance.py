"""Tests for KID: the vectorised estimate against a naive double loop, and unbiasedness on a toy case."""

import numpy as np

from metrics.kernel_inception_distance import kernel_distance


def _naive_unbiased_mmd2(x, y):
    dim = x.shape[1]
    k = lambda a, b: (a @ b / dim + 1) ** 3
    m = len(x)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_single_full_subset_matches_naive_formula():
    rng = np.random.RandomState(0)
    real = rng.randn(7, 3)
    gen = rng.randn(7, 3) + 0.5
    # With m equal to the set sizes every subset is a permutation of the whole set, so the estimate is exact.
    got = kernel_distance(real, gen, num_subsets=3, max_subset_size=7)
    assert abs(got - _naive_unbiased_mmd2(gen, real)) < 1e-10


def test_kid_is_unbiased_for_identical_distributions():
    rng = np.random.RandomState(1)
    estimates = []
    for _ in range(300):
        estimates.append(kernel_distance(rng.randn(6, 4), rng.randn(6, 4), num_subsets=1, max_subset_size=6,
                                         rng=np.random.default_rng(0)))
    estimates = np.array(estimates)
    standard_error = estimates.std() / np.sqrt(len(estimates))
    assert abs(estimates.mean()) < 3 * standard_error
    assert (estimates < 0).any()          # an unbiased estimator of zero must go negative sometimes


def test_kid_detects_a_shift():
    rng = np.random.RandomState(2)
    assert kernel_distance(rng.randn(50, 4), rng.randn(50, 4) + 2, num_subsets=5) > 0.5
