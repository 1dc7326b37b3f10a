"""The augmentation T(x; rho) of AugIntAE (Augmentation-Interpolative AutoEncoders, ICLR 2021 submission, sec. 3),
with explicit parameters so that T(x; alpha * rho1 + (1 - alpha) * rho2) is the interpolated transformation.

Parameters rho are a float tensor [N, NUM_PARAMS]; column order is PARAM_NAMES. Every entry is zero
for the identity:
    rotate        degrees, positive turns counter-clockwise on screen;
    translate_x   pixels, positive moves the content right;
    translate_y   pixels, positive moves the content down;
    scale         isotropic zoom factor minus 1 (0.1 enlarges the content by 10 %);
    shear         degrees: horizontal shear, rows move right in proportion to how far below the centre they are;
    brightness    factor minus 1, multiplying the image in [0, 1] terms (a darker or lighter copy);
    contrast      factor minus 1, scaling distances from mid-grey;
    saturation    factor minus 1, scaling distances from the grey axis;
    hue           fraction of a full turn about the grey axis.
The geometric entries build one affine matrix and the colour entries one colour matrix, each from
the (possibly interpolated) parameters, never by interpolating matrices. Warping and colour
application are the ADA pipeline's own (training.augment.warp_images / apply_color_matrix):
reflect padding, 2x-oversampled bilinear sampling with the sym6 low-pass.
"""

import dataclasses
import functools
import math
from typing import Optional

import numpy as np
import torch

from training import augment

PARAM_NAMES = ('rotate', 'translate_x', 'translate_y', 'scale', 'shear', 'brightness', 'contrast', 'saturation', 'hue')
NUM_PARAMS = len(PARAM_NAMES)
_INDEX = {name: i for i, name in enumerate(PARAM_NAMES)}
GEOMETRIC = ('rotate', 'translate_x', 'translate_y', 'scale', 'shear')
COLOUR = ('brightness', 'contrast', 'saturation', 'hue')


@dataclasses.dataclass(frozen=True)
class AugmentRanges:
    """Half-widths of the uniform ranges rho is drawn from (each parameter from [-value, value]).

    rotate and shear in degrees; translate as a fraction of the image side (so it scales with
    resolution); scale, brightness, contrast and saturation as factor minus 1; hue as a fraction of
    the hue circle. The defaults are the paper's ranges for natural images (sec. 4): rotation 10
    degrees, translation 8 px at 128 px (1/16 of the side), scale 0.8-1.2, shear 3 degrees, colour
    factors 0.75-1.25 and hue 5 % of the circle.
    """
    rotate: float = 10.0
    translate: float = 1 / 16
    scale: float = 0.2
    shear: float = 3.0
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.25
    hue: float = 0.05

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f'augmentation range {field.name} must be a finite number >= 0, got {value}')
        if self.scale >= 1:
            raise ValueError(f'augmentation range scale must be below 1 (factors 1 - scale .. 1 + scale), got {self.scale}')
        if max(self.brightness, self.contrast, self.saturation) >= 1:
            raise ValueError('augmentation ranges brightness, contrast and saturation must be below 1 (factors stay positive)')
        if self.shear >= 90 or self.translate > 0.5:
            raise ValueError('augmentation ranges: shear must stay below 90 degrees and translate at most 0.5 of the side')

    def half_widths(self, resolution: int) -> np.ndarray:
        """The ranges in PARAM_NAMES order and parameter units (translation in pixels at `resolution`)."""
        pixels = self.translate * resolution
        return np.array([self.rotate, pixels, pixels, self.scale, self.shear,
                         self.brightness, self.contrast, self.saturation, self.hue], dtype=np.float64)


def default_ranges(num_channels: int) -> AugmentRanges:
    """The paper's ranges: natural-image ones for RGB, the character ones (twice the rotation and shear,
    4 px of translation at 28 px, no colour) for single-channel images."""
    if num_channels == 1:
        return AugmentRanges(rotate=20.0, translate=4 / 28, scale=0.2, shear=6.0,
                             brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)
    return AugmentRanges()


