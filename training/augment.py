"""Differentiable discriminator augmentation: the ADA pipeline (Karras et al. 2020) and DiffAugment (Zhao et al. 2020).

This file is embedded in training snapshots and executed by NVIDIA's stylegan2-ada-pytorch when it
loads them, so it may import only numpy, scipy, torch and the upstream-public parts of torch_utils.
"""

import math

import numpy as np
import scipy.signal
import torch
import torch.nn.functional as F

from torch_utils import misc
from torch_utils import persistence
from torch_utils.ops import conv2d_gradfix
from torch_utils.ops import grid_sample_gradfix
from torch_utils.ops import upfirdn2d

#----------------------------------------------------------------------------
# Preset pipelines selected by train.py --augpipe. A preset switches on (multiplier 1) every
# transform of the groups it names, in this order; all other multipliers stay 0.

_AUGMENT_GROUPS = {
    'blit':   ('xflip', 'rotate90', 'xint'),
    'geom':   ('scale', 'rotate', 'aniso', 'xfrac'),
    'color':  ('brightness', 'contrast', 'lumaflip', 'hue', 'saturation'),
    'filter': ('imgfilter',),
    'noise':  ('noise',),
    'cutout': ('cutout',),
}

_PRESET_GROUPS = {
    'blit':   ('blit',),
    'geom':   ('geom',),
    'color':  ('color',),
    'filter': ('filter',),
    'noise':  ('noise',),
    'cutout': ('cutout',),
    'bg':     ('blit', 'geom'),
    'bgc':    ('blit', 'geom', 'color'),
    'bgcf':   ('blit', 'geom', 'color', 'filter'),
    'bgcfn':  ('blit', 'geom', 'color', 'filter', 'noise'),
    'bgcfnc': ('blit', 'geom', 'color', 'filter', 'noise', 'cutout'),
}

augpipe_specs = {
    preset: {transform: 1 for group in groups for transform in _AUGMENT_GROUPS[group]}
    for preset, groups in _PRESET_GROUPS.items()
}

#----------------------------------------------------------------------------
# Orthogonal wavelet decomposition low-pass filters (values as tabulated by PyWavelets).

_SYM2_LOWPASS = [-0.12940952255092145, 0.22414386804185735, 0.836516303737469, 0.48296291314469025]
_SYM6_LOWPASS = [
    0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
    0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
    -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148,
]

def _octave_filter_bank(lowpass, num_bands):
    """Zero-phase filters [num_bands, taps] splitting the spectrum into octaves, lowest band first.

    Built from the power-complementary pair |H(z)|^2/2 and |H(-z)|^2/2 of an orthogonal wavelet, so
    the rows sum to a unit impulse: weighting every band by 1 leaves an image unchanged.
    """
    lowpass = np.asarray(lowpass, dtype=np.float64)
    highpass = lowpass * np.where(np.arange(lowpass.size) % 2 == 0, 1.0, -1.0)
    low_power = np.convolve(lowpass, lowpass[::-1]) / 2
    high_power = np.convolve(highpass, highpass[::-1]) / 2
    bank = np.zeros([num_bands, 1])
    bank[0, 0] = 1
    for band in range(1, num_bands):
        # Stretch everything built so far down one octave, then carve the next octave out of the top.
        stretched = np.zeros([num_bands, bank.shape[1] * 2 - 1])
        stretched[:, ::2] = bank
        bank = scipy.signal.convolve(stretched, low_power[np.newaxis, :])
        start = (bank.shape[1] - high_power.size) // 2
        bank[band, start : start + high_power.size] += high_power
    return bank

#----------------------------------------------------------------------------
# Batched homogeneous matrices. Arguments are per-sample tensors [N] or Python scalars.

def _batched_matrix(rows, like):
    entries = [torch.as_tensor(value, dtype=torch.float32, device=like.device) for row in rows for value in row]
    entries = torch.broadcast_tensors(*entries, like)[:-1]
    size = len(rows)
    return torch.stack(entries, dim=-1).reshape(-1, size, size)

def _shift2d(tx, ty, like):
    return _batched_matrix([[1, 0, tx], [0, 1, ty], [0, 0, 1]], like)

def _stretch2d(sx, sy, like):
    return _batched_matrix([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], like)

