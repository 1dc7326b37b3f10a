"""Perceptual path length (Karras et al. 2019): LPIPS change under a tiny step along Z (slerp) or W (lerp) paths."""

import numpy as np
import torch

from . import metric_utils
from .lpips import shrink_for_lpips


def slerp(a, b, t):
    """Spherical interpolation between the directions of a and b ([N, D]); t is [N] or broadcastable. Returns unit vectors."""
    a = a / a.norm(dim=-1, keepdim=True)
    b = b / b.norm(dim=-1, keepdim=True)
    t = torch.as_tensor(t, dtype=a.dtype, device=a.device).reshape(-1, 1)
    angle = torch.acos((a * b).sum(dim=-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    mixed = (torch.sin((1 - t) * angle) * a + torch.sin(t * angle) * b) / torch.sin(angle)
    return mixed / mixed.norm(dim=-1, keepdim=True)


def randomize_noise_buffers(G, generator):
    """PPL draws fresh constant noise for every batch, so that both ends of a step share the same noise."""
    for name, buffer in G.named_buffers():
        if name.endswith('.noise_const'):
            buffer.copy_(torch.randn(buffer.shape, generator=generator).to(buffer.device))


def center_crop_face(images):
    """The face-centred crop of the original PPL: rows [3c, 7c) and columns [2c, 6c), c = H // 8."""
    c = images.shape[2] // 8
    return images[:, :, c * 3:c * 7, c * 2:c * 6]


def path_step_distances(G, vgg16, z, c, t, epsilon, space, crop, generator):
    """LPIPS distance / epsilon^2 between the images at t and t + epsilon on paths between z pairs ([2N, z_dim])."""
    assert space in ('z', 'w'), f'space must be "z" or "w", got {space!r}'
    z0, z1 = z.chunk(2)
    if space == 'w':
        w0, w1 = G.mapping(z=torch.cat([z0, z1]), c=torch.cat([c, c])).chunk(2)
        weight = t.view(-1, 1, 1)
        ws = torch.cat([w0.lerp(w1, weight), w0.lerp(w1, weight + epsilon)])
    else:
        zs = torch.cat([slerp(z0, z1, t), slerp(z0, z1, t + epsilon)])
        ws = G.mapping(z=zs, c=torch.cat([c, c]))
    randomize_noise_buffers(G, generator)
    images = G.synthesis(ws, noise_mode='const', force_fp32=True)
    if crop:
        images = center_crop_face(images)
    images = (shrink_for_lpips(images.to(torch.float32)) + 1) * 127.5
    if images.shape[1] == 1:
        images = images.repeat(1, 3, 1, 1)
    embeddings = vgg16(images, resize_images=False, return_lpips=True)
    first, second = embeddings.chunk(2)
    return (first - second).square().sum(dim=1) / epsilon ** 2


def trimmed_mean(values, low_pct=1, high_pct=99):
    """Mean of the values between the low_pct percentile (rounded down) and high_pct (rounded up)."""
    values = np.asarray(values, np.float64)
    low = np.percentile(values, low_pct, method='lower')
    high = np.percentile(values, high_pct, method='higher')
    return float(values[(values >= low) & (values <= high)].mean())


def compute_ppl(opts, num_samples, epsilon, space, sampling, crop, batch_size=2):
    assert sampling in ('full', 'end'), f'sampling must be "full" or "end", got {sampling!r}'
    num_samples = opts.capped(num_samples)
    sampler = metric_utils.GeneratorSampler(opts, stream=1)
    vgg16 = metric_utils.get_feature_detector(metric_utils.VGG16_URL, device=opts.device, num_gpus=opts.num_gpus,
                                              rank=opts.rank, detector_dir=opts.detector_dir)
    chunks = []
    num_done = 0
    with torch.no_grad():
        while num_done < num_samples:
            z = sampler.latents(batch_size * 2)
            c = sampler.conditions(batch_size)
            t = torch.rand([batch_size], generator=sampler.rng).to(opts.device) * (1 if sampling == 'full' else 0)
            dists = path_step_distances(sampler.G, vgg16, z, c, t, epsilon, space, crop, sampler.rng)
            dists = metric_utils.gather_rows(dists.unsqueeze(1), opts).squeeze(1)
            chunks.append(dists.cpu())
            num_done += len(dists)
            opts.report_progress('ppl samples', min(num_done, num_samples), num_samples)
    distances = torch.cat(chunks)[:num_samples].numpy()
    opts.details.num_gen = len(distances)
    if opts.rank != 0:
        return float('nan')
    return trimmed_mean(distances)
