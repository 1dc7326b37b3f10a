"""Checks conv2d_gradfix against torch's convolution: values, first and second derivatives, weight-grad skipping."""

import pytest
import torch
import torch.nn.functional as F

from torch_utils.ops import conv2d_gradfix

# (transposed, in_channels, out_channels, kernel, stride, padding, output_padding, dilation, groups, size)
CASES = [
    (False, 2, 3, 3, 1, 1, 0, 1, 1, 5),
    (False, 4, 2, 3, 2, 0, 0, 1, 2, 6),
    (False, 2, 2, 2, 2, 1, 0, 2, 1, 7),
    (True, 2, 3, 3, 2, 1, 1, 1, 1, 4),
    (True, 4, 4, 3, 2, 0, 0, 1, 2, 3),
]


@pytest.fixture
def custom_path(monkeypatch):
    monkeypatch.setattr(conv2d_gradfix, 'enabled', True)
    monkeypatch.setattr(conv2d_gradfix, '_allow_cpu', True)


def _make(case, dtype=torch.float64):
    transposed, cin, cout, k, stride, pad, out_pad, dil, groups, size = case
    x = torch.randn(2, cin, size, size, dtype=dtype, requires_grad=True)
    if transposed:
        w = torch.randn(cin, cout // groups, k, k, dtype=dtype, requires_grad=True)
    else:
        w = torch.randn(cout, cin // groups, k, k, dtype=dtype, requires_grad=True)
    b = torch.randn(cout, dtype=dtype, requires_grad=True)
    return x, w, b


def _ours(case):
    transposed, _, _, _, stride, pad, out_pad, dil, groups, _ = case
    if transposed:
        return lambda x, w, b: conv2d_gradfix.conv_transpose2d(x, w, b, stride, pad, out_pad, groups, dil)
    return lambda x, w, b: conv2d_gradfix.conv2d(x, w, b, stride, pad, dil, groups)


def _reference(case):
    transposed, _, _, _, stride, pad, out_pad, dil, groups, _ = case
    if transposed:
        return lambda x, w, b: F.conv_transpose2d(x, w, b, stride, pad, out_pad, groups, dil)
    return lambda x, w, b: F.conv2d(x, w, b, stride, pad, dil, groups)


@pytest.mark.parametrize('case', CASES)
def test_custom_path_matches_torch_values_and_grads(custom_path, case):
    x, w, b = _make(case)
    out = _ours(case)(x, w, b)
    ref = _reference(case)(x, w, b)
    assert type(out.grad_fn).__name__ == '_ConvolutionBackward'  # the custom Function, not torch's
    torch.testing.assert_close(out, ref)
    upstream = torch.randn_like(ref)
    grads = torch.autograd.grad(out, (x, w, b), upstream)
    ref_grads = torch.autograd.grad(ref, (x, w, b), upstream)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize('case', CASES)
def test_custom_path_gradcheck_and_gradgradcheck(custom_path, case):
    x, w, b = _make(case)
    fn = _ours(case)
    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


def test_second_derivative_matches_torch_r1_style(custom_path):
    # R1 differentiates a gradient norm w.r.t. the input back into the weights.
    case = CASES[1]
    x, w, b = _make(case)
    penalties = []
    for fn in (_ours(case), _reference(case)):
        (gx,) = torch.autograd.grad(fn(x, w, b).square().sum(), x, create_graph=True)
        penalties.append(torch.autograd.grad(gx.square().sum(), w)[0])
    torch.testing.assert_close(penalties[0], penalties[1])


def test_no_weight_gradients_skips_weight_grad(custom_path):
    x, w, b = _make(CASES[0])
    out = conv2d_gradfix.conv2d(x, w, b, padding=1)
    with conv2d_gradfix.no_weight_gradients():
        assert conv2d_gradfix.weight_gradients_disabled is True
        gx, gw = torch.autograd.grad(out.sum(), (x, w), allow_unused=True)
    assert conv2d_gradfix.weight_gradients_disabled is False
    assert gw is None
    torch.testing.assert_close(gx, torch.autograd.grad(F.conv2d(x, w, b, padding=1).sum(), x)[0])


def test_no_weight_gradients_false_is_a_noop():
    with conv2d_gradfix.no_weight_gradients(False):
        assert conv2d_gradfix.weight_gradients_disabled is False
    with conv2d_gradfix.no_weight_gradients():
        with conv2d_gradfix.no_weight_gradients(False):
            assert conv2d_gradfix.weight_gradients_disabled is True


def test_disabled_falls_back_to_torch():
    assert conv2d_gradfix.enabled is False
    x, w, b = _make(CASES[0], dtype=torch.float32)
    out = conv2d_gradfix.conv2d(x, w, b, padding=1)
    assert type(out.grad_fn).__name__ == 'ConvolutionBackward0'
    torch.testing.assert_close(out, F.conv2d(x, w, b, padding=1))


def test_cpu_input_uses_torch_when_only_enabled(monkeypatch):
    monkeypatch.setattr(conv2d_gradfix, 'enabled', True)
    x, w, b = _make(CASES[3], dtype=torch.float32)
    out = conv2d_gradfix.conv_transpose2d(x, w, b, stride=2, padding=1, output_padding=1)
    assert type(out.grad_fn).__name__ == 'ConvolutionBackward0'
    assert out.shape == (2, 3, 8, 8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_cuda_custom_path_double_backward(monkeypatch):
    monkeypatch.setattr(conv2d_gradfix, 'enabled', True)
    for case in CASES:
        x, w, b = (t.detach().cuda().requires_grad_(True) for t in _make(case))
        fn_ours, fn_ref = _ours(case), _reference(case)
        results = []
        for fn in (fn_ours, fn_ref):
            (gx,) = torch.autograd.grad(fn(x, w, b).square().sum(), x, create_graph=True)
            results.append(torch.autograd.grad(gx.square().sum(), (w, x)))
        for got, want in zip(*results):
            torch.testing.assert_close(got, want)