def _turn2d(angle, like):
    cos, sin = torch.cos(angle), torch.sin(angle)
    return _batched_matrix([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]], like)

def _shift3d(offset, like):
    return _batched_matrix([[1, 0, 0, offset], [0, 1, 0, offset], [0, 0, 1, offset], [0, 0, 0, 1]], like)

def _stretch3d(factor, like):
    return _batched_matrix([[factor, 0, 0, 0], [0, factor, 0, 0], [0, 0, factor, 0], [0, 0, 0, 1]], like)

def _turn3d(axis, angle, like):
    """Rotation by `angle` about the unit `axis` (Rodrigues), as 4x4 matrices [N, 4, 4]."""
    ax, ay, az = [float(value) for value in axis[:3]]
    cos, sin = torch.cos(angle), torch.sin(angle)
    one_minus = 1 - cos
    return _batched_matrix([
        [ax * ax * one_minus + cos,      ax * ay * one_minus - az * sin, ax * az * one_minus + ay * sin, 0],
        [ay * ax * one_minus + az * sin, ay * ay * one_minus + cos,      ay * az * one_minus - ax * sin, 0],
        [az * ax * one_minus - ay * sin, az * ay * one_minus + ax * sin, az * az * one_minus + cos,      0],
        [0, 0, 0, 1],
    ], like)

# Public names, for code that builds these transforms from explicit parameters instead of random draws.
batched_matrix = _batched_matrix
shift2d, stretch2d, turn2d = _shift2d, _stretch2d, _turn2d
shift3d, stretch3d, turn3d = _shift3d, _stretch3d, _turn3d

#----------------------------------------------------------------------------

class _RandomSource:
    """Per-sample random draws; with `percentile` set, every draw is that quantile and every gate opens.

    The percentile mode exists to visualise what a transform does at a given strength.
    """

    def __init__(self, batch_size, device, percentile=None):
        self.batch_size = batch_size
        self.device = device
        self.percentile = None if percentile is None else float(percentile)

    def uniform(self, *shape):
        size = [self.batch_size, *shape]
        if self.percentile is not None:
            return torch.full(size, self.percentile, device=self.device)
        return torch.rand(size, device=self.device)

    def normal(self, *shape):
        size = [self.batch_size, *shape]
        if self.percentile is not None:
            quantile = math.sqrt(2) * torch.erfinv(torch.tensor(self.percentile * 2 - 1, dtype=torch.float64)).item()
            return torch.full(size, quantile, device=self.device)
        return torch.randn(size, device=self.device)

    def half_normal(self, *shape):
        size = [self.batch_size, *shape]
        if self.percentile is not None:
            quantile = math.sqrt(2) * torch.erfinv(torch.tensor(self.percentile, dtype=torch.float64)).item()
            return torch.full(size, quantile, device=self.device)
        return torch.randn(size, device=self.device).abs()

    def gate(self, probability, value, neutral):
        """Keep `value` per sample with `probability` (broadcast over trailing dims), else `neutral`."""
        if self.percentile is not None:
            return value
        fire = torch.rand([self.batch_size], device=self.device) < probability
        fire = fire.reshape([self.batch_size] + [1] * (value.ndim - 1))
        return torch.where(fire, value, torch.as_tensor(neutral, dtype=value.dtype, device=value.device))

#----------------------------------------------------------------------------

def _reflect_pad(images, left, right, top, bottom):
    """Reflect padding that also works when a side needs more pixels than the image has."""
    while left or right or top or bottom:
        width, height = images.shape[3], images.shape[2]
        step = [min(left, width - 1), min(right, width - 1), min(top, height - 1), min(bottom, height - 1)]
        images = F.pad(images, step, mode='reflect')
        left, right, top, bottom = left - step[0], right - step[1], top - step[2], bottom - step[3]
    return images

#----------------------------------------------------------------------------

def apply_color_matrix(images, color):
    """Apply colour matrices [N, 4, 4] (acting on homogeneous RGB) to images [N, C, H, W], C = 1 or 3."""
    batch, channels, height, width = images.shape
    color = color.to(images.dtype)
    flat = images.reshape(batch, channels, height * width)
    if channels == 3:
        flat = color[:, :3, :3] @ flat + color[:, :3, 3:]
    else:
        # A single grey channel follows the average of the RGB rows applied to grey = (v, v, v).
        mean_row = color[:, :3, :].mean(dim=1, keepdim=True)
        flat = flat * mean_row[:, :, :3].sum(dim=2, keepdim=True) + mean_row[:, :, 3:]
    return flat.reshape(batch, channels, height, width)