def sample_params(batch_size: int, resolution: int, ranges: AugmentRanges, device='cpu',
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Draw rho [batch_size, NUM_PARAMS] uniformly and independently within `ranges`.

    Draws come from `generator` (on `device`) when given, else from torch's global stream.
    """
    widths = torch.as_tensor(ranges.half_widths(resolution), dtype=torch.float32, device=device)
    unit = torch.rand([batch_size, NUM_PARAMS], device=device, generator=generator)
    return (unit * 2 - 1) * widths


def param(rho: torch.Tensor, name: str) -> torch.Tensor:
    """Column `name` of rho [N, NUM_PARAMS] as [N]."""
    return rho[:, _INDEX[name]]


def make_params(batch_size: int = 1, device='cpu', **values) -> torch.Tensor:
    """rho [batch_size, NUM_PARAMS] with the named entries set (scalars or [batch_size]) and the rest 0."""
    unknown = sorted(set(values) - set(PARAM_NAMES))
    if unknown:
        raise ValueError(f'unknown augmentation parameters {unknown}; use {PARAM_NAMES}')
    rho = torch.zeros([batch_size, NUM_PARAMS], device=device)
    for name, value in values.items():
        rho[:, _INDEX[name]] = torch.as_tensor(value, dtype=torch.float32, device=device)
    return rho


def interpolate(rho1: torch.Tensor, rho2: torch.Tensor, alpha) -> torch.Tensor:
    """alpha * rho1 + (1 - alpha) * rho2, alpha a scalar or [N]; alpha = 1 gives rho1 exactly."""
    alpha = torch.as_tensor(alpha, dtype=rho1.dtype, device=rho1.device)
    if alpha.ndim == 1:
        alpha = alpha.unsqueeze(1)
    return alpha * rho1 + (1 - alpha) * rho2

#----------------------------------------------------------------------------


def geometric_matrix(rho: torch.Tensor) -> torch.Tensor:
    """Output-to-input pixel mapping [N, 3, 3] (centred pixel coordinates, y down) for the geometric entries.

    The forward map applied to the content is translate . rotate . shear . scale; the inverse is
    composed here from the ADA builders, since the resampler asks where each output pixel comes from.
    """
    like = param(rho, 'rotate')
    angle = param(rho, 'rotate') * (math.pi / 180)
    shear = torch.tan(param(rho, 'shear') * (math.pi / 180))
    zoom = 1 + param(rho, 'scale')
    unshear = augment.batched_matrix([[1, -shear, 0], [0, 1, 0], [0, 0, 1]], like)
    # With y pointing down, turn2d(+a) turns clockwise on screen, so counter-clockwise by a is turn2d(-a)
    # and its inverse is turn2d(+a).
    return (augment.stretch2d(1 / zoom, 1 / zoom, like) @ unshear @ augment.turn2d(angle, like)
            @ augment.shift2d(-param(rho, 'translate_x'), -param(rho, 'translate_y'), like))


_LUMA_AXIS = np.array([1, 1, 1, 0]) / np.sqrt(3)


def colour_matrix(rho: torch.Tensor) -> torch.Tensor:
    """Colour matrix [N, 4, 4] on homogeneous RGB in [-1, 1] for the colour entries:
    hue . saturation . contrast . brightness, applied right to left."""
    like = param(rho, 'brightness')
    bright = 1 + param(rho, 'brightness')
    # Multiplying by f in [0, 1] terms is x -> f * x + (f - 1) in [-1, 1] terms.
    brightness = augment.shift3d(bright - 1, like) @ augment.stretch3d(bright, like)
    contrast = augment.stretch3d(1 + param(rho, 'contrast'), like)
    chroma = torch.as_tensor(np.diag([1, 1, 1, 0]) - np.outer(_LUMA_AXIS, _LUMA_AXIS), dtype=torch.float32, device=rho.device)
    eye4 = torch.eye(4, device=rho.device)
    saturation = eye4 - chroma + chroma * (1 + param(rho, 'saturation')).reshape(-1, 1, 1)
    hue = augment.turn3d(_LUMA_AXIS, param(rho, 'hue') * (2 * math.pi), like)
    return hue @ saturation @ contrast @ brightness


@functools.lru_cache(maxsize=None)
def _resampling_filter_cpu():
    # The ADA pipe's own geometric filter and its delay, taken from a pipe with every transform off.
    pipe = augment.AugmentPipe()
    return pipe.Hz_geom.detach().clone(), pipe.geom_delay


def transform_images(images: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """T(images; rho): images [N, C, H, W] float (C = 1 or 3, [-1, 1] for the colour entries to mean
    what they say), rho [N, NUM_PARAMS]. Returns [N, C, H, W], differentiable w.r.t. the images.

    Rows whose geometric entries are all zero skip the resampler (so rho = 0 is exactly the
    identity); single-channel images ignore the colour entries. One batched call, any device.
    """
    if not (isinstance(images, torch.Tensor) and images.ndim == 4 and images.shape[1] in (1, 3)):
        raise ValueError(f'T expects images [N, 1 or 3, H, W], got {getattr(images, "shape", type(images))}')
    if rho.shape != (images.shape[0], NUM_PARAMS):
        raise ValueError(f'T expects rho [{images.shape[0]}, {NUM_PARAMS}] for {images.shape[0]} images, got {tuple(rho.shape)}')
    rho = rho.to(device=images.device, dtype=torch.float32)
    geometry = rho[:, [_INDEX[name] for name in GEOMETRIC]]
    moved = (geometry != 0).any(dim=1)
    if bool(moved.any()):
        resample_filter, delay = _resampling_filter_cpu()
        warped = augment.warp_images(images, geometric_matrix(rho), resample_filter.to(images.device), delay)
        images = torch.where(moved.reshape(-1, 1, 1, 1), warped, images)
    if images.shape[1] == 3:
        colour = rho[:, [_INDEX[name] for name in COLOUR]]
        if bool((colour != 0).any()):
            images = augment.apply_color_matrix(images, colour_matrix(rho))
    return images
