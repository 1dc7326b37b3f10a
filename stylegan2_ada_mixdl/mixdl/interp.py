"""Interpolation strips in W (fakes-interp-<kimg>.png) for watching MixDL smooth the latent space."""
import os
from typing import Sequence, Tuple

import numpy as np
import torch

from training import image_grid

DEFAULT_SEED_PAIRS = ((0, 1), (2, 3), (4, 5), (6, 7))
DEFAULT_STEPS = 8


def latents_for_seeds(seeds: Sequence[int], z_dim: int) -> torch.Tensor:
    """float32 [len(seeds), z_dim] on the CPU: generate.py's z for each seed (one RandomState per seed),
    so strips and panels show the same images as `generate.py --seeds` across runs and tools."""
    return torch.from_numpy(np.stack([np.random.RandomState(int(seed)).randn(z_dim) for seed in seeds])).float()


@torch.no_grad()
def interpolation_images(G, seed_pairs: Sequence[Tuple[int, int]] = DEFAULT_SEED_PAIRS, steps: int = DEFAULT_STEPS,
                         c: torch.Tensor = None, batch_size: int = 16, noise_mode: str = 'const') -> torch.Tensor:
    """Images along straight lines in W between the two seeds of each pair.

    G: a Generator (z_dim, c_dim, mapping, synthesis). c: [c_dim] label used for every image
    (zeros when omitted). Returns float32 [len(seed_pairs), steps, C, H, W] in G's output range [-1, 1].
    """
    if steps < 2:
        raise ValueError(f'An interpolation strip needs at least 2 steps, got {steps}')
    if not seed_pairs:
        raise ValueError('Give at least one seed pair, e.g. ((0, 1),)')
    device = next(iter(G.parameters())).device
    seeds = np.asarray(seed_pairs, dtype=np.int64).reshape(-1)
    z = latents_for_seeds(seeds, G.z_dim).to(device)
    labels = torch.zeros(len(seeds), G.c_dim, device=device)
    if c is not None:
        labels[:] = c.to(device)
    ends = G.mapping(z, labels, truncation_psi=1, skip_w_avg_update=True)  # [2P, num_ws, w_dim]
    start, stop = ends[0::2], ends[1::2]
    t = torch.linspace(0, 1, steps, device=device).view(1, steps, 1, 1)
    path = torch.lerp(start.unsqueeze(1), stop.unsqueeze(1), t).flatten(0, 1)  # [P * steps, num_ws, w_dim]
    images = torch.cat([G.synthesis(chunk, noise_mode=noise_mode).float() for chunk in path.split(batch_size)])
    return images.reshape(len(seed_pairs), steps, *images.shape[1:])


def images_to_grid(images: torch.Tensor) -> np.ndarray:
    """[rows, cols, C, H, W] in [-1, 1] -> uint8 [rows * H, cols * W, C] (C = 1 or 3)."""
    rows, cols = images.shape[:2]
    return image_grid.tile_images(image_grid.to_uint8(images.flatten(0, 1), (-1, 1)), (cols, rows))


def save_grid(grid: np.ndarray, path: str) -> None:
    """Write an images_to_grid result as a PNG (grayscale when it has one channel), atomically."""
    image_grid.write_png(grid, path)


def save_interpolation_strip(G, path: str, **kwargs) -> np.ndarray:
    """Render interpolation_images(G, **kwargs) as one PNG (one row per seed pair). Returns the grid."""
    grid = images_to_grid(interpolation_images(G, **kwargs))
    save_grid(grid, path)
    return grid


def interp_filename(run_dir: str, kimg_label: str) -> str:
    """fakes-interp-<kimg_label>.png, named like the loop's fakes<kimg_label>.png snapshot beside it."""
    return os.path.join(run_dir, f'fakes-interp-{kimg_label}.png')
