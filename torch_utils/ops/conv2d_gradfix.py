"""2-D (transposed) convolution with exact second derivatives and an optional skip of weight gradients."""

import contextlib
import dataclasses

import torch
import torch.nn.functional as F

# The training loop turns this on; off by default so importing code (and pickled networks run
# outside training) keeps torch's own convolution.
enabled = False

# While True, backward passes through this module skip the weight-gradient computation. The loss
# sets it around R1 / path-length `autograd.grad` calls, which only need input gradients.
weight_gradients_disabled = False

# The custom path is only worth it on CUDA in training. Tests flip this to exercise the very same
# autograd code on CPU.
_allow_cpu = False


@contextlib.contextmanager
def no_weight_gradients(disable=True):
    """Within the block, backward through conv2d/conv_transpose2d produces no weight gradients."""
    global weight_gradients_disabled
    saved = weight_gradients_disabled
    if disable:
        weight_gradients_disabled = True
    try:
        yield
    finally:
        weight_gradients_disabled = saved


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """Same contract as `torch.nn.functional.conv2d`.

    input [N, C_in, H, W], weight [C_out, C_in/groups, kH, kW], bias [C_out] or None
    -> [N, C_out, H_out, W_out].
    """
    if _custom_path_applies(input):
        spec = _ConvSpec.build(transposed=False, stride=stride, padding=padding, output_padding=0,
                               dilation=dilation, groups=groups)
        return _run_conv(input, weight, bias, spec)
    return F.conv2d(input, weight, bias, stride=stride, padding=padding, dilation=dilation, groups=groups)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """Same contract (and argument order) as `torch.nn.functional.conv_transpose2d`.

    input [N, C_in, H, W], weight [C_in, C_out/groups, kH, kW], bias [C_out] or None
    -> [N, C_out, H_out, W_out].
    """
    if _custom_path_applies(input):
        spec = _ConvSpec.build(transposed=True, stride=stride, padding=padding, output_padding=output_padding,
                               dilation=dilation, groups=groups)
        return _run_conv(input, weight, bias, spec)
    return F.conv_transpose2d(input, weight, bias, stride=stride, padding=padding, output_padding=output_padding,
                              groups=groups, dilation=dilation)


def _custom_path_applies(input):
    if not enabled:
        return False
    if _allow_cpu:
        return True
    return torch.backends.cudnn.enabled and input.device.type == 'cuda'


def _pair(value, what):
    if isinstance(value, str):
        raise ValueError(f'conv2d_gradfix: {what}={value!r} is not supported on the custom path; pass explicit ints')
    if isinstance(value, int):
        return (value, value)
    pair = tuple(int(v) for v in value)
    if len(pair) != 2:
        raise ValueError(f'conv2d_gradfix: {what} must be an int or a pair of ints, got {value!r}')
    return pair


@dataclasses.dataclass(frozen=True)
class _ConvSpec:
    """Everything about a convolution except its tensors; hashable so it can ride through autograd."""
    transposed: bool
    stride: tuple
    padding: tuple
    output_padding: tuple
    dilation: tuple
    groups: int

    @classmethod
    def build(cls, transposed, stride, padding, output_padding, dilation, groups):
        return cls(transposed=bool(transposed), stride=_pair(stride, 'stride'), padding=_pair(padding, 'padding'),
                   output_padding=_pair(output_padding, 'output_padding'), dilation=_pair(dilation, 'dilation'),
                   groups=int(groups))

    def adjoint(self, input_hw, kernel_hw):
        """The convolution that maps output-space gradients back to input space (the transpose operator).

        A strided forward conv loses the remainder of (H + 2p - d(k-1) - 1) / s; the adjoint
        transposed conv needs that remainder as output_padding to land exactly on `input_hw`.
        """
        if self.transposed:
            return dataclasses.replace(self, transposed=False, output_padding=(0, 0))
        remainders = tuple(
            (size + 2 * pad - dil * (k - 1) - 1) % st
            for size, pad, dil, k, st in zip(input_hw, self.padding, self.dilation, kernel_hw, self.stride)
        )
        return dataclasses.replace(self, transposed=True, output_padding=remainders)


def _run_conv(input, weight, bias, spec):
    assert input.ndim == 4, f'conv2d_gradfix expects a 4-D input [N, C, H, W], got shape {tuple(input.shape)}'
    assert weight.ndim == 4, f'conv2d_gradfix expects a 4-D weight, got shape {tuple(weight.shape)}'
    return _Convolution.apply(input, weight, bias, spec)


def _aten_convolution(input, weight, bias, spec):
    return torch.ops.aten.convolution(input, weight, bias, list(spec.stride), list(spec.padding),
                                      list(spec.dilation), spec.transposed, list(spec.output_padding), spec.groups)


class _Convolution(torch.autograd.Function):
    """Convolution whose backward is built from differentiable pieces, so it can be differentiated again."""

    @staticmethod
    def forward(ctx, input, weight, bias, spec):
        ctx.spec = spec
        ctx.input_hw = tuple(input.shape[2:])
        ctx.save_for_backward(input if weight.requires_grad else None,
                              weight if input.requires_grad else None)
        ctx.weight_shape = weight.shape
        return _aten_convolution(input, weight, bias, spec)

    @staticmethod
    def backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        spec = ctx.spec
        grad_input = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_input = _run_conv(grad_output, weight, None, spec.adjoint(ctx.input_hw, weight.shape[2:]))
            assert grad_input.shape[2:] == ctx.input_hw
        if ctx.needs_input_grad[1] and not weight_gradients_disabled:
            grad_weight = _WeightGradient.apply(grad_output, input, ctx.weight_shape, spec)
        if ctx.needs_input_grad[2]:
            grad_bias = grad_output.sum(dim=(0, 2, 3))
        return grad_input, grad_weight, grad_bias, None


class _WeightGradient(torch.autograd.Function):
    """dL/dweight of a convolution given dL/doutput and the input; linear in both, hence differentiable."""

    @staticmethod
    def forward(ctx, grad_output, input, weight_shape, spec):
        ctx.spec = spec
        ctx.input_hw = tuple(input.shape[2:])
        ctx.save_for_backward(grad_output, input)
        # convolution_backward reads only the shape/dtype/device of the weight, so a broadcast
        # zero avoids needing the real weight here.
        shape_carrier = grad_output.new_zeros(()).expand(weight_shape)
        _, grad_weight, _ = torch.ops.aten.convolution_backward(
            grad_output, input, shape_carrier, None, list(spec.stride), list(spec.padding), list(spec.dilation),
            spec.transposed, list(spec.output_padding), spec.groups, [False, True, False])
        return grad_weight

    @staticmethod
    def backward(ctx, grad_grad_weight):
        grad_output, input = ctx.saved_tensors
        spec = ctx.spec
        d_grad_output = d_input = None
        # The weight gradient is <output(input, W), grad_output> differentiated by W, so its
        # derivative along grad_grad_weight is the forward conv with that kernel (w.r.t.
        # grad_output) and the adjoint conv with that kernel (w.r.t. input).
        if ctx.needs_input_grad[0]:
            d_grad_output = _run_conv(input, grad_grad_weight, None, spec)
        if ctx.needs_input_grad[1]:
            d_input = _run_conv(grad_output, grad_grad_weight, None,
                                spec.adjoint(ctx.input_hw, grad_grad_weight.shape[2:]))
        return d_grad_output, d_input, None, None
