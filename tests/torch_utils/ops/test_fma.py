"""Tests for torch_utils.ops.fma: values, broadcasting, and first/second derivatives."""

import pytest
import torch

from torch_utils.ops.fma import fma

BROADCAST_CASES = [
    ((2, 3, 4, 4), (2, 3, 1, 1), (2, 1, 4, 4)),   # modconv: x * dcoefs + noise
    ((2, 3, 4, 4), (2, 3, 1, 1), (4, 4)),         # noise without batch/channel axes
    ((3, 1), (1, 5), (5,)),
    ((4,), (4,), (4,)),
    ((1,), (2, 3), (1, 3)),
]


@pytest.mark.parametrize('shape_a,shape_b,shape_c', BROADCAST_CASES)
def test_values_match_multiply_add(shape_a, shape_b, shape_c):
    a, b, c = (torch.randn(s, dtype=torch.float64) for s in (shape_a, shape_b, shape_c))
    out = fma(a, b, c)
    assert out.shape == torch.broadcast_shapes(shape_a, shape_b, shape_c)
    torch.testing.assert_close(out, a * b + c, rtol=1e-12, atol=1e-12)


def test_known_values():
    out = fma(torch.tensor([1.0, 2.0]), torch.tensor([3.0]), torch.tensor([[10.0], [20.0]]))
    torch.testing.assert_close(out, torch.tensor([[13.0, 16.0], [23.0, 26.0]]))


@pytest.mark.parametrize('shape_a,shape_b,shape_c', BROADCAST_CASES)
def test_gradients_have_input_shapes_and_values(shape_a, shape_b, shape_c):
    a, b, c = (torch.randn(s, dtype=torch.float64, requires_grad=True) for s in (shape_a, shape_b, shape_c))
    weight = torch.randn(torch.broadcast_shapes(shape_a, shape_b, shape_c), dtype=torch.float64)
    got = torch.autograd.grad((fma(a, b, c) * weight).sum(), [a, b, c])
    want = torch.autograd.grad(((a * b + c) * weight).sum(), [a, b, c])
    for g, w, t in zip(got, want, (a, b, c)):
        assert g.shape == t.shape
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('shape_a,shape_b,shape_c', BROADCAST_CASES)
def test_gradcheck_and_gradgradcheck(shape_a, shape_b, shape_c):
    inputs = tuple(torch.randn(s, dtype=torch.float64, requires_grad=True) for s in (shape_a, shape_b, shape_c))
    assert torch.autograd.gradcheck(fma, inputs)
    assert torch.autograd.gradgradcheck(fma, inputs)


def test_second_derivative_value():
    # d/da of sum((d fma / d b)^2) with out = a*b + c: d(sum(a)^2 per b)/da = 2 * a (b scalar-broadcast).
    a = torch.randn(5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(1, dtype=torch.float64, requires_grad=True)
    c = torch.randn(5, dtype=torch.float64)
    (gb,) = torch.autograd.grad(fma(a, b, c).sum(), b, create_graph=True)
    (gga,) = torch.autograd.grad(gb.square().sum(), a)
    torch.testing.assert_close(gga, torch.full_like(a, 2 * a.sum().item()))


def test_only_requested_gradients():
    a = torch.randn(3, requires_grad=True)
    b = torch.randn(3)
    c = torch.randn(3)
    fma(a, b, c).sum().backward()
    torch.testing.assert_close(a.grad, b)


def test_rejects_non_tensors():
    with pytest.raises(TypeError, match='fma: b must be a torch.Tensor'):
        fma(torch.ones(2), 2.0, torch.ones(2))
