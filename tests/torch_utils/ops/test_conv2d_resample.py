"""Tests of conv2d_resample: every fast path equals the slow upsample-pad-conv-downsample definition."""

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from torch_utils.ops import upfirdn2d
from torch_utils.ops.conv2d_resample import conv2d_resample


def slow_conv2d_resample(x, w, f, up, down, padding, groups, flip_weight, flip_filter):
    """The op's definition step by step, with the padding rules of the spec and no shortcuts."""
    fw, fh = upfirdn2d._get_filter_size(f)
    px0, px1, py0, py1 = upfirdn2d._parse_padding(padding)
    if up > 1:
        px0, px1 = px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2
        py0, py1 = py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2
    if down > 1:
        px0, px1 = px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2
        py0, py1 = py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2
    # 1. zero-insert, pad, and (when upsampling) interpolate with gain up^2
    x = upfirdn2d.upfirdn2d(x, f if up > 1 else None, up=up, padding=[px0, px1, py0, py1], gain=up ** 2,
                            flip_filter=flip_filter, impl='ref')
    # 2. convolve (valid); torch correlates, so a true convolution flips the kernel
    x = F.conv2d(x, w if flip_weight else w.flip([2, 3]), groups=groups)
    # 3. low-pass and decimate
    if down > 1:
        x = upfirdn2d.upfirdn2d(x, f, down=down, flip_filter=flip_filter, impl='ref')
    return x


