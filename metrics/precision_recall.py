"""Improved precision and recall (Kynkaanniemi et al. 2019) on VGG16 features with k-nearest-neighbour manifolds."""

import torch

from . import metric_utils


def _blocks(total, size):
    return [(start, min(start + size, total)) for start in range(0, total, size)]


def _owned_blocks(total, size, opts):
    """Row blocks this rank computes; the others are filled in by the other ranks."""
    return [block for i, block in enumerate(_blocks(total, size)) if opts is None or i % opts.num_gpus == opts.rank]


def pairwise_euclidean(a, b):
    """[len(a), len(b)] Euclidean distances in float32 (features may be stored in half precision; CUDA cdist has no Half)."""
    a, b = a.to(torch.float32), b.to(torch.float32)
    squared = a.square().sum(1, keepdim=True) + b.square().sum(1).unsqueeze(0) - 2 * (a @ b.T)
    return squared.clamp(min=0).sqrt()


def _sum_across_ranks(x, opts):
    if opts is not None and opts.num_gpus > 1:
        torch.distributed.all_reduce(x)
    return x


def manifold_radii(features, k=3, row_batch_size=10000, col_batch_size=10000, opts=None):
    """Distance from each point to its k-th nearest neighbour in the same set (the point itself excluded)."""
    assert features.ndim == 2 and len(features) > k, f'need more than k={k} points, got {len(features)}'
    radii = torch.zeros(len(features), dtype=torch.float32, device=features.device)
    for lo, hi in _owned_blocks(len(features), row_batch_size, opts):
        row_dists = torch.cat([pairwise_euclidean(features[lo:hi], features[c_lo:c_hi])
                               for c_lo, c_hi in _blocks(len(features), col_batch_size)], dim=1)
        # The zero self-distance is the smallest value of each row, hence k+1.
        radii[lo:hi] = row_dists.kthvalue(k + 1, dim=1).values
    return _sum_across_ranks(radii, opts)


def fraction_inside(probe, manifold, radii, row_batch_size=10000, col_batch_size=10000, opts=None):
    """Fraction of probe points within the radius of at least one manifold point."""
    assert probe.ndim == manifold.ndim == 2 and probe.shape[1] == manifold.shape[1], 'features must be [N, D] with equal D'
    inside = torch.zeros(len(probe), dtype=torch.float32, device=probe.device)
    for lo, hi in _owned_blocks(len(probe), row_batch_size, opts):
        hit = torch.zeros(hi - lo, dtype=torch.bool, device=probe.device)
        for c_lo, c_hi in _blocks(len(manifold), col_batch_size):
            dists = pairwise_euclidean(probe[lo:hi], manifold[c_lo:c_hi])
            hit |= (dists <= radii[c_lo:c_hi].unsqueeze(0)).any(dim=1)
        inside[lo:hi] = hit.float()
    return float(_sum_across_ranks(inside, opts).mean().item())


def precision_recall(real_features, gen_features, k=3, row_batch_size=10000, col_batch_size=10000, opts=None):
    """(precision, recall): generated points inside the real manifold, and real points inside the generated one."""
    real_radii = manifold_radii(real_features, k, row_batch_size, col_batch_size, opts)
    gen_radii = manifold_radii(gen_features, k, row_batch_size, col_batch_size, opts)
    precision = fraction_inside(gen_features, real_features, real_radii, row_batch_size, col_batch_size, opts)
    recall = fraction_inside(real_features, gen_features, gen_radii, row_batch_size, col_batch_size, opts)
    return precision, recall


def compute_pr(opts, max_real, num_gen, nhood_size=3, row_batch_size=10000, col_batch_size=10000):
    real, fake = metric_utils.real_and_generated_features(opts, metric_utils.VGG16_URL, max_real, num_gen)
    # Half precision halves the memory of the stored features on GPUs; distances are computed in float32.
    dtype = torch.float16 if opts.device.type == 'cuda' else torch.float32
    real_features = real.get_all_torch().to(opts.device, dtype)
    gen_features = fake.get_all_torch().to(opts.device, dtype)
    precision, recall = precision_recall(real_features, gen_features, k=nhood_size, row_batch_size=row_batch_size,
                                         col_batch_size=col_batch_size, opts=opts)
    if opts.rank != 0:
        return float('nan'), float('nan')
    return precision, recall
