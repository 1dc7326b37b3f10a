"""Kernel Inception Distance (Binkowski et al. 2018): unbiased MMD^2 with a cubic polynomial kernel, averaged over random subsets."""

import numpy as np

from . import metric_utils


def _cubic_kernel(a, b, dim):
    return (a @ b.T / dim + 1) ** 3


def kernel_distance(real_features, gen_features, num_subsets=100, max_subset_size=1000, rng=None):
    """Unbiased MMD^2 estimate between two feature sets, averaged over `num_subsets` draws of m rows each.

    m = min(len(real), len(gen), max_subset_size); the within-set kernel sums leave out the diagonal.
    """
    real_features = np.asarray(real_features, np.float64)
    gen_features = np.asarray(gen_features, np.float64)
    assert real_features.ndim == gen_features.ndim == 2 and real_features.shape[1] == gen_features.shape[1], \
        'feature sets must be [N, D] with the same D'
    rng = np.random.default_rng(0) if rng is None else rng
    dim = real_features.shape[1]
    m = min(len(real_features), len(gen_features), max_subset_size)
    if m < 2:
        raise ValueError(f'KID needs at least 2 real and 2 generated images, got {len(real_features)} and {len(gen_features)}')
    total = 0.0
    for _ in range(num_subsets):
        x = gen_features[rng.choice(len(gen_features), m, replace=False)]
        y = real_features[rng.choice(len(real_features), m, replace=False)]
        within = _cubic_kernel(x, x, dim) + _cubic_kernel(y, y, dim)
        across = _cubic_kernel(x, y, dim)
        total += (within.sum() - np.trace(within)) / (m - 1) - across.sum() * 2 / m
    return float(total / num_subsets / m)


def compute_kid(opts, max_real, num_gen, num_subsets=100, max_subset_size=1000):
    real, fake = metric_utils.real_and_generated_features(opts, metric_utils.INCEPTION_URL, max_real, num_gen)
    if opts.rank != 0:
        return float('nan')
    return kernel_distance(real.get_all(), fake.get_all(), num_subsets=num_subsets, max_subset_size=max_subset_size,
                           rng=np.random.default_rng(opts.seed))
