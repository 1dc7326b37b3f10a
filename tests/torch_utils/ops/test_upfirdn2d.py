"""Tests of upfirdn2d: reference path against the textbook definition, gradients, wrappers and CUDA parity."""

import random

import numpy as np
import pytest
import torch

from torch_utils.ops import upfirdn2d as U

has_cuda = torch.cuda.is_available()


# --------------------------------------------------------------------------------------------------
# Independent definition: numpy, written straight from the four steps of the op.

def direct_upfirdn2d(x, f, up, down, padding, flip_filter=False, gain=1):
    """x: numpy [N, C, H, W]; f: numpy [fh, fw] or [taps] (separable); returns numpy in float64."""
    upx, upy = (up, up) if isinstance(up, int) else up
    downx, downy = (down, down) if isinstance(down, int) else down
    if isinstance(padding, int):
        padding = [padding] * 4
    elif len(padding) == 2:
        padding = [padding[0], padding[0], padding[1], padding[1]]
    px0, px1, py0, py1 = padding
    x = np.asarray(x, dtype=np.float64)
    f = np.asarray(f, dtype=np.float64)
    kernel = np.outer(f, f) * gain if f.ndim == 1 else f * gain  # separable gain**0.5 applied twice
    n, c, h, w = x.shape

    # 1. zero insertion
    grid = np.zeros([n, c, h * upy, w * upx])
    grid[:, :, ::upy, ::upx] = x
    # 2. pad with zeros; negative pads crop
    grid = np.pad(grid, [(0, 0), (0, 0), (max(py0, 0), max(py1, 0)), (max(px0, 0), max(px1, 0))])
    grid = grid[:, :, max(-py0, 0):grid.shape[2] - max(-py1, 0), max(-px0, 0):grid.shape[3] - max(-px1, 0)]
    # 3. valid FIR: true convolution rotates the kernel, correlation does not
    g = kernel if flip_filter else kernel[::-1, ::-1]
    fh, fw = g.shape
    full_h, full_w = grid.shape[2] - fh + 1, grid.shape[3] - fw + 1
    filtered = np.zeros([n, c, full_h, full_w])
    for i in range(fh):
        for j in range(fw):
            filtered += g[i, j] * grid[:, :, i:i + full_h, j:j + full_w]
    # 4. keep every down-th sample
    return filtered[:, :, ::downy, ::downx]


def random_case(rng):
    """A random geometry with odd sizes, mixed padding forms and a filter that keeps the output non-empty."""
    separable = rng.random() < 0.3
    taps_w = rng.randint(1, 5)
    taps_h = taps_w if separable else rng.randint(1, 5)
    up = rng.choice([1, 2, 3, 4, [rng.randint(1, 4), rng.randint(1, 4)]])
    down = rng.choice([1, 2, 3, 4, [rng.randint(1, 4), rng.randint(1, 4)]])
    form = rng.randint(0, 2)
    if form == 0:
        padding = rng.randint(-1, 3)
    elif form == 1:
        padding = [rng.randint(-1, 3), rng.randint(-1, 3)]
    else:
        padding = [rng.randint(-2, 3) for _ in range(4)]
    h, w = rng.randint(3, 9), rng.randint(3, 9)
    return dict(shape=[2, 3, h, w], taps=(taps_h, taps_w), separable=separable, up=up, down=down,
                padding=padding, flip_filter=rng.random() < 0.5, gain=rng.choice([1, 2.5]))


def output_hw(case):
    upx, upy = U._parse_scaling(case['up'])
    downx, downy = U._parse_scaling(case['down'])
    px0, px1, py0, py1 = U._parse_padding(case['padding'])
    fh, fw = case['taps']
    n, c, h, w = case['shape']
    return (h * upy + py0 + py1 - fh + downy) // downy, (w * upx + px0 + px1 - fw + downx) // downx


def make_cases(count, seed):
    rng = random.Random(seed)
    cases = []
    while len(cases) < count:
        case = random_case(rng)
        if min(output_hw(case)) >= 1:
            cases.append(case)
    return cases


def make_filter(case, generator):
    fh, fw = case['taps']
    if case['separable']:
        return torch.rand([fw], generator=generator) + 0.1
    return torch.rand([fh, fw], generator=generator) + 0.1


CASES = make_cases(40, seed=1)


