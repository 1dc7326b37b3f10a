"""Tests for torch_utils.ops.bias_act: reference formulas, derivatives, clamping, and CUDA/reference parity."""

import math

import pytest
import torch

from torch_utils import custom_ops
from torch_utils.ops import bias_act as ba

ALL_ACTS = list(ba.activation_funcs)
SELU_SCALE = 1.0507009873554804934193349852946
SELU_ALPHA = 1.6732632423543772848170429916717
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')


def direct_formula(s, act, alpha):
    """Each activation written out from exp/where, independent of the table's torch.nn.functional calls."""
    if act == 'linear':
        return s
    if act == 'relu':
        return torch.where(s > 0, s, torch.zeros_like(s))
    if act == 'lrelu':
        return torch.where(s > 0, s, s * alpha)
    if act == 'tanh':
        return (torch.exp(2 * s) - 1) / (torch.exp(2 * s) + 1)
    if act == 'sigmoid':
        return 1 / (1 + torch.exp(-s))
    if act == 'elu':
        return torch.where(s > 0, s, torch.exp(s) - 1)
    if act == 'selu':
        return SELU_SCALE * torch.where(s > 0, s, SELU_ALPHA * (torch.exp(s) - 1))
    if act == 'softplus':
        return torch.log(1 + torch.exp(s))
    if act == 'swish':
        return s / (1 + torch.exp(-s))
    raise AssertionError(act)


def expected(x, b, dim, act, alpha=None, gain=None, clamp=None):
    spec = ba.activation_funcs[act]
    alpha = spec.def_alpha if alpha is None else alpha
    gain = spec.def_gain if gain is None else gain
    s = x.double()
    if b is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        s = s + b.double().reshape(shape)
    y = direct_formula(s, act, alpha) * gain
    if clamp is not None:
        y = torch.minimum(torch.maximum(y, torch.full_like(y, -clamp)), torch.full_like(y, clamp))
    return y


# --------------------------------------------------------------------------------------------------
# Table.

def test_activation_table_matches_spec():
    rows = {name: (spec.def_alpha, spec.def_gain, spec.cuda_idx, spec.ref, spec.has_2nd_grad)
            for name, spec in ba.activation_funcs.items()}
    root2 = math.sqrt(2)
    assert rows == {
        'linear': (0, 1, 1, '', False), 'relu': (0, root2, 2, 'y', False), 'lrelu': (0.2, root2, 3, 'y', False),
        'tanh': (0, 1, 4, 'y', True), 'sigmoid': (0, 1, 5, 'y', True), 'elu': (0, 1, 6, 'y', True),
        'selu': (0, 1, 7, 'y', True), 'softplus': (0, 1, 8, 'y', True), 'swish': (0, root2, 9, 'x', True)}
    assert ba.activation_funcs['lrelu'].def_gain == pytest.approx(1.4142135623730951, abs=0)


# --------------------------------------------------------------------------------------------------
# Reference path values.

SHAPES_AND_DIMS = [((2, 3, 4, 5), 1), ((3, 7), 1), ((6,), 0), ((2, 4, 3), 2), ((2, 3, 4, 5), -1), ((5, 2, 3), 0)]


@pytest.mark.parametrize('act', ALL_ACTS)
@pytest.mark.parametrize('shape,dim', SHAPES_AND_DIMS)
def test_reference_matches_direct_formula(act, shape, dim):
    x = torch.randn(shape, dtype=torch.float64) * 2
    b = torch.randn(shape[dim], dtype=torch.float64)
    for bias in (None, b):
        for kwargs in ({}, {'gain': 0.7}, {'alpha': 0.05, 'gain': 3.0, 'clamp': 0.9}, {'clamp': 0.0}):
            got = ba.bias_act(x, bias, dim=dim, act=act, impl='ref', **kwargs)
            want = expected(x, bias, dim % len(shape), act, **kwargs)
            assert got.shape == x.shape and got.dtype == x.dtype
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize('act', ALL_ACTS)
@pytest.mark.parametrize('dtype,tol', [(torch.float32, 1e-5), (torch.float16, 2e-3)])
def test_reference_lower_precision(act, dtype, tol):
    x = (torch.randn(2, 4, 3, 3) * 2).to(dtype)
    b = torch.randn(4).to(dtype)
    got = ba.bias_act(x, b, act=act, clamp=1.5, impl='ref')
    want = expected(x, b, 1, act, clamp=1.5)
    assert got.dtype == dtype
    torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol)


