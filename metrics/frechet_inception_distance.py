"""Frechet Inception Distance (Heusel et al. 2017) between real and generated Inception pool features, plus sFID on spatial features."""

import inspect

import numpy as np
import scipy.linalg

from . import metric_utils

# SciPy 1.16 dropped sqrtm's `disp` argument (and its (root, error) return); older releases need disp=False to
# return quietly on near-singular products, which few-shot covariances often are.
_SQRTM_TAKES_DISP = 'disp' in inspect.signature(scipy.linalg.sqrtm).parameters


def matrix_sqrt(matrix):
    if _SQRTM_TAKES_DISP:
        root, _ = scipy.linalg.sqrtm(matrix, disp=False)
        return root
    return scipy.linalg.sqrtm(matrix)


def frechet_distance(mu_a, sigma_a, mu_b, sigma_b):
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 sqrtm(S_a S_b)), keeping the real part of the matrix root."""
    mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
    assert mu_a.shape == mu_b.shape and mu_a.ndim == 1, 'means must be vectors of equal length'
    assert sigma_a.shape == sigma_b.shape == (mu_a.size, mu_a.size), 'covariances must be DxD'
    mean_term = np.square(mu_a - mu_b).sum()
    root = matrix_sqrt(np.dot(sigma_a, sigma_b))
    return float(np.real(mean_term + np.trace(sigma_a + sigma_b - root * 2)))


def _fid_from_stats(opts, max_real, num_gen, detector_kwargs, extractor=None):
    url = metric_utils.INCEPTION_URL
    real = metric_utils.compute_feature_stats_for_dataset(
        opts=opts, detector_url=url, detector_kwargs=detector_kwargs, extractor=extractor,
        rel_lo=0, rel_hi=0, capture_mean_cov=True, max_items=max_real)
    fake = metric_utils.compute_feature_stats_for_generator(
        opts=opts, detector_url=url, detector_kwargs=detector_kwargs, extractor=extractor,
        rel_lo=0, rel_hi=1, capture_mean_cov=True, max_items=num_gen)
    opts.details.num_real = real.num_items
    opts.details.num_gen = fake.num_items
    if opts.rank != 0:
        return float('nan')
    mu_real, sigma_real = real.get_mean_cov()
    mu_fake, sigma_fake = fake.get_mean_cov()
    return frechet_distance(mu_fake, sigma_fake, mu_real, sigma_real)


def compute_fid(opts, max_real, num_gen):
    """FID on the 2048-D pool3 features; max_real=None uses the whole dataset."""
    return _fid_from_stats(opts, max_real, num_gen, detector_kwargs=dict(return_features=True))


def compute_sfid(opts, max_real, num_gen):
    """sFID (Nash et al. 2021): the same distance on the first 7 mixed_6/conv channels."""
    return _fid_from_stats(opts, max_real, num_gen, detector_kwargs=dict(tap='mixed_6/conv', channels=metric_utils.SFID_CHANNELS),
                           extractor=metric_utils.inception_spatial_features)