def warp_images(images, out_to_in, resample_filter, filter_delay):
    """Warp images [N, C, H, W] by output-to-input pixel mappings [N, 3, 3] (centred pixel units).

    Reflect-pads as far as the warp reaches, then samples bilinearly at twice the resolution with
    `resample_filter` (from upfirdn2d.setup_filter) whose centre of mass lies `filter_delay` fine pixels
    off its midpoint. AugmentPipe passes its Hz_geom and geom_delay.
    """
    batch, channels, height, width = images.shape
    filter_reach = resample_filter.shape[0] // 4
    half_w, half_h = (width - 1) / 2, (height - 1) / 2

    # Reflect-pad just enough that the warped output plus the filter support stays inside real data.
    corners = misc.constant(np.array([[-half_w, -half_h, 1], [half_w, -half_h, 1], [half_w, half_h, 1], [-half_w, half_h, 1]]).T,
        dtype=torch.float32, device=images.device)
    landed = out_to_in @ corners                                    # [N, 3, 4]
    extents = torch.stack([-landed[:, 0].min(), -landed[:, 1].min(), landed[:, 0].max(), landed[:, 1].max()])
    extents = extents + misc.constant(np.array([2 * filter_reach - half_w, 2 * filter_reach - half_h] * 2), dtype=torch.float32, device=images.device)
    left, top, right, bottom = [int(math.ceil(min(max(value, 0), limit)))
        for value, limit in zip(extents.tolist(), [width - 1, height - 1] * 2)]
    images = _reflect_pad(images, left, right, top, bottom)
    out_to_in = _shift2d((left - right) / 2, (top - bottom) / 2, out_to_in[:, 0, 0]) @ out_to_in

    # Work at twice the resolution; the same delay compensation applies to both sides of the warp.
    images = upfirdn2d.upsample2d(x=images, f=resample_filter, up=2)
    like = out_to_in[:, 0, 0]
    to_fine = _shift2d(filter_delay, filter_delay, like) @ _stretch2d(2, 2, like)
    from_fine = _stretch2d(0.5, 0.5, like) @ _shift2d(-filter_delay, -filter_delay, like)
    out_to_in = to_fine @ out_to_in @ from_fine

    # affine_grid works in [-1, 1] coordinates of the source (input) and target (output) grids.
    target_shape = [batch, channels, (height + filter_reach * 2) * 2, (width + filter_reach * 2) * 2]
    pixels_to_source = _stretch2d(2 / images.shape[3], 2 / images.shape[2], like)
    target_to_pixels = _stretch2d(target_shape[3] / 2, target_shape[2] / 2, like)
    theta = (pixels_to_source @ out_to_in @ target_to_pixels)[:, :2, :]
    grid = F.affine_grid(theta=theta.to(images.dtype), size=target_shape, align_corners=False)
    images = grid_sample_gradfix.grid_sample(images, grid)

    # Back to the original resolution, cropping the filter margin in the same pass.
    return upfirdn2d.downsample2d(x=images, f=resample_filter, down=2, padding=-filter_reach * 2, flip_filter=True)

#----------------------------------------------------------------------------