def case_id(case):
    return f"{case['shape'][2]}x{case['shape'][3]}-f{case['taps']}-s{int(case['separable'])}-u{case['up']}" \
           f"-d{case['down']}-p{case['padding']}-fl{int(case['flip_filter'])}-g{case['gain']}"


# --------------------------------------------------------------------------------------------------
# Helpers and setup_filter.

def test_parse_helpers():
    assert U._parse_scaling(2) == (2, 2)
    assert U._parse_scaling([1, 3]) == (1, 3)
    assert U._parse_scaling(np.int64(2)) == (2, 2)
    assert U._parse_padding(1) == (1, 1, 1, 1)
    assert U._parse_padding([1, -2]) == (1, 1, -2, -2)
    assert U._parse_padding([1, 2, 3, -4]) == (1, 2, 3, -4)
    assert U._get_filter_size(None) == (1, 1)
    assert U._get_filter_size(torch.ones(3, 5)) == (5, 3)
    assert U._get_filter_size(torch.ones(12)) == (12, 12)
    with pytest.raises(AssertionError):
        U._parse_scaling(0)
    with pytest.raises(ValueError, match='padding'):
        U._parse_padding([1, 2, 3])
    with pytest.raises(ValueError, match='integers'):
        U._parse_padding([1.5, 2])


def test_setup_filter_shapes_and_values():
    f = U.setup_filter([1, 3, 3, 1])
    expected = torch.tensor([1., 3, 3, 1])
    expected = torch.outer(expected, expected) / 64
    assert f.shape == (4, 4) and f.dtype == torch.float32
    assert torch.equal(f, expected)
    assert U.setup_filter(None).tolist() == [[1.0]]
    assert U.setup_filter(3.0, normalize=False).tolist() == [[9.0]]

    twelve = U.setup_filter(np.arange(1, 13))
    assert twelve.shape == (12,)
    assert torch.allclose(twelve.sum(), torch.tensor(1.0))
    assert torch.allclose(twelve, torch.arange(1., 13) / 78)

    flipped = U.setup_filter([1, 2, 4], normalize=False, flip_filter=True, gain=4)
    assert torch.allclose(flipped, torch.outer(torch.tensor([4., 2, 1]), torch.tensor([4., 2, 1])) * 4)
    sep = U.setup_filter([1, 2, 4], normalize=False, gain=4, separable=True)
    assert torch.allclose(sep, torch.tensor([2., 4, 8]))
    two_d = U.setup_filter([[1, 2], [3, 4]])
    assert torch.allclose(two_d, torch.tensor([[1., 2], [3, 4]]) / 10)
    with pytest.raises(ValueError, match='1-D filter'):
        U.setup_filter([[1, 2], [3, 4]], separable=True)


# --------------------------------------------------------------------------------------------------
# Reference path against the definition.

@pytest.mark.parametrize('case', CASES, ids=case_id)
def test_reference_matches_definition_float64(case):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(case['shape'], generator=gen, dtype=torch.float64)
    f = make_filter(case, gen)
    y = U.upfirdn2d(x, f, up=case['up'], down=case['down'], padding=case['padding'],
                    flip_filter=case['flip_filter'], gain=case['gain'], impl='ref')
    want = direct_upfirdn2d(x.numpy(), f.numpy(), case['up'], case['down'], case['padding'],
                            case['flip_filter'], case['gain'])
    assert tuple(y.shape[2:]) == output_hw(case) == want.shape[2:]
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('dtype,tol', [(torch.float32, 1e-5), (torch.float16, 1e-2)])
@pytest.mark.parametrize('case', CASES[:8], ids=case_id)
def test_reference_lower_precision(case, dtype, tol):
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(case['shape'], generator=gen)
    f = make_filter(case, gen)
    y = U.upfirdn2d(x.to(dtype), f, up=case['up'], down=case['down'], padding=case['padding'],
                    flip_filter=case['flip_filter'], gain=case['gain'], impl='ref')
    assert y.dtype == dtype
    want = direct_upfirdn2d(x.numpy(), f.numpy(), case['up'], case['down'], case['padding'],
                            case['flip_filter'], case['gain'])
    np.testing.assert_allclose(y.double().numpy(), want, rtol=tol, atol=tol * 10)