def test_reference_known_values():
    x = torch.tensor([[-2.0, -0.5, 0.0, 0.5, 3.0]], dtype=torch.float64)
    root2 = math.sqrt(2)
    lrelu = ba.bias_act(x, act='lrelu', impl='ref')
    torch.testing.assert_close(lrelu, torch.tensor([[-0.4, -0.1, 0.0, 0.5, 3.0]], dtype=torch.float64) * root2)
    clamped = ba.bias_act(x, torch.tensor([1.0], dtype=torch.float64), dim=0, act='linear', gain=2, clamp=3)
    torch.testing.assert_close(clamped, torch.tensor([[-2.0, 1.0, 2.0, 3.0, 3.0]], dtype=torch.float64))


# --------------------------------------------------------------------------------------------------
# Reference path derivatives.

@pytest.mark.parametrize('act', ALL_ACTS)
@pytest.mark.parametrize('clamp', [None, 0.8])
def test_reference_gradcheck_and_gradgradcheck(act, clamp):
    x = (torch.randn(2, 3, 2, 2, dtype=torch.float64) * 1.5).requires_grad_()
    b = torch.randn(3, dtype=torch.float64).requires_grad_()

    def op(x_, b_):
        return ba.bias_act(x_, b_, act=act, gain=1.3, clamp=clamp, impl='ref')

    assert torch.autograd.gradcheck(op, (x, b))
    assert torch.autograd.gradgradcheck(op, (x, b))