@persistence.persistent_class
class AugmentPipe(torch.nn.Module):
    """ADA augmentation: each transform fires per sample with probability multiplier * p.

    Call with float images [N, C, H, W] (C = 1 or 3, any range; training uses [-1, 1]); returns the
    same shape and dtype, differentiable w.r.t. the images. The buffer `p` is the strength that the
    ADA heuristic adjusts during training.

    Multipliers (0 disables a transform; 1 applies it with probability p):
      pixel blitting: xflip (horizontal mirror), rotate90 (quarter turns), xint (whole-pixel shift);
      geometry: scale (isotropic), rotate (any angle), aniso (stretch along a random axis),
        xfrac (sub-pixel shift);
      colour: brightness (add), contrast (multiply), lumaflip (invert luma), hue (rotate about the
        grey axis), saturation (scale away from the grey axis);
      imgfilter (random gain on each of four octave bands); noise (additive Gaussian); cutout
        (blank a square).
    Magnitudes: xint_max and xfrac_std are fractions of the image side; scale_std, aniso_std,
    contrast_std, saturation_std and imgfilter_std are standard deviations of log2 factors;
    rotate_max and hue_max are in units of pi radians; brightness_std is in image units;
    noise_std scales a half-normal noise level; cutout_size is the square's side as a fraction of
    the image; imgfilter_bands marks (non-zero) the bands that imgfilter may change.
    """

    def __init__(self,
        xflip=0, rotate90=0, xint=0, xint_max=0.125,
        scale=0, rotate=0, aniso=0, xfrac=0, scale_std=0.2, rotate_max=1, aniso_std=0.2, xfrac_std=0.125,
        brightness=0, contrast=0, lumaflip=0, hue=0, saturation=0, brightness_std=0.2, contrast_std=0.5, hue_max=1, saturation_std=1,
        imgfilter=0, imgfilter_bands=[1,1,1,1], imgfilter_std=1,
        noise=0, cutout=0, noise_std=0.1, cutout_size=0.5,
    ):
        super().__init__()
        self.register_buffer('p', torch.ones([]))   # Overall strength, set by the training loop.

        # Every multiplier and magnitude is stored as a float attribute of the same name; the
        # class docstring says what each one means.
        settings = dict(
            xflip=xflip, rotate90=rotate90, xint=xint, xint_max=xint_max,
            scale=scale, rotate=rotate, aniso=aniso, xfrac=xfrac,
            scale_std=scale_std, rotate_max=rotate_max, aniso_std=aniso_std, xfrac_std=xfrac_std,
            brightness=brightness, contrast=contrast, lumaflip=lumaflip, hue=hue, saturation=saturation,
            brightness_std=brightness_std, contrast_std=contrast_std, hue_max=hue_max, saturation_std=saturation_std,
            imgfilter=imgfilter, imgfilter_std=imgfilter_std,
            noise=noise, cutout=cutout, noise_std=noise_std, cutout_size=cutout_size,
        )
        for attribute, value in settings.items():
            setattr(self, attribute, float(value))
        self.imgfilter_bands = list(map(float, imgfilter_bands))

        # Resampling filter for geometric transforms; 12 taps, so setup_filter keeps it separable.
        self.register_buffer('Hz_geom', upfirdn2d.setup_filter(_SYM6_LOWPASS))
        # Octave filter bank for the image-space filter.
        self.register_buffer('Hz_fbank', torch.as_tensor(_octave_filter_bank(_SYM2_LOWPASS, 4), dtype=torch.float32))

        # The sym6 filter is not symmetric: its centre of mass (its group delay at DC) sits 0.4 of a
        # 2x-upsampled pixel before the tap midpoint. The resampler compensates so that flips,
        # rotations and scalings stay centred; translations are unaffected either way. (Upstream
        # rounds this to 0.5; the exact value mirrors smooth images about 20x more accurately.)
        taps = np.asarray(_SYM6_LOWPASS)
        self.geom_delay = float((np.arange(taps.size) * taps).sum() / taps.sum() - (taps.size - 1) / 2)

    #------------------------------------------------------------------------

    def _geometric_transform(self, draws, like):
        """Output-to-input pixel mapping [N, 3, 3] in centred pixel units, or None if no geometry is enabled."""
        batch = draws.batch_size
        width, height = like.shape[3], like.shape[2]
        identity = _shift2d(0, 0, torch.zeros([batch], device=like.device))
        out_to_in = identity
        enabled = False

        def follow(inverse_step):
            nonlocal out_to_in, enabled
            out_to_in = out_to_in @ inverse_step
            enabled = True

        if self.xflip > 0:
            flip = torch.floor(draws.uniform() * 2)
            flip = draws.gate(self.xflip * self.p, flip, 0)
            follow(_stretch2d(1 - 2 * flip, 1, flip))
        if self.rotate90 > 0:
            quarter_turns = torch.floor(draws.uniform() * 4)
            quarter_turns = draws.gate(self.rotate90 * self.p, quarter_turns, 0)
            follow(_turn2d(quarter_turns * (np.pi / 2), quarter_turns))
        if self.xint > 0:
            offset = (draws.uniform(2) * 2 - 1) * self.xint_max
            offset = draws.gate(self.xint * self.p, offset, 0)
            follow(_shift2d(-torch.round(offset[:, 0] * width), -torch.round(offset[:, 1] * height), offset[:, 0]))
        if self.scale > 0:
            factor = torch.exp2(draws.normal() * self.scale_std)
            factor = draws.gate(self.scale * self.p, factor, 1)
            follow(_stretch2d(1 / factor, 1 / factor, factor))

        # Two independent rotations; each fires with 1 - sqrt(1 - P) so that at least one fires with P.
        rotation_probability = 1 - torch.sqrt((1 - self.rotate * self.p).clamp(min=0))
        if self.rotate > 0:
            angle = (draws.uniform() * 2 - 1) * (np.pi * self.rotate_max)
            angle = draws.gate(rotation_probability, angle, 0)
            follow(_turn2d(angle, angle))
        if self.aniso > 0:
            factor = torch.exp2(draws.normal() * self.aniso_std)
            factor = draws.gate(self.aniso * self.p, factor, 1)
            follow(_stretch2d(1 / factor, factor, factor))
        if self.rotate > 0:
            angle = (draws.uniform() * 2 - 1) * (np.pi * self.rotate_max)
            angle = draws.gate(rotation_probability, angle, 0)
            follow(_turn2d(angle, angle))
        if self.xfrac > 0:
            offset = draws.normal(2) * self.xfrac_std
            offset = draws.gate(self.xfrac * self.p, offset, 0)
            follow(_shift2d(-offset[:, 0] * width, -offset[:, 1] * height, offset[:, 0]))
        return out_to_in if enabled else None

    def _resample(self, images, out_to_in):
        return warp_images(images, out_to_in, self.Hz_geom, self.geom_delay)

    def _color_transform(self, draws, like, num_channels):
        """Colour matrix [N, 4, 4] acting on homogeneous RGB, or None if no colour transform is enabled."""
        color = _stretch3d(1, torch.zeros([draws.batch_size], device=like.device))
        enabled = False
        luma_axis = np.array([1, 1, 1, 0]) / np.sqrt(3)
        luma_outer = misc.constant(np.outer(luma_axis, luma_axis), dtype=torch.float32, device=like.device)
        eye4 = misc.constant(np.eye(4), dtype=torch.float32, device=like.device)

        if self.brightness > 0:
            offset = draws.normal() * self.brightness_std
            offset = draws.gate(self.brightness * self.p, offset, 0)
            color, enabled = _shift3d(offset, offset) @ color, True
        if self.contrast > 0:
            factor = torch.exp2(draws.normal() * self.contrast_std)
            factor = draws.gate(self.contrast * self.p, factor, 1)
            color, enabled = _stretch3d(factor, factor) @ color, True
        if self.lumaflip > 0:
            flip = torch.floor(draws.uniform() * 2)
            flip = draws.gate(self.lumaflip * self.p, flip, 0)
            # Householder reflection across the plane orthogonal to the luma axis.
            color, enabled = (eye4 - 2 * luma_outer * flip.reshape(-1, 1, 1)) @ color, True
        if self.hue > 0 and num_channels > 1:
            angle = (draws.uniform() * 2 - 1) * (np.pi * self.hue_max)
            angle = draws.gate(self.hue * self.p, angle, 0)
            color, enabled = _turn3d(luma_axis, angle, angle) @ color, True
        if self.saturation > 0 and num_channels > 1:
            factor = torch.exp2(draws.normal() * self.saturation_std)
            factor = draws.gate(self.saturation * self.p, factor, 1)
            # Scale only the RGB components orthogonal to luma; the homogeneous row and column stay put.
            chroma = misc.constant(np.diag([1, 1, 1, 0]) - np.outer(luma_axis, luma_axis), dtype=torch.float32, device=like.device)
            saturate = eye4 - chroma + chroma * factor.reshape(-1, 1, 1)
            color, enabled = saturate @ color, True
        return color if enabled else None

    def _band_gains(self, draws, like):
        """Per-sample gains [N, num_bands] for the octave bands, normalised to keep the expected power."""
        num_bands = self.Hz_fbank.shape[0]
        assert len(self.imgfilter_bands) == num_bands, f'imgfilter_bands needs {num_bands} entries, got {len(self.imgfilter_bands)}'
        # Natural images carry most power in the lowest octave; these are the assumed power shares.
        power_share = misc.constant(np.array([10, 1, 1, 1]) / 13, dtype=torch.float32, device=like.device)
        touched = misc.constant(np.array(self.imgfilter_bands) > 0, dtype=torch.bool, device=like.device)
        gains = torch.exp2(draws.normal(num_bands) * self.imgfilter_std)
        if draws.percentile is None:
            fire = torch.rand([draws.batch_size, num_bands], device=like.device) < self.imgfilter * self.p
            gains = torch.where(fire, gains, torch.ones_like(gains))
        gains = torch.where(touched, gains, torch.ones_like(gains))
        # Amplifying one band by g changes the expected power by 1 + share * (g^2 - 1); undo that per band.
        power_change = 1 + power_share * (gains.square() - 1)
        return gains / power_change.sqrt().prod(dim=1, keepdim=True)

    def _band_filter(self, images, gains):
        batch, channels, height, width = images.shape
        kernels = (gains @ self.Hz_fbank).to(images.dtype)                # [N, taps]
        kernels = kernels.repeat_interleave(channels, dim=0).unsqueeze(1) # [N*C, 1, taps]
        reach = self.Hz_fbank.shape[1] // 2
        flat = _reflect_pad(images.reshape(1, batch * channels, height, width), reach, reach, reach, reach)
        flat = conv2d_gradfix.conv2d(input=flat, weight=kernels.unsqueeze(2), groups=batch * channels)
        flat = conv2d_gradfix.conv2d(input=flat, weight=kernels.unsqueeze(3), groups=batch * channels)
        return flat.reshape(batch, channels, height, width)

    #------------------------------------------------------------------------

    def forward(self, images, debug_percentile=None):
        if not (isinstance(images, torch.Tensor) and images.ndim == 4):
            raise ValueError(f'AugmentPipe expects images as a 4-D tensor [N, C, H, W], got {getattr(images, "shape", type(images))}')
        batch, channels, height, width = images.shape
        if channels not in (1, 3):
            raise ValueError(f'AugmentPipe supports 1 or 3 channels, got {channels}; convert the dataset to grayscale or RGB')
        draws = _RandomSource(batch, images.device, debug_percentile)

        out_to_in = self._geometric_transform(draws, images)
        if out_to_in is not None:
            # Samples whose mapping stayed the identity skip the resampler's slight low-pass, so
            # p = 0 is an exact no-op and un-augmented images pass through untouched.
            untouched = (out_to_in == misc.constant(np.eye(3), dtype=torch.float32, device=images.device)).all(dim=2).all(dim=1)
            if not bool(untouched.all()):
                warped = self._resample(images, out_to_in)
                images = torch.where(untouched.reshape(-1, 1, 1, 1), images, warped)

        color = self._color_transform(draws, images, channels)
        if color is not None:
            images = apply_color_matrix(images, color)

        if self.imgfilter > 0:
            images = self._band_filter(images, self._band_gains(draws, images))

        if self.noise > 0:
            sigma = draws.half_normal(1, 1, 1) * self.noise_std
            sigma = draws.gate(self.noise * self.p, sigma, 0)
            images = images + torch.randn_like(images) * sigma.to(images.dtype)

        if self.cutout > 0:
            side = torch.full([batch, 2, 1, 1], self.cutout_size, device=images.device)
            side = draws.gate(self.cutout * self.p, side, 0)
            centre = draws.uniform(2, 1, 1)
            cols = ((torch.arange(width, device=images.device) + 0.5) / width).reshape(1, 1, 1, -1)
            rows = ((torch.arange(height, device=images.device) + 0.5) / height).reshape(1, 1, -1, 1)
            outside = ((cols - centre[:, :1]).abs() >= side[:, :1] / 2) | ((rows - centre[:, 1:]).abs() >= side[:, 1:] / 2)
            images = images * outside.to(images.dtype)

        misc.assert_shape(images, [batch, channels, height, width])
        return images