def random_inputs(in_channels, out_channels, groups, k, size, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn([2, in_channels, size[0], size[1]], generator=gen, dtype=dtype)
    w = torch.randn([out_channels, in_channels // groups, k[0], k[1]], generator=gen, dtype=dtype)
    return x, w


FILTER = upfirdn2d.setup_filter([1, 3, 3, 1])
FILTER_ODD = upfirdn2d.setup_filter([1, 2, 1])

# up, down, kernel size, padding, groups; every combination runs with both flip_weight and flip_filter.
CASES = [
    (1, 1, (3, 3), 1, 1),
    (1, 1, (3, 3), [1, 0, 2, 1], 1),      # asymmetric -> general path
    (1, 1, (3, 2), [-1, 1, 0, 0], 2),     # negative -> general path
    (1, 1, (1, 1), 0, 1),
    (2, 1, (3, 3), 1, 1),                 # StyleGAN up layer
    (2, 1, (3, 3), 1, 2),
    (2, 1, (3, 3), [0, 2, 1, 0], 1),
    (2, 1, (1, 1), 0, 1),                 # 1x1 up fast path
    (3, 1, (2, 3), 0, 1),
    (1, 2, (3, 3), 1, 1),                 # StyleGAN down layer
    (1, 2, (3, 3), [1, 0, 0, 1], 2),
    (1, 2, (1, 1), 0, 1),                 # 1x1 down fast path (D skip)
    (1, 3, (2, 2), 0, 1),
    (2, 2, (3, 3), 1, 1),                 # up then down
    (2, 2, (1, 1), 0, 2),
    (2, 3, (3, 2), [1, 2, 0, 1], 1),
]


def case_id(case):
    up, down, k, padding, groups = case
    return f'up{up}-down{down}-k{k[0]}x{k[1]}-p{padding}-g{groups}'


@pytest.mark.parametrize('flip_weight,flip_filter', list(itertools.product([True, False], [False, True])))
@pytest.mark.parametrize('f', [FILTER, FILTER_ODD], ids=['f4', 'f3'])
@pytest.mark.parametrize('case', CASES, ids=case_id)
def test_matches_slow_definition(case, f, flip_weight, flip_filter):
    up, down, k, padding, groups = case
    x, w = random_inputs(4, 6, groups, k, (7, 6), seed=len(str(case)))
    got = conv2d_resample(x, w, f=f, up=up, down=down, padding=padding, groups=groups,
                          flip_weight=flip_weight, flip_filter=flip_filter)
    want = slow_conv2d_resample(x, w, f, up, down, padding, groups, flip_weight, flip_filter)
    assert got.shape == want.shape
    assert torch.allclose(got, want, rtol=1e-10, atol=1e-10)


def test_stylegan_layer_sizes():
    x, w = random_inputs(8, 4, 1, (3, 3), (8, 8), dtype=torch.float32)
    up = conv2d_resample(x, w, f=FILTER, up=2, padding=1, flip_weight=False)
    down = conv2d_resample(x, w, f=FILTER, down=2, padding=1)
    same = conv2d_resample(x, w, padding=1)
    skip = conv2d_resample(x, w[:, :, :1, :1], f=FILTER, down=2)
    assert up.shape == (2, 4, 16, 16)
    assert down.shape == (2, 4, 4, 4)
    assert same.shape == (2, 4, 8, 8)
    assert skip.shape == (2, 4, 4, 4)
    assert torch.allclose(same, F.conv2d(x, w, padding=1), rtol=1e-6, atol=1e-6)


def test_flip_weight_means_true_convolution():
    x = torch.zeros(1, 1, 5, 5, dtype=torch.float64)
    x[0, 0, 2, 2] = 1
    w = torch.arange(9, dtype=torch.float64).reshape(1, 1, 3, 3)
    # An impulse convolved (true convolution) reproduces the kernel; correlation rotates it.
    conv = conv2d_resample(x, w, padding=1, flip_weight=False)
    corr = conv2d_resample(x, w, padding=1, flip_weight=True)
    assert torch.equal(conv[0, 0, 1:4, 1:4], w[0, 0])
    assert torch.equal(corr[0, 0, 1:4, 1:4], w[0, 0].flip([0, 1]))


def test_dc_gain_of_up_and_down():
    x = torch.ones(1, 2, 12, 12, dtype=torch.float64)
    w = torch.full([3, 2, 1, 1], 0.5, dtype=torch.float64)  # sums two channels of ones to 1
    up = conv2d_resample(x, w, f=FILTER, up=2)
    down = conv2d_resample(x, w, f=FILTER, down=2)
    assert torch.allclose(up[..., 4:-4, 4:-4], torch.ones([], dtype=torch.float64))
    assert torch.allclose(down[..., 2:-2, 2:-2], torch.ones([], dtype=torch.float64))


def test_bad_arguments():
    x, w = random_inputs(4, 6, 1, (3, 3), (5, 5), dtype=torch.float32)
    with pytest.raises(ValueError, match='dtype'):
        conv2d_resample(x, w.double())
    with pytest.raises(ValueError, match='channels'):
        conv2d_resample(x[:, :3], w)
    with pytest.raises(ValueError, match='up and down'):
        conv2d_resample(x, w, up=0)


GRAD_CASES = [(up, down, k, flip_weight, groups)
              for up, down, k in [(1, 1, 3), (2, 1, 3), (1, 2, 3), (2, 2, 3), (2, 1, 1), (1, 2, 1)]
              for flip_weight in (True, False) for groups in (1, 2)]


@pytest.mark.parametrize('up,down,k,flip_weight,groups', GRAD_CASES)
def test_gradcheck_and_gradgradcheck(up, down, k, flip_weight, groups):
    x, w = random_inputs(2, 2, groups, (k, k), (4, 5), seed=up * 10 + down)
    x.requires_grad_(True)
    w.requires_grad_(True)

    def op(inp, weight):
        return conv2d_resample(inp, weight, f=FILTER_ODD, up=up, down=down, padding=1, groups=groups,
                               flip_weight=flip_weight)
    assert torch.autograd.gradcheck(op, [x, w])
    assert torch.autograd.gradgradcheck(op, [x, w])


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
@pytest.mark.parametrize('case', CASES, ids=case_id)
def test_cuda_matches_cpu(case):
    up, down, k, padding, groups = case
    x, w = random_inputs(4, 6, groups, k, (9, 8), dtype=torch.float32, seed=3)
    want = conv2d_resample(x, w, f=FILTER, up=up, down=down, padding=padding, groups=groups, flip_weight=up == 1)
    got = conv2d_resample(x.cuda(), w.cuda(), f=FILTER.cuda(), up=up, down=down, padding=padding, groups=groups,
                          flip_weight=up == 1)
    np.testing.assert_allclose(got.cpu().numpy(), want.numpy(), rtol=1e-4, atol=1e-4)
