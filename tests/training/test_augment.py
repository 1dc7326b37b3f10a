"""Tests for training/augment.py: ADA presets, identities, exact effects, gradients, determinism, pickling and DiffAugment."""

import ast
import inspect
import math
import pickle

import numpy as np
import pytest
import torch

from torch_utils import persistence
from torch_utils.ops import conv2d_gradfix, grid_sample_gradfix
from training import augment
from training.augment import AugmentPipe, DiffAugment, augpipe_specs

GROUPS = ['blit', 'geom', 'color', 'filter', 'noise', 'cutout']


def _smooth_images(batch=4, channels=3, size=16, dtype=torch.float32, seed=0):
    """Low-frequency images in roughly [-1, 1], so resampling artefacts stay small."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand([batch, channels, size // 4, size // 4], generator=generator, dtype=torch.float64) * 2 - 1
    return torch.nn.functional.interpolate(coarse, size=[size, size], mode='bilinear', align_corners=False).to(dtype)


def _sine_images(size=32):
    """A band-limited pattern well below Nyquist, which the 2x resampler reproduces almost exactly."""
    rows, cols = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing='ij')
    pattern = torch.stack([torch.sin(cols / 5) * torch.cos(rows / 7), torch.cos(cols / 4 + rows / 9), 0.1 * cols / size])
    return pattern.unsqueeze(0)


@pytest.fixture
def gradfix_enabled():
    saved = conv2d_gradfix.enabled, grid_sample_gradfix.enabled
    conv2d_gradfix.enabled = grid_sample_gradfix.enabled = True
    yield
    conv2d_gradfix.enabled, grid_sample_gradfix.enabled = saved


def test_preset_table_matches_spec():
    blit = {'xflip', 'rotate90', 'xint'}
    geom = {'scale', 'rotate', 'aniso', 'xfrac'}
    color = {'brightness', 'contrast', 'lumaflip', 'hue', 'saturation'}
    expected = {
        'blit': blit, 'geom': geom, 'color': color, 'filter': {'imgfilter'}, 'noise': {'noise'}, 'cutout': {'cutout'},
        'bg': blit | geom, 'bgc': blit | geom | color, 'bgcf': blit | geom | color | {'imgfilter'},
        'bgcfn': blit | geom | color | {'imgfilter', 'noise'}, 'bgcfnc': blit | geom | color | {'imgfilter', 'noise', 'cutout'},
    }
    assert list(augpipe_specs) == list(expected)
    for name, keys in expected.items():
        assert augpipe_specs[name] == {key: 1 for key in keys}


def test_constructor_defaults_and_buffers():
    pipe = AugmentPipe()
    assert (pipe.xint_max, pipe.scale_std, pipe.rotate_max, pipe.aniso_std, pipe.xfrac_std) == (0.125, 0.2, 1, 0.2, 0.125)
    assert (pipe.brightness_std, pipe.contrast_std, pipe.hue_max, pipe.saturation_std) == (0.2, 0.5, 1, 1)
    assert (pipe.imgfilter_bands, pipe.imgfilter_std, pipe.noise_std, pipe.cutout_size) == ([1, 1, 1, 1], 1, 0.1, 0.5)
    assert pipe.p.shape == () and pipe.p.item() == 1
    assert pipe.Hz_geom.shape == (12,) and abs(pipe.Hz_geom.sum().item() - 1) < 1e-6
    assert pipe.Hz_fbank.shape == (4, 43)
    # The bands partition the spectrum: they sum to a unit impulse.
    impulse = torch.zeros(43, dtype=torch.float64)
    impulse[21] = 1
    torch.testing.assert_close(pipe.Hz_fbank.double().sum(dim=0), impulse, atol=1e-6, rtol=0)
    # Each band is zero-phase (symmetric), lowest octave first: band 0 passes DC, the others do not.
    torch.testing.assert_close(pipe.Hz_fbank, pipe.Hz_fbank.flip(1))
    np.testing.assert_allclose(pipe.Hz_fbank.sum(dim=1).numpy(), [1, 0, 0, 0], atol=1e-6)
    assert list(dict(pipe.named_buffers())) == ['p', 'Hz_geom', 'Hz_fbank']


@pytest.mark.parametrize('channels', [1, 3])
@pytest.mark.parametrize('preset', list(augpipe_specs))
def test_p_zero_is_identity(preset, channels):
    pipe = AugmentPipe(**augpipe_specs[preset])
    pipe.p.fill_(0)
    images = _smooth_images(channels=channels)
    torch.testing.assert_close(pipe(images), images, atol=1e-6, rtol=0)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('group', GROUPS)
def test_each_group_at_p_one_changes_images(group, dtype):
    torch.manual_seed(1)
    pipe = AugmentPipe(**augpipe_specs[group])
    images = _smooth_images(batch=8, dtype=dtype)
    out = pipe(images)
    assert out.shape == images.shape and out.dtype == dtype
    assert torch.isfinite(out).all()
    changed = (out - images).flatten(1).abs().amax(dim=1)
    assert changed.max() > 0.05, f'{group} left every image unchanged'


@pytest.mark.parametrize('group', GROUPS)
def test_grayscale_runs_every_group(group):
    torch.manual_seed(2)
    images = _smooth_images(batch=4, channels=1)
    out = AugmentPipe(**augpipe_specs[group])(images)
    assert out.shape == images.shape and (out - images).abs().max() > 0.01


def test_same_seed_same_result_other_seed_differs():
    pipe = AugmentPipe(**augpipe_specs['bgcfnc'])
    images = _smooth_images()
    torch.manual_seed(5)
    first = pipe(images)
    torch.manual_seed(5)
    again = pipe(images)
    torch.manual_seed(6)
    other = pipe(images)
    torch.testing.assert_close(first, again, atol=0, rtol=0)
    assert (first - other).abs().max() > 0.05


def test_integer_translation_is_exact_inside():
    images = _sine_images()
    # Percentile 0.99 gives an offset of 0.98 * xint_max * 32 = 3.1 -> 3 pixels right and down.
    out = AugmentPipe(xint=1, xint_max=0.1)(images, debug_percentile=0.99)
    # Rows and columns near the reflect-padded border carry a small filter ringing; compare the inside.
    torch.testing.assert_close(out[:, :, 9:-4, 9:-4], images[:, :, 6:-7, 6:-7], atol=1e-4, rtol=0)


def test_xflip_and_rotate90_are_centred():
    images = _sine_images()
    flipped = AugmentPipe(xflip=1)(images, debug_percentile=0.75)
    torch.testing.assert_close(flipped[:, :, 4:-4, 4:-4], images.flip(3)[:, :, 4:-4, 4:-4], atol=2e-3, rtol=0)
    turned = AugmentPipe(rotate90=1)(images, debug_percentile=0.3) # floor(0.3 * 4) = one quarter turn.
    torch.testing.assert_close(turned[:, :, 4:-4, 4:-4], images.rot90(1, dims=(2, 3))[:, :, 4:-4, 4:-4], atol=2e-3, rtol=0)


def test_brightness_adds_quantile_offset():
    images = _smooth_images()
    percentile = 0.5 * (1 + math.erf(1 / math.sqrt(2))) # +1 sigma
    out = AugmentPipe(brightness=1)(images, debug_percentile=percentile)
    torch.testing.assert_close(out, images + 0.2, atol=1e-5, rtol=0)


def test_lumaflip_negates_gray_and_keeps_chroma():
    gray = torch.full([1, 3, 4, 4], 0.25)
    out = AugmentPipe(lumaflip=1)(gray, debug_percentile=0.75) # floor(0.75 * 2) = 1: flip.
    torch.testing.assert_close(out, -gray, atol=1e-6, rtol=0)
    chroma = torch.tensor([1.0, -1.0, 0.0]).reshape(1, 3, 1, 1).expand(1, 3, 4, 4)
    torch.testing.assert_close(AugmentPipe(lumaflip=1)(chroma, debug_percentile=0.75), chroma, atol=1e-6, rtol=0)


def test_saturation_zero_extreme_keeps_luma():
    colours = _smooth_images(batch=2)
    out = AugmentPipe(saturation=1, saturation_std=50)(colours, debug_percentile=1e-6) # Factor ~ 0: grayscale.
    expected = colours.mean(dim=1, keepdim=True).expand_as(colours)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)


def test_cutout_zeroes_centred_square():
    images = torch.ones([2, 3, 32, 32])
    out = AugmentPipe(cutout=1)(images, debug_percentile=0.5)
    expected = torch.ones([32, 32])
    expected[8:24, 8:24] = 0
    torch.testing.assert_close(out, expected.expand_as(out), atol=0, rtol=0)


def test_noise_level_follows_sigma():
    images = torch.zeros([1, 3, 64, 64])
    out = AugmentPipe(noise=1)(images, debug_percentile=0.5) # Median of |N(0,1)| is 0.6745.
    assert abs(out.std().item() - 0.06745) < 0.004


def test_band_filter_with_unit_gains_is_identity():
    images = _smooth_images()
    out = AugmentPipe(imgfilter=1, imgfilter_std=0)(images) # Gains exp2(0) = 1 everywhere.
    torch.testing.assert_close(out, images, atol=1e-5, rtol=0)


def test_gradcheck_through_geometry_color_and_filter(gradfix_enabled):
    pipe = AugmentPipe(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1,
        brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1, imgfilter=1, cutout=1)
    images = _smooth_images(batch=1, channels=3, size=8, dtype=torch.float64).requires_grad_(True)

    def seeded(x):
        torch.manual_seed(11) # Same draws on every evaluation: a fixed, piecewise-linear map.
        return pipe(x)
    # fast_mode compares random projections of the Jacobian: a few evaluations instead of one per input.
    assert torch.autograd.gradcheck(seeded, (images,), eps=1e-6, atol=1e-5, fast_mode=True)


def test_double_backward_for_r1(gradfix_enabled):
    torch.manual_seed(3)
    pipe = AugmentPipe(**augpipe_specs['bgcf'])
    critic = torch.nn.Conv2d(3, 1, 3)
    images = _smooth_images(batch=2).requires_grad_(True)
    scores = critic(pipe(images)).sum()
    (grad,) = torch.autograd.grad(scores, images, create_graph=True)
    penalty = grad.square().sum()
    penalty.backward()
    assert grad.abs().sum() > 0
    assert critic.weight.grad is not None and torch.isfinite(critic.weight.grad).all() and critic.weight.grad.abs().sum() > 0


def test_pickle_round_trip_keeps_p_and_behaviour():
    pipe = AugmentPipe(**augpipe_specs['bgc'])
    pipe.p.fill_(0.37)
    assert persistence.is_persistent(pipe)
    clone = pickle.loads(pickle.dumps(pipe))
    assert type(clone).__name__ == 'AugmentPipe' and clone.p.item() == pytest.approx(0.37)
    assert clone.init_kwargs == augpipe_specs['bgc']
    images = _smooth_images()
    torch.manual_seed(4)
    expected = pipe(images)
    torch.manual_seed(4)
    torch.testing.assert_close(clone(images), expected, atol=0, rtol=0)


def test_module_imports_only_upstream_public_api():
    # NVIDIA's code executes this file's source when it loads our snapshots.
    allowed = {'math', 'numpy', 'scipy.signal', 'torch', 'torch.nn.functional', 'torch_utils',
        'torch_utils.misc', 'torch_utils.persistence', 'torch_utils.ops',
        'torch_utils.ops.upfirdn2d', 'torch_utils.ops.grid_sample_gradfix', 'torch_utils.ops.conv2d_gradfix'}
    used = set()
    for node in ast.walk(ast.parse(inspect.getsource(augment))):
        if isinstance(node, ast.Import):
            used.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            used.update(f'{node.module}.{alias.name}' for alias in node.names)
    assert used <= allowed, used - allowed


def test_bad_inputs_have_clear_errors():
    with pytest.raises(ValueError, match='1 or 3 channels'):
        AugmentPipe()(torch.zeros([1, 2, 8, 8]))
    with pytest.raises(ValueError, match='4-D tensor'):
        AugmentPipe()(torch.zeros([3, 8, 8]))
    with pytest.raises(ValueError, match='unknown entries'):
        DiffAugment(policy='color,zoom')


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_runs_on_cuda(gradfix_enabled):
    pipe = AugmentPipe(**augpipe_specs['bgcfnc']).cuda()
    images = _smooth_images().cuda().requires_grad_(True)
    out = pipe(images)
    assert out.device == images.device and out.shape == images.shape
    (grad,) = torch.autograd.grad(out.sum(), images, create_graph=True)
    grad.square().sum().backward()
    assert torch.isfinite(images.grad).all()
    pipe.p.fill_(0)
    torch.testing.assert_close(pipe(images), images, atol=1e-6, rtol=0)

#----------------------------------------------------------------------------
# DiffAugment

def test_diffaugment_shapes_and_change():
    torch.manual_seed(0)
    images = _smooth_images(batch=4)
    pipe = DiffAugment()
    out = pipe(images)
    assert out.shape == images.shape and out.dtype == images.dtype
    assert (out - images).flatten(1).abs().amax(dim=1).min() > 0.05 # Color always changes every sample.
    assert pipe.policy == ['color', 'translation', 'cutout']


def test_diffaugment_p_zero_is_identity():
    pipe = DiffAugment()
    pipe.p.fill_(0)
    images = _smooth_images()
    torch.testing.assert_close(pipe(images), images, atol=0, rtol=0)


def test_diffaugment_translation_shifts_with_zero_fill():
    images = _smooth_images(batch=1, size=16)
    # Percentile 0.9 draws shift floor(0.9 * 5) - 2 = 2 pixels down and right (reach = 2 at 16 px).
    out = DiffAugment(policy='translation')(images, debug_percentile=0.9)
    torch.testing.assert_close(out[:, :, 2:, 2:], images[:, :, :-2, :-2], atol=0, rtol=0)
    assert out[:, :, :2].abs().max() == 0 and out[:, :, :, :2].abs().max() == 0


def test_diffaugment_cutout_area():
    out = DiffAugment(policy='cutout')(torch.ones([3, 1, 16, 16]), debug_percentile=0.5)
    expected = torch.ones([16, 16])
    expected[4:12, 4:12] = 0 # Top-left corner floor(0.5 * 17) - 4 = 4, side 8.
    torch.testing.assert_close(out, expected.expand_as(out), atol=0, rtol=0)


def test_diffaugment_gradcheck_and_pickle():
    pipe = DiffAugment()
    images = _smooth_images(batch=2, size=8, dtype=torch.float64).requires_grad_(True)

    def seeded(x):
        torch.manual_seed(9)
        return pipe(x)
    assert torch.autograd.gradcheck(seeded, (images,), eps=1e-6, atol=1e-6, fast_mode=True)
    clone = pickle.loads(pickle.dumps(pipe))
    assert type(clone).__name__ == 'DiffAugment' and clone.policy == pipe.policy
    expected = seeded(images.detach())
    torch.manual_seed(9)
    torch.testing.assert_close(clone(images.detach()), expected, atol=0, rtol=0)
