"""Fused multiply-add ``a * b + c`` with broadcasting, via addcmul, differentiable to second order."""

import torch


def fma(a, b, c):
    r"""Return ``a * b + c`` (broadcast together) in one addcmul.

    Args:
        a, b, c: Tensors whose shapes broadcast together (e.g. ``x [N,C,H,W]``, ``dcoefs [N,C,1,1]``,
                 ``noise [N,1,H,W]``); same dtype and device.

    Returns:
        Tensor of the broadcast shape. Each gradient is summed back to its own input's shape.
    """
    for name, value in (('a', a), ('b', b), ('c', c)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f'fma: {name} must be a torch.Tensor, got {type(value).__name__}.')
    return _MultiplyAdd.apply(a, b, c)


def _reduce_to(grad, shape):
    """Sum a broadcast gradient back to ``shape`` (leading axes added by broadcasting, then size-1 axes)."""
    extra_axes = grad.ndim - len(shape)
    if extra_axes > 0:
        grad = grad.sum(list(range(extra_axes)))
    squeezed_axes = [axis for axis, size in enumerate(shape) if size == 1 and grad.shape[axis] != 1]
    if squeezed_axes:
        grad = grad.sum(squeezed_axes, keepdim=True)
    assert grad.shape == shape
    return grad


class _MultiplyAdd(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, c):
        out = torch.addcmul(c, a, b)
        ctx.save_for_backward(a, b)
        ctx.shapes = (a.shape, b.shape, c.shape)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        a, b = ctx.saved_tensors
        a_shape, b_shape, c_shape = ctx.shapes
        grad_a = grad_b = grad_c = None
        # Plain differentiable ops, so create_graph=True gives second-order gradients for free.
        if ctx.needs_input_grad[0]:
            grad_a = _reduce_to(grad_out * b, a_shape)
        if ctx.needs_input_grad[1]:
            grad_b = _reduce_to(grad_out * a, b_shape)
        if ctx.needs_input_grad[2]:
            grad_c = _reduce_to(grad_out, c_shape)
        return grad_a, grad_b, grad_c