@pytest.mark.parametrize('act', [a for a in ALL_ACTS if ba.activation_funcs[a].has_2nd_grad])
def test_reference_second_derivative_values(act):
    # d2y/ds2 from autograd against a central difference of the first derivative.
    s = torch.linspace(-3, 3, 12, dtype=torch.float64).requires_grad_()  # avoids the ELU/SELU kink at 0
    (first,) = torch.autograd.grad(ba.bias_act(s, dim=0, act=act, impl='ref').sum(), s, create_graph=True)
    (second,) = torch.autograd.grad(first.sum(), s)
    h = 1e-5

    def slope(v):
        v = v.detach().requires_grad_()
        return torch.autograd.grad(ba.bias_act(v, dim=0, act=act, impl='ref').sum(), v)[0]

    torch.testing.assert_close(second, (slope(s + h) - slope(s - h)) / (2 * h), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('act', ['relu', 'lrelu', 'linear'])
def test_piecewise_linear_second_derivative_is_zero(act):
    s = torch.randn(10, dtype=torch.float64).requires_grad_()
    (first,) = torch.autograd.grad(ba.bias_act(s, dim=0, act=act, impl='ref').sum(), s, create_graph=True)
    if first.requires_grad:
        (second,) = torch.autograd.grad(first.sum(), s, allow_unused=True)
        assert second is None or torch.count_nonzero(second) == 0


@pytest.mark.parametrize('act', ['lrelu', 'tanh', 'selu', 'linear'])
def test_clamp_zeroes_gradient(act):
    x = torch.tensor([[-10.0, -0.3, 0.1, 0.4, 10.0]], dtype=torch.float64, requires_grad=True)
    y = ba.bias_act(x, act=act, gain=1.0, clamp=0.9, impl='ref')
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert grad[0, 0] == 0 and grad[0, 4] == 0
    assert torch.all(grad[0, 1:4] != 0)
    (y_free,) = torch.autograd.grad(ba.bias_act(x, act=act, gain=1.0, impl='ref').sum(), x)
    torch.testing.assert_close(grad[0, 1:4], y_free[0, 1:4])


def test_double_backward_through_lrelu_like_r1():
    # R1-style: penalty on the input gradient, differentiated w.r.t. the bias.
    x = torch.randn(3, 4, 2, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, dtype=torch.float64, requires_grad=True)

    def penalty(w_):
        y = ba.bias_act(x, b, act='lrelu', impl='ref') * w_.reshape(1, -1, 1, 1)
        (gx,) = torch.autograd.grad(y.sum(), x, create_graph=True)
        return gx.square().sum()

    (gw,) = torch.autograd.grad(penalty(w), w)
    # Closed form: gx = sqrt2 * slope * w  =>  d/dw sum(gx^2) = 2 w * 2 * sum(slope^2) per channel.
    s = x + b.reshape(1, -1, 1, 1)
    slope_sq = torch.where(s > 0, torch.ones_like(s), torch.full_like(s, 0.04)).sum(dim=(0, 2, 3))
    torch.testing.assert_close(gw, 4 * w.detach() * slope_sq.detach())


# --------------------------------------------------------------------------------------------------
# Argument checking.

@pytest.mark.parametrize('kwargs,needle', [
    ({'act': 'gelu'}, "unknown activation 'gelu'"),
    ({'clamp': -1}, 'clamp must be None or >= 0'),
    ({'dim': 4}, 'dim=4 is out of range'),
    ({'b': torch.zeros(5)}, 'b must be 1-D with length x.shape[1]=3'),
    ({'b': torch.zeros(3, dtype=torch.float64)}, 'cast b with b.to(x.dtype)'),
    ({'impl': 'fast'}, "unknown impl 'fast'"),
])
def test_bad_arguments_name_the_problem(kwargs, needle):
    with pytest.raises(ValueError) as info:
        ba.bias_act(torch.zeros(2, 3, 4, 4), **kwargs)
    assert needle in str(info.value)


def test_cpu_tensors_never_build_the_plugin(monkeypatch):
    def explode():
        raise AssertionError('plugin must not be built for CPU tensors')
    monkeypatch.setattr(ba, '_load_plugin', explode)
    y = ba.bias_act(torch.ones(1, 2, 1, 1), act='relu', impl='cuda')
    torch.testing.assert_close(y, torch.full((1, 2, 1, 1), math.sqrt(2)))


# --------------------------------------------------------------------------------------------------
# CUDA kernel against the reference (skipped without a GPU).

CUDA_CASES = [
    ((2, 3, 5, 7), 1, False),
    ((4, 16, 8, 8), 1, True),      # channels_last
    ((2, 5, 3, 3), 1, True),       # channels_last, odd sizes
    ((3, 37), 1, False),
    ((1029,), 0, False),
    ((2, 6, 5), 2, False),
    ((1, 1, 1, 1), 1, False),
    ((8, 64, 16, 16), 1, False),   # several blocks
    ((3, 4, 9, 1), 2, True),
]


def _make_inputs(shape, dim, channels_last, dtype, scale=2.0):
    x = torch.randn(shape, device='cuda', dtype=torch.float32) * scale
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    b = torch.randn(shape[dim], device='cuda')
    return x.to(dtype), b.to(dtype)


def _safe_mask(x, b, dim, act, clamp):
    """False where float rounding could flip a kink or the clamp decision between the two paths."""
    shape = [1] * x.ndim
    shape[dim] = -1
    s = x.double() + b.double().reshape(shape)
    pre = direct_formula(s, act, ba.activation_funcs[act].def_alpha) * ba.activation_funcs[act].def_gain
    safe = s.abs() > 1e-2
    if clamp is not None:
        safe &= (pre.abs() - clamp).abs() > 2e-2 * clamp + 1e-3
    return safe


@needs_gpu
@pytest.mark.parametrize('act', ALL_ACTS)
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.float64])
@pytest.mark.parametrize('clamp', [None, 0.75])
def test_cuda_matches_reference(act, dtype, clamp):
    tol = {torch.float16: 1e-2, torch.float32: 1e-4, torch.float64: 1e-9}[dtype]
    for shape, dim, channels_last in CUDA_CASES:
        x, b = _make_inputs(shape, dim, channels_last, dtype)
        y_ref = ba.bias_act(x, b, dim=dim, act=act, clamp=clamp, impl='ref')
        y_cuda = ba.bias_act(x, b, dim=dim, act=act, clamp=clamp, impl='cuda')
        assert y_cuda.dtype == dtype and y_cuda.shape == x.shape
        if channels_last and x.ndim == 4:
            assert y_cuda.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(y_cuda.double(), y_ref.double(), rtol=tol, atol=tol)
        # Without a bias too.
        torch.testing.assert_close(ba.bias_act(x, None, dim=dim, act=act, clamp=clamp, impl='cuda').double(),
                                   ba.bias_act(x, None, dim=dim, act=act, clamp=clamp, impl='ref').double(),
                                   rtol=tol, atol=tol)


def _first_and_second(x, b, dim, act, clamp, impl, dy, dds):
    x = x.detach().requires_grad_()
    b = b.detach().requires_grad_()
    dy = dy.detach().requires_grad_()
    y = ba.bias_act(x, b, dim=dim, act=act, clamp=clamp, impl=impl)
    dx, db = torch.autograd.grad(y, [x, b], grad_outputs=dy, create_graph=True)
    penalty = (dx.double() * dds.double()).sum() + db.double().sum() * 0.5
    outs = torch.autograd.grad(penalty, [x, b, dy], allow_unused=True)
    outs = [torch.zeros_like(ref) if g is None else g for g, ref in zip(outs, (x, b, dy))]
    return [dx.detach(), db.detach()] + [g.detach() for g in outs]


