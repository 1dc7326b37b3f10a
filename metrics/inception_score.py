"""Inception Score (Salimans et al. 2016): exp of the mean KL between per-image and marginal class distributions."""

import numpy as np

from . import metric_utils


def inception_score(probabilities, num_splits=10):
    """(mean, std) over `num_splits` equal splits of an [N, classes] matrix of class probabilities."""
    probabilities = np.asarray(probabilities, np.float64)
    assert probabilities.ndim == 2 and len(probabilities) >= num_splits, 'need an [N, classes] matrix with N >= num_splits'
    scores = []
    for part in np.array_split(probabilities, num_splits):
        marginal = part.mean(axis=0, keepdims=True)
        kl = part * (np.log(part + 1e-30) - np.log(marginal + 1e-30))
        scores.append(np.exp(kl.sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))


def compute_is(opts, num_gen, num_splits=10):
    # no_output_bias=True makes the detector return softmax probabilities without the final bias.
    fake = metric_utils.compute_feature_stats_for_generator(
        opts=opts, detector_url=metric_utils.INCEPTION_URL, detector_kwargs=dict(no_output_bias=True),
        capture_all=True, max_items=num_gen)
    opts.details.num_gen = fake.num_items
    if opts.rank != 0:
        return float('nan'), float('nan')
    return inception_score(fake.get_all(), num_splits=min(num_splits, fake.num_items))
