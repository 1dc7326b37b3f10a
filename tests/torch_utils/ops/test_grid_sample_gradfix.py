"""Tests for grid_sample_gradfix: values match torch, gradcheck/gradgradcheck w.r.t. input, R1-style double backward."""

import pytest
import torch
import torch.nn.functional as F

from torch_utils.ops import grid_sample_gradfix


@pytest.fixture
def custom_path(monkeypatch):
    monkeypatch.setattr(grid_sample_gradfix, 'enabled', True)


def _inputs(device='cpu', dtype=torch.float64):
    x = torch.randn(2, 3, 5, 4, dtype=dtype, device=device)
    # Some sample points fall outside [-1, 1] to exercise zeros padding.
    grid = (torch.rand(2, 3, 6, 2, dtype=dtype, device=device) * 2.4 - 1.2)
    return x, grid


def _reference(x, grid):
    return F.grid_sample(x, grid, mode='bilinear', padding_mode='zeros', align_corners=False)


def test_values_and_first_derivatives_match_torch(custom_path):
    x, grid = _inputs()
    x.requires_grad_(True)
    grid.requires_grad_(True)
    out = grid_sample_gradfix.grid_sample(x, grid)
    assert type(out.grad_fn).__name__ == '_GridSampleBackward'
    ref = _reference(x, grid)
    torch.testing.assert_close(out, ref)
    upstream = torch.randn_like(out)
    for got, want in zip(torch.autograd.grad(out, (x, grid), upstream), torch.autograd.grad(ref, (x, grid), upstream)):
        torch.testing.assert_close(got, want)


def test_gradcheck_input_and_grid(custom_path):
    x, grid = _inputs()
    x.requires_grad_(True)
    grid.requires_grad_(True)
    assert torch.autograd.gradcheck(grid_sample_gradfix.grid_sample, (x, grid))


def test_gradgradcheck_wrt_input(custom_path):
    x, grid = _inputs()
    x.requires_grad_(True)
    assert torch.autograd.gradgradcheck(lambda inp: grid_sample_gradfix.grid_sample(inp, grid), (x,))


def _sampling_matrix(grid, height, width):
    """Explicit matrix of the (linear) sampling operator, built by sampling every one-hot image."""
    basis = torch.eye(height * width, dtype=grid.dtype).reshape(height * width, 1, height, width)
    columns = _reference(basis, grid[:1].expand(height * width, -1, -1, -1))  # [HW, 1, Ho, Wo]
    return columns.reshape(height * width, -1).T  # [Ho*Wo, H*W]


def test_r1_style_double_backward_matches_explicit_linear_algebra(custom_path):
    x, grid = _inputs()
    x, grid = x[:1].clone().requires_grad_(True), grid[:1]
    weight = torch.randn(3, 3, 6, dtype=torch.float64, requires_grad=True)
    # "Discriminator": sum((S x * w)^2). R1 penalty: |d D / d x|^2, differentiated w.r.t. w.
    score = (grid_sample_gradfix.grid_sample(x, grid)[0] * weight).square().sum()
    (grad_x,) = torch.autograd.grad(score, x, create_graph=True)
    (grad_w,) = torch.autograd.grad(grad_x.square().sum(), weight)

    sampler = _sampling_matrix(grid, 5, 4)  # [18, 20]
    w = weight.detach().clone().requires_grad_(True)
    flat_x = x.detach()[0].reshape(3, 20)
    sampled = flat_x @ sampler.T  # [3, 18]
    manual_grad_x = (2 * w.reshape(3, 18).square() * sampled) @ sampler  # S^T (2 w^2 S x)
    (expected,) = torch.autograd.grad(manual_grad_x.square().sum(), w)
    torch.testing.assert_close(grad_x[0].reshape(3, 20), manual_grad_x.detach())
    torch.testing.assert_close(grad_w, expected)


def test_second_backward_through_grid_is_rejected(custom_path):
    x, grid = _inputs()
    x.requires_grad_(True)
    grid.requires_grad_(True)
    out = grid_sample_gradfix.grid_sample(x, grid)
    (grad_x,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
    with pytest.raises(AssertionError, match='grid'):
        torch.autograd.grad(grad_x.square().sum(), grid)


def test_disabled_uses_torch():
    assert grid_sample_gradfix.enabled is False
    x, grid = _inputs(dtype=torch.float32)
    out = grid_sample_gradfix.grid_sample(x, grid)
    torch.testing.assert_close(out, _reference(x, grid))


def test_bad_shapes_get_clear_error(custom_path):
    with pytest.raises(ValueError, match='grid'):
        grid_sample_gradfix.grid_sample(torch.zeros(1, 1, 4, 4), torch.zeros(1, 4, 2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
def test_cuda_gradgradcheck(custom_path):
    x, grid = _inputs(device='cuda')
    x.requires_grad_(True)
    assert torch.autograd.gradgradcheck(lambda inp: grid_sample_gradfix.grid_sample(inp, grid), (x,))
    out = grid_sample_gradfix.grid_sample(x, grid)
    torch.testing.assert_close(out, _reference(x, grid))
