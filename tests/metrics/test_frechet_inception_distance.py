"""Tests for FID and sFID: the formula against an eigenvalue computation, and end to end on stand-in detectors."""

import numpy as np
import torch

from metrics import metric_main
from metrics.frechet_inception_distance import frechet_distance

from .standins import MemorizingGenerator, ToyDataset, ToyGenerator, toy_dataset_kwargs


def _random_stats(rng, dim, n):
    x = rng.randn(n, dim) @ rng.randn(dim, dim)
    return x.mean(0), np.cov(x, rowvar=False)


def test_fid_formula_matches_eigenvalue_form():
    rng = np.random.RandomState(0)
    mu1, s1 = _random_stats(rng, 5, 40)
    mu2, s2 = _random_stats(rng, 5, 40)
    # Tr sqrt(S1 S2) = sum of square roots of the (real, non-negative) eigenvalues of S1 S2.
    eig = np.linalg.eigvals(s1 @ s2).real.clip(min=0)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(eig).sum()
    assert abs(frechet_distance(mu1, s1, mu2, s2) - expected) < 1e-6 * max(1, expected)


def test_fid_of_a_set_with_itself_is_zero():
    rng = np.random.RandomState(1)
    mu, s = _random_stats(rng, 6, 50)
    assert abs(frechet_distance(mu, s, mu, s)) < 1e-6
    assert abs(frechet_distance(mu, s, mu + 1, s) - 6.0) < 1e-6


def _run(metric, G, **kw):
    return metric_main.calc_metric(metric, G=G, dataset_kwargs=toy_dataset_kwargs(), device=torch.device('cpu'),
                                   num_workers=0, **kw)


def test_fid_of_generator_replaying_the_dataset_is_zero(metric_env):
    G = MemorizingGenerator(ToyDataset(count=12).images)
    result = _run('fid50k_full', G, item_cap=24)   # two passes over the 12 images: identical mean and covariance
    assert abs(result.results.fid50k_full) < 1e-3
    assert result.details['num_real'] == 12 and result.details['num_gen'] == 24


def test_fid_and_sfid_of_a_different_generator_are_positive(metric_env):
    for metric in ('fid5k_full', 'sfid5k_full'):
        result = _run(metric, ToyGenerator(kind='smooth'), item_cap=16)
        value = result.results[metric]
        assert np.isfinite(value) and value > 1e-3, (metric, value)
        assert result.details['num_real'] == 12