def test_small_known_values():
    # [1, 2] upsampled by 2 with a [1, 1] box: each sample is repeated, in both axes.
    x = torch.tensor([[[[1., 2.], [3., 4.]]]])
    y = U.upfirdn2d(x, torch.ones(2, 2), up=2, padding=[1, 0, 1, 0], impl='ref')
    assert y[0, 0].tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
    # A one-sided filter shows the convolution direction: [0, 1] delays the signal by one sample.
    row = torch.tensor([[[[1., 2., 3.]]]])
    conv = U.upfirdn2d(row, torch.tensor([[0., 1.]]), padding=[1, 0, 0, 0], impl='ref')
    corr = U.upfirdn2d(row, torch.tensor([[0., 1.]]), padding=[1, 0, 0, 0], flip_filter=True, impl='ref')
    assert conv[0, 0, 0].tolist() == [0, 1, 2]
    assert corr[0, 0, 0].tolist() == [1, 2, 3]
    # Negative padding crops; down keeps the first sample of each pair.
    crop = U.upfirdn2d(torch.arange(16.).reshape(1, 1, 4, 4), None, down=2, padding=[-1, 0, 0, -1], impl='ref')
    assert crop[0, 0].tolist() == [[1, 3], [9, 11]]


def test_separable_equals_outer_product_filter():
    x = torch.randn(2, 2, 7, 5, dtype=torch.float64)
    taps = torch.rand(9) + 0.1
    sep = U.upfirdn2d(x, taps, up=2, down=[1, 2], padding=[3, 2, 1, 4], gain=3, impl='ref')
    full = U.upfirdn2d(x, torch.outer(taps, taps), up=2, down=[1, 2], padding=[3, 2, 1, 4], gain=3, impl='ref')
    assert torch.allclose(sep, full, rtol=1e-6, atol=1e-6)  # the outer product was rounded to float32


