"""Measuring a trained AugIntAE on a novel class: reconstruction error of held-out images (the paper's table 1
measure), and the project's few-shot metrics (diversity, path smoothness, FID, nearest reference) applied to
samples mixed from given seeds instead of to random latents."""

from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from metrics import fewshot as fewshot_metrics
from metrics import frechet_inception_distance, lpips, metric_utils

from .fewshot import FewShotAutoencoder, all_pairs, uint8_to_float


def reconstruction_error(model: FewShotAutoencoder, images: torch.Tensor) -> Tuple[float, np.ndarray]:
    """Mean per-pixel L2 error on [0, 255] between images (uint8 [N, C, R, R]) and their reconstructions.

    Per pixel, the Euclidean length of the difference of the colour vectors (one value for grey
    images), averaged over the pixels of an image; returns (mean over images, per-image values [N]).
    Reconstructions are clipped to [0, 255] but not rounded.
    """
    recon = ((model.reconstruct(images).to(torch.float64) + 1) * 127.5).clamp(0, 255)
    diff = recon - images.to(model.device, torch.float64)
    per_image = diff.square().sum(dim=1).sqrt().mean(dim=[1, 2]).cpu().numpy()
    return float(per_image.mean()), per_image


def _embed(embedder, images):
    return embedder(lpips.to_lpips_input(images), resize_images=False, return_lpips=True)


def diversity(model: FewShotAutoencoder, codes: torch.Tensor, embedder, num_pairs: int = 100,
              generator: Optional[torch.Generator] = None) -> Tuple[float, float]:
    """Mean and std of the distance between two independent few-shot samples (the lpips_div1k idea,
    with samples drawn by FewShotAutoencoder.sample from the seeds' codes)."""
    first, _, _ = model.sample(codes, num_pairs, generator=generator)
    second, _, _ = model.sample(codes, num_pairs, generator=generator)
    with torch.no_grad():
        dists = lpips.paired_distances(embedder, lpips.to_lpips_input(first), lpips.to_lpips_input(second)).cpu().numpy()
    return float(dists.mean()), float(dists.std())


def smoothness(model: FewShotAutoencoder, codes: torch.Tensor, embedder, pairs: Optional[Sequence[Tuple[int, int]]] = None,
               num_steps: int = 10) -> Tuple[float, float, float]:
    """The smoothness metric (mean sub-interval distance, mean per-path std, mean end-to-end distance)
    on SLERP paths between seed codes: alpha = 1, 1 - 1/S, ..., 0 for each pair (all pairs by default)."""
    pairs = all_pairs(len(codes)) if pairs is None else list(pairs)
    alphas = torch.linspace(1, 0, num_steps + 1)
    steps, ends = [], []
    with torch.no_grad():
        for i, j in pairs:
            embedded = _embed(embedder, model.decode(model.mix(codes, [(i, j)] * (num_steps + 1), alphas)))
            steps.append((embedded[1:] - embedded[:-1]).square().sum(dim=1).cpu().numpy())
            ends.append(float((embedded[-1] - embedded[0]).square().sum()))
    return fewshot_metrics.smoothness_summary(np.stack(steps), np.array(ends))


def nearest_reference_distance(model: FewShotAutoencoder, samples: torch.Tensor, references: torch.Tensor, embedder) -> float:
    """Mean distance from each sample (float [-1, 1]) to its nearest reference image (uint8)."""
    with torch.no_grad():
        embedded = _embed(embedder, samples)
        refs = embedder(lpips.uint8_to_lpips_input(references.to(model.device)), resize_images=False, return_lpips=True)
        return float(lpips.squared_distance_matrix(embedded, refs).min(dim=1).values.mean())


def fid_against(model: FewShotAutoencoder, samples: torch.Tensor, references: torch.Tensor, detector_dir=None) -> float:
    """FID between few-shot samples (float [-1, 1]) and reference images (uint8), Inception pool features.

    With a few dozen images on either side this is a rough, biased number: compare runs on the same
    counts only.
    """
    detector = metric_utils.get_feature_detector(metric_utils.INCEPTION_URL, device=model.device, detector_dir=detector_dir)
    with torch.no_grad():
        fake = metric_utils.call_detector(detector, metric_utils.quantize_images(samples), return_features=True)
        real = metric_utils.call_detector(detector, references.to(model.device), return_features=True)
    fake, real = fake.cpu().numpy().astype(np.float64), real.cpu().numpy().astype(np.float64)
    return frechet_inception_distance.frechet_distance(fake.mean(0), np.cov(fake, rowvar=False), real.mean(0), np.cov(real, rowvar=False))


def evaluate_fewshot(model: FewShotAutoencoder, seeds: torch.Tensor, references: torch.Tensor, distance: str = 'lpips',
                     num_samples: int = 100, num_steps: int = 10, seed: int = 0, fid: bool = False,
                     detector_dir=None) -> Dict[str, float]:
    """All measures for one model, seed set (uint8) and held-out reference set (uint8) of a novel class.

    distance: 'lpips' (VGG16 LPIPS, needs the detector once) or 'pixel' (mean squared pixel
    difference, no download). fid=True adds FID against the references (needs the Inception detector).
    """
    opts = metric_utils.MetricOptions(device=model.device, detector_dir=detector_dir)
    embedder, description = fewshot_metrics.resolve_embedder(opts, distance)
    codes = model.encode(seeds)
    generator = torch.Generator().manual_seed(int(seed))
    results = dict(distance=description, num_seeds=len(seeds), num_references=len(references))
    results['recon_l2_references'], _ = reconstruction_error(model, references)
    results['recon_l2_seeds'], _ = reconstruction_error(model, seeds)
    results['diversity'], results['diversity_std'] = diversity(model, codes, embedder, num_samples, generator=generator)
    results['smooth_mean'], results['smooth_std'], results['smooth_end'] = smoothness(model, codes, embedder, num_steps=num_steps)
    samples, _, _ = model.sample(codes, num_samples, generator=generator)
    results['nearest_reference'] = nearest_reference_distance(model, samples, references, embedder)
    results['nearest_seed'] = nearest_reference_distance(model, samples, seeds, embedder)
    if fid:
        results['fid_references'] = fid_against(model, samples, references, detector_dir=detector_dir)
    return results