#----------------------------------------------------------------------------

@persistence.persistent_class
class DiffAugment(torch.nn.Module):
    """DiffAugment (Zhao et al. 2020): colour jitter, translation and cutout, applied to real and fake alike.

    Same call interface as AugmentPipe: `pipe(images) -> images` for float [N, C, H, W] in [-1, 1].
    Each sample is augmented with probability `p` (a buffer, 1 by default: the original method).
    """

    def __init__(self,
        policy='color,translation,cutout', # Comma-separated subset of color, translation, cutout.
        translation_ratio=0.125,           # Largest shift, as a fraction of image size.
        cutout_ratio=0.5,                  # Side of the cutout square, as a fraction of image size.
    ):
        super().__init__()
        self.policy = [name.strip() for name in str(policy).split(',') if name.strip()]
        unknown = [name for name in self.policy if name not in ('color', 'translation', 'cutout')]
        if unknown:
            raise ValueError(f'DiffAugment policy has unknown entries {unknown}; use a comma-separated subset of color,translation,cutout')
        self.translation_ratio = float(translation_ratio)
        self.cutout_ratio = float(cutout_ratio)
        self.register_buffer('p', torch.ones([]))

    def _color(self, images, draws):
        dtype = images.dtype
        images = images + (draws.uniform(1, 1, 1) - 0.5).to(dtype)
        channel_mean = images.mean(dim=1, keepdim=True)
        images = (images - channel_mean) * (draws.uniform(1, 1, 1) * 2).to(dtype) + channel_mean
        image_mean = images.mean(dim=[1, 2, 3], keepdim=True)
        return (images - image_mean) * (draws.uniform(1, 1, 1) + 0.5).to(dtype) + image_mean

    def _translation(self, images, draws):
        batch, channels, height, width = images.shape
        reach_y, reach_x = int(height * self.translation_ratio + 0.5), int(width * self.translation_ratio + 0.5)
        shift_y = torch.floor(draws.uniform() * (2 * reach_y + 1)).long() - reach_y
        shift_x = torch.floor(draws.uniform() * (2 * reach_x + 1)).long() - reach_x
        # Gather from a zero-padded copy: output (y, x) reads padded (y + reach - shift, x + reach - shift).
        padded = F.pad(images, [reach_x, reach_x, reach_y, reach_y])
        rows = torch.arange(height, device=images.device).unsqueeze(0) + (reach_y - shift_y).unsqueeze(1) # [N, H]
        cols = torch.arange(width, device=images.device).unsqueeze(0) + (reach_x - shift_x).unsqueeze(1)  # [N, W]
        picked = padded.gather(2, rows.reshape(batch, 1, height, 1).expand(batch, channels, height, padded.shape[3]))
        return picked.gather(3, cols.reshape(batch, 1, 1, width).expand(batch, channels, height, width))

    def _cutout(self, images, draws):
        batch, channels, height, width = images.shape
        side_y, side_x = int(height * self.cutout_ratio + 0.5), int(width * self.cutout_ratio + 0.5)
        # The square's top-left corner may hang over the edge by up to half its side, like the original.
        top = torch.floor(draws.uniform() * (height + 1 - side_y % 2)).long() - side_y // 2
        left = torch.floor(draws.uniform() * (width + 1 - side_x % 2)).long() - side_x // 2
        rows = torch.arange(height, device=images.device).reshape(1, -1, 1) - top.reshape(-1, 1, 1)
        cols = torch.arange(width, device=images.device).reshape(1, 1, -1) - left.reshape(-1, 1, 1)
        inside = (rows >= 0) & (rows < side_y) & (cols >= 0) & (cols < side_x)
        return images * (~inside).unsqueeze(1).to(images.dtype)

    def forward(self, images, debug_percentile=None):
        if not (isinstance(images, torch.Tensor) and images.ndim == 4):
            raise ValueError(f'DiffAugment expects images as a 4-D tensor [N, C, H, W], got {getattr(images, "shape", type(images))}')
        draws = _RandomSource(images.shape[0], images.device, debug_percentile)
        augmented = images
        for name in self.policy:
            augmented = getattr(self, '_' + name)(augmented, draws)
        if debug_percentile is None:
            keep = (torch.rand([images.shape[0], 1, 1, 1], device=images.device) < self.p).to(images.dtype)
            augmented = augmented * keep + images * (1 - keep)
        misc.assert_shape(augmented, list(images.shape))
        return augmented

#----------------------------------------------------------------------------