def test_bad_inputs_give_clear_errors():
    x = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match='4-D'):
        U.upfirdn2d(torch.zeros(4, 4), None)
    with pytest.raises(TypeError, match='float32'):
        U.upfirdn2d(x, torch.ones(2, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match='require grad'):
        U.upfirdn2d(x, torch.ones(2, 2, requires_grad=True))
    with pytest.raises(ValueError, match='increase the padding'):
        U.upfirdn2d(x, torch.ones(3, 3), padding=-2)


# --------------------------------------------------------------------------------------------------
# Wrappers.

def test_wrappers_sizes_and_dc():
    f4 = U.setup_filter([1, 3, 3, 1])
    f12 = U.setup_filter(np.hanning(14)[1:-1])
    x = torch.full([2, 3, 9, 7], 2.5, dtype=torch.float64)
    for f in (f4, f12, None):
        assert U.filter2d(x, f, impl='ref').shape == (2, 3, 9, 7)
        assert U.filter2d(x, f, padding=[1, 2, 0, 3], impl='ref').shape == (2, 3, 12, 10)
        assert U.upsample2d(x, f, impl='ref').shape == (2, 3, 18, 14)
        assert U.upsample2d(x, f, up=[3, 2], impl='ref').shape == (2, 3, 18, 21)
        assert U.downsample2d(x, f, impl='ref').shape == (2, 3, 4, 3)
        assert U.downsample2d(x, f, down=[1, 3], padding=[0, 0, 1, 2], impl='ref').shape == (2, 3, 4, 7)

    # DC is preserved away from the zero-padded border.
    for f in (f4, f12):
        fw = U._get_filter_size(f)[0]
        margin = fw
        up = U.upsample2d(torch.full([1, 1, 24, 24], 2.5, dtype=torch.float64), f, impl='ref')
        assert torch.allclose(up[..., margin:-margin, margin:-margin], torch.tensor(2.5, dtype=torch.float64))
        flt = U.filter2d(torch.full([1, 1, 24, 24], 2.5, dtype=torch.float64), f, impl='ref')
        assert torch.allclose(flt[..., margin:-margin, margin:-margin], torch.tensor(2.5, dtype=torch.float64))
        down = U.downsample2d(torch.full([1, 1, 48, 48], 2.5, dtype=torch.float64), f, impl='ref')
        assert torch.allclose(down[..., margin:-margin, margin:-margin], torch.tensor(2.5, dtype=torch.float64))


def test_wrappers_equal_upfirdn2d_with_documented_padding():
    x = torch.randn(1, 2, 6, 5, dtype=torch.float64)
    f = U.setup_filter([1, 2, 3, 5, 2])
    fw = fh = 5
    got = U.upsample2d(x, f, up=[2, 3], padding=[1, 0, 0, 2], gain=1.5, impl='ref')
    want = U.upfirdn2d(x, f, up=[2, 3], gain=1.5 * 6, impl='ref',
                       padding=[1 + (fw + 1) // 2, (fw - 2) // 2, (fh + 2) // 2, 2 + (fh - 3) // 2])
    assert torch.equal(got, want)
    got = U.downsample2d(x, f, down=[3, 2], padding=[1, 2, 0, 0], flip_filter=True, impl='ref')
    want = U.upfirdn2d(x, f, down=[3, 2], flip_filter=True, impl='ref',
                       padding=[1 + (fw - 2) // 2, 2 + (fw - 3) // 2, (fh - 1) // 2, (fh - 2) // 2])
    assert torch.equal(got, want)
    got = U.filter2d(x, f, padding=[0, 1, 2, 0], impl='ref')
    want = U.upfirdn2d(x, f, padding=[fw // 2, 1 + (fw - 1) // 2, 2 + fh // 2, (fh - 1) // 2], impl='ref')
    assert torch.equal(got, want)


def test_augment_style_call_negative_crop_separable():
    # augment.py: 2x up with the 12-tap Hz_geom, then down with flip_filter=True and a negative crop.
    taps = U.setup_filter(np.hanning(14)[1:-1])
    x = torch.randn(1, 3, 10, 10, dtype=torch.float64)
    up = U.upsample2d(x, taps, up=2, impl='ref')
    y = U.downsample2d(up, taps, down=2, padding=-5, flip_filter=True, impl='ref')
    assert y.shape == (1, 3, 5, 5)
    want = direct_upfirdn2d(up.numpy(), taps.numpy(), 1, 2, [-5 + 5, -5 + 5, -5 + 5, -5 + 5], flip_filter=True)
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# Gradients.

GRAD_CASES = make_cases(10, seed=7)


@pytest.mark.parametrize('case', GRAD_CASES, ids=case_id)
def test_reference_gradcheck_and_gradgradcheck(case):
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(case['shape'], generator=gen, dtype=torch.float64).requires_grad_(True)
    f = make_filter(case, gen)

    def op(inp):
        return U.upfirdn2d(inp, f, up=case['up'], down=case['down'], padding=case['padding'],
                           flip_filter=case['flip_filter'], gain=case['gain'], impl='ref')
    assert torch.autograd.gradcheck(op, [x])
    assert torch.autograd.gradgradcheck(op, [x])


@pytest.mark.parametrize('case', make_cases(25, seed=11), ids=case_id)
def test_custom_function_backward_matches_autograd(case):
    """The kernel's autograd.Function, driven by the reference runner, gives autograd's gradients."""
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(case['shape'], generator=gen, dtype=torch.float64).requires_grad_(True)
    f = make_filter(case, gen)
    geom = U._Geometry(*U._parse_scaling(case['up']), *U._parse_scaling(case['down']),
                       *U._parse_padding(case['padding']))
    y_fn = U._UpFirDn2d.apply(x, f, geom, case['flip_filter'], case['gain'], U._run_reference)
    y_ref = U._upfirdn2d_ref(x, f, geom, case['flip_filter'], case['gain'])
    assert torch.allclose(y_fn, y_ref, rtol=1e-12, atol=1e-12)
    dy = torch.randn(y_ref.shape, generator=gen, dtype=torch.float64)
    g_fn, = torch.autograd.grad(y_fn, x, dy)
    g_ref, = torch.autograd.grad(y_ref, x, dy)
    assert torch.allclose(g_fn, g_ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('case', GRAD_CASES[:5], ids=case_id)
def test_custom_function_gradgradcheck(case):
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(case['shape'], generator=gen, dtype=torch.float64).requires_grad_(True)
    f = make_filter(case, gen)
    geom = U._Geometry(*U._parse_scaling(case['up']), *U._parse_scaling(case['down']),
                       *U._parse_padding(case['padding']))

    def op(inp):
        return U._UpFirDn2d.apply(inp, f, geom, case['flip_filter'], case['gain'], U._run_reference)
    assert torch.autograd.gradcheck(op, [x])
    assert torch.autograd.gradgradcheck(op, [x])


def test_impl_cuda_on_cpu_tensor_uses_reference():
    x = torch.randn(1, 2, 5, 5)
    f = U.setup_filter([1, 3, 3, 1])
    assert torch.equal(U.upsample2d(x, f), U.upsample2d(x, f, impl='ref'))


# --------------------------------------------------------------------------------------------------
# CUDA kernel against the reference.

needs_cuda = pytest.mark.skipif(not has_cuda, reason='needs a CUDA device')

KERNEL_CASES = [
    # (label, shape, taps/separable, up, down, padding, expected kernel path(s) of the passes)
    ('up2-4x4', [3, 5, 9, 11], (4, 4, False), 2, 1, [2, 1, 2, 1], {1}),
    ('down2-4x4', [3, 5, 17, 13], (4, 4, False), 1, 2, [1, 1, 1, 1], {1}),
    ('filter-4x4', [3, 5, 16, 16], (4, 4, False), 1, 1, [2, 1, 2, 1], {1}),
    ('filter-3x2', [2, 3, 7, 9], (3, 2, False), 1, 1, [1, 0, -1, 2], {1}),
    ('up2-sep12', [2, 4, 12, 10], (12, 12, True), 2, 1, [6, 5, 6, 5], {2, 3}),
    ('down2-sep12', [2, 4, 33, 30], (12, 12, True), 1, 2, [5, 5, 5, 5], {2, 3}),
    ('crop-sep12', [2, 4, 30, 30], (12, 12, True), 1, 2, -5, {2, 3}),
    ('up3-general', [2, 3, 7, 6], (4, 4, False), 3, 1, [2, 1, 2, 1], {0}),
    ('up2down3-general', [2, 3, 8, 9], (5, 3, False), [2, 1], [3, 2], [1, 2, 0, 3], {0}),
    ('big2d-general', [2, 3, 10, 10], (7, 6, False), 2, 1, 3, {0}),
    ('large-planes', [4, 64, 8, 8], (4, 4, False), 2, 1, [2, 1, 2, 1], {1}),
    ('large-image', [1, 2, 130, 70], (4, 4, False), 1, 2, [1, 1, 1, 1], {1}),
    ('wide-up2', [2, 3, 40, 37], (4, 4, False), 2, 1, [2, 1, 2, 1], {1}),
    ('one-channel', [3, 1, 9, 66], (4, 4, False), 1, 2, [1, 1, 1, 1], {1}),
    ('ch32-filter', [2, 32, 9, 12], (3, 3, False), 1, 1, [1, 1, 1, 1], {1}),
]


def _kernel_inputs(shape, taps, dtype, channels_last, seed=0):
    gen = torch.Generator().manual_seed(seed)
    fh, fw, separable = taps
    f = (torch.rand([fw], generator=gen) if separable else torch.rand([fh, fw], generator=gen)) + 0.1
    f = f / f.sum()  # unit DC gain, like setup_filter, keeps float16 second derivatives finite
    x = torch.randn(shape, generator=gen).to(device='cuda', dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, f.cuda()


@needs_cuda
@pytest.mark.parametrize('channels_last', [False, True], ids=['planar', 'channels_last'])
@pytest.mark.parametrize('dtype', [torch.float16, torch.float32, torch.float64], ids=['f16', 'f32', 'f64'])
@pytest.mark.parametrize('label,shape,taps,up,down,padding,paths', KERNEL_CASES, ids=[c[0] for c in KERNEL_CASES])
@pytest.mark.parametrize('flip_filter', [False, True], ids=['conv', 'corr'])
def test_cuda_forward_matches_reference(label, shape, taps, up, down, padding, paths, dtype, channels_last,
                                        flip_filter):
    x, f = _kernel_inputs(shape, taps, dtype, channels_last)
    y = U.upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=1.7, impl='cuda')
    want = U.upfirdn2d(x.double(), f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=1.7,
                       impl='ref')
    assert y.dtype == dtype and y.shape == want.shape
    assert y.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    tol = {torch.float16: 2e-2, torch.float32: 1e-5, torch.float64: 1e-12}[dtype]
    assert torch.allclose(y.double(), want, rtol=tol, atol=tol)


@needs_cuda
@pytest.mark.parametrize('label,shape,taps,up,down,padding,paths', KERNEL_CASES, ids=[c[0] for c in KERNEL_CASES])
def test_cuda_kernel_path_selection(label, shape, taps, up, down, padding, paths):
    x, f = _kernel_inputs(shape, taps, torch.float32, False)
    plugin = U._load_plugin()
    upx, upy = U._parse_scaling(up)
    downx, downy = U._parse_scaling(down)
    px0, px1, py0, py1 = U._parse_padding(padding)
    if f.ndim == 2:
        used = {plugin.kernel_path(x, f, upx, upy, downx, downy, px0, px1, py0, py1)}
    else:
        used = {plugin.kernel_path(x, f[None, :], upx, 1, downx, 1, px0, px1, 0, 0),
                plugin.kernel_path(x, f[:, None], 1, upy, 1, downy, 0, 0, py0, py1)}
    assert used == paths


@needs_cuda
def test_cuda_kernel_path_layout_and_dtype_rules():
    plugin = U._load_plugin()
    f = torch.ones(4, 4, device='cuda')
    planar = torch.zeros(2, 32, 8, 8, device='cuda')
    cl32 = planar.contiguous(memory_format=torch.channels_last)
    cl5 = torch.zeros(2, 5, 8, 8, device='cuda').contiguous(memory_format=torch.channels_last)
    args = (2, 2, 1, 1, 2, 1, 2, 1)
    assert plugin.kernel_path(planar, f, *args) == 1
    assert plugin.kernel_path(cl32, f, *args) == 1
    assert plugin.kernel_path(cl5, f, *args) == 0          # tiles keep 16 channels together
    assert plugin.kernel_path(planar.double(), f, *args) == 0  # float64 always takes the general kernel
    assert plugin.kernel_path(planar, torch.ones(5, 5, device='cuda'), *args) == 0


@needs_cuda
def test_cuda_strided_view_input():
    f = U.setup_filter([1, 3, 3, 1], device='cuda')
    base = torch.randn(2, 6, 20, 22, device='cuda')
    view = base[:, ::2, 1:-2, ::2]
    got = U.downsample2d(view, f, impl='cuda')
    want = U.downsample2d(view, f, impl='ref')
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)


@needs_cuda
@pytest.mark.parametrize('channels_last', [False, True], ids=['planar', 'channels_last'])
@pytest.mark.parametrize('dtype', [torch.float16, torch.float32], ids=['f16', 'f32'])
@pytest.mark.parametrize('label,shape,taps,up,down,padding,paths', KERNEL_CASES, ids=[c[0] for c in KERNEL_CASES])
def test_cuda_first_and_second_gradients(label, shape, taps, up, down, padding, paths, dtype, channels_last):
    x, f = _kernel_inputs(shape, taps, dtype, channels_last, seed=1)

    def grads(impl):
        inp = x.detach().clone().requires_grad_(True)
        y = U.upfirdn2d(inp, f, up=up, down=down, padding=padding, gain=1.3, impl=impl)
        weights = torch.linspace(-1, 1, y.numel(), device='cuda').reshape(y.shape)
        # The op is linear, so a square makes the gradient depend on x and the second order non-trivial
        # (the same structure as R1: differentiate a squared gradient norm again).
        dx, = torch.autograd.grad((y.float().square() * weights).sum(), inp, create_graph=True)
        ddx, = torch.autograd.grad(dx.float().square().sum(), inp)
        return dx.detach().double(), ddx.double()

    dx, ddx = grads('cuda')
    dx_ref, ddx_ref = grads('ref')
    tol = 3e-2 if dtype == torch.float16 else 1e-4
    scale = float(dx_ref.abs().max()) + 1e-6
    assert torch.allclose(dx, dx_ref, rtol=tol, atol=tol * scale)
    scale2 = float(ddx_ref.abs().max()) + 1e-6
    assert torch.allclose(ddx, ddx_ref, rtol=tol, atol=tol * scale2)


@needs_cuda
def test_cuda_gradgradcheck_float64():
    f = U.setup_filter([1, 3, 3, 1]).cuda()
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, device='cuda', requires_grad=True)
    for kwargs in [dict(up=2, padding=[2, 1, 2, 1]), dict(down=2, padding=1), dict(padding=[1, 2, 0, -1])]:
        def op(inp, kwargs=kwargs):
            return U.upfirdn2d(inp, f, impl='cuda', **kwargs)
        assert torch.autograd.gradcheck(op, [x])
        assert torch.autograd.gradgradcheck(op, [x])