@needs_gpu
@pytest.mark.parametrize('act', ALL_ACTS)
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16])
@pytest.mark.parametrize('clamp', [None, 0.75])
def test_cuda_first_and_second_gradients_match_reference(act, dtype, clamp):
    tol = {torch.float16: 3e-2, torch.float32: 2e-4}[dtype]
    for shape, dim, channels_last in CUDA_CASES:
        x, b = _make_inputs(shape, dim, channels_last, dtype)
        safe = _safe_mask(x, b, dim, act, clamp)
        dy = (torch.randn(shape, device='cuda') * safe).to(dtype)
        dds = (torch.randn(shape, device='cuda') * safe).to(dtype)
        got = _first_and_second(x, b, dim, act, clamp, 'cuda', dy, dds)
        want = _first_and_second(x, b, dim, act, clamp, 'ref', dy, dds)
        names = ['dx', 'db', 'd2x', 'd2b', 'd2dy']
        for name, g, w in zip(names, got, want):
            if name == 'd2dy':
                # The bias-gradient term reaches every element of dy, boundary ones included.
                g, w = g * safe, w * safe
            scale = max(1.0, w.double().abs().max().item())
            torch.testing.assert_close(g.double(), w.double(), rtol=tol, atol=tol * scale,
                                       msg=lambda m: f'{name} {shape} dim={dim}: {m}')


@needs_gpu
@pytest.mark.parametrize('act', ALL_ACTS)
def test_cuda_gradcheck_and_gradgradcheck_float64(act):
    x = (torch.randn(2, 3, 3, 2, dtype=torch.float64, device='cuda') * 1.5).requires_grad_()
    b = torch.randn(3, dtype=torch.float64, device='cuda').requires_grad_()
    for clamp in (None, 0.8):
        def op(x_, b_):
            return ba.bias_act(x_, b_, act=act, gain=1.3, clamp=clamp, impl='cuda')
        assert torch.autograd.gradcheck(op, (x, b))
        assert torch.autograd.gradgradcheck(op, (x, b))


@needs_gpu
def test_cuda_path_really_uses_the_kernel(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError('reference path used')
    monkeypatch.setattr(ba, '_bias_act_ref', forbidden)
    x = torch.randn(2, 8, 4, 4, device='cuda', requires_grad=True)
    y = ba.bias_act(x, torch.zeros(8, device='cuda'), act='lrelu', clamp=256)
    y.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert 'bias_act_plugin' in custom_ops._loaded_plugins


@needs_gpu
def test_cuda_clamp_zeroes_gradient_in_half():
    # 0.3 is not representable in float16; clamped outputs must still be recognised as clamped.
    x = torch.tensor([[-10.0, -0.1, 0.1, 10.0]], device='cuda', dtype=torch.float16, requires_grad=True)
    y = ba.bias_act(x, act='linear', clamp=0.3, impl='cuda')
    (grad,) = torch.autograd.grad(y.float().sum(), x)
    torch.testing.assert_close(grad.float(), torch.tensor([[0.0, 1.0, 1.0, 0.0]], device='cuda'))


@needs_gpu
@pytest.mark.parametrize('act', ['lrelu', 'swish', 'tanh'])
def test_cuda_half_with_odd_offset_and_odd_length(act):
    # A view starting one element in is 2-byte aligned only: the kernel must not use paired loads there.
    base = torch.randn(2 * 7 * 5 + 1, device='cuda', dtype=torch.float16)
    for x in (base[1:].view(2, 7, 5), base[:-1].view(2, 7, 5), base[1:-2].view(68)):
        b = torch.randn(x.shape[1] if x.ndim > 1 else x.shape[0], device='cuda', dtype=torch.float16)
        dim = 1 if x.ndim > 1 else 0
        x = x.detach().requires_grad_()
        got = ba.bias_act(x, b, dim=dim, act=act, clamp=1.5, impl='cuda')
        want = ba.bias_act(x, b, dim=dim, act=act, clamp=1.5, impl='ref')
        torch.testing.assert_close(got.float(), want.float(), rtol=1e-2, atol=1e-2)
        (g_got,) = torch.autograd.grad(got.float().sum(), x)
        (g_want,) = torch.autograd.grad(want.float().sum(), x)
        safe = _safe_mask(x.detach(), b, dim, act, 1.5)
        torch.testing.assert_close((g_got * safe).float(), (g_want * safe).float(), rtol=2e-2, atol=2e-2)
