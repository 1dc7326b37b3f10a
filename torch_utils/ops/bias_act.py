"""Fused bias + activation + gain + clamp (the StyleGAN2 layer epilogue): CUDA kernel plus a pure-PyTorch reference."""

import math
import os
from typing import NamedTuple

import torch
import torch.nn.functional as F

import dnnlib

from .. import custom_ops
from .. import misc

# --------------------------------------------------------------------------------------------------
# Activation table. `func(s, alpha)` is the reference formula; `ref` says which tensor the CUDA backward
# differentiates from ('x' the input, 'y' the output, '' neither); `has_2nd_grad` is False for the
# piecewise-linear activations, whose second derivative is zero almost everywhere.


def _linear(s, alpha):
    return s


def _relu(s, alpha):
    return torch.relu(s)


def _lrelu(s, alpha):
    return F.leaky_relu(s, alpha)


def _tanh(s, alpha):
    return torch.tanh(s)


def _sigmoid(s, alpha):
    return torch.sigmoid(s)


def _elu(s, alpha):
    return F.elu(s)


def _selu(s, alpha):
    return F.selu(s)


def _softplus(s, alpha):
    return F.softplus(s)


def _swish(s, alpha):
    return torch.sigmoid(s) * s


_SQRT2 = math.sqrt(2.0)

activation_funcs = {
    'linear':   dnnlib.EasyDict(func=_linear,   def_alpha=0,   def_gain=1,      cuda_idx=1, ref='',  has_2nd_grad=False),
    'relu':     dnnlib.EasyDict(func=_relu,     def_alpha=0,   def_gain=_SQRT2, cuda_idx=2, ref='y', has_2nd_grad=False),
    'lrelu':    dnnlib.EasyDict(func=_lrelu,    def_alpha=0.2, def_gain=_SQRT2, cuda_idx=3, ref='y', has_2nd_grad=False),
    'tanh':     dnnlib.EasyDict(func=_tanh,     def_alpha=0,   def_gain=1,      cuda_idx=4, ref='y', has_2nd_grad=True),
    'sigmoid':  dnnlib.EasyDict(func=_sigmoid,  def_alpha=0,   def_gain=1,      cuda_idx=5, ref='y', has_2nd_grad=True),
    'elu':      dnnlib.EasyDict(func=_elu,      def_alpha=0,   def_gain=1,      cuda_idx=6, ref='y', has_2nd_grad=True),
    'selu':     dnnlib.EasyDict(func=_selu,     def_alpha=0,   def_gain=1,      cuda_idx=7, ref='y', has_2nd_grad=True),
    'softplus': dnnlib.EasyDict(func=_softplus, def_alpha=0,   def_gain=1,      cuda_idx=8, ref='y', has_2nd_grad=True),
    'swish':    dnnlib.EasyDict(func=_swish,    def_alpha=0,   def_gain=_SQRT2, cuda_idx=9, ref='x', has_2nd_grad=True),
}

_KERNEL_DTYPES = (torch.float16, torch.float32, torch.float64)
_INT32_MAX = 2 ** 31 - 1


def _load_plugin():
    return custom_ops.get_plugin('bias_act_plugin', sources=['bias_act.cpp', 'bias_act.cu'], headers=['bias_act.h'],
                                 source_dir=os.path.dirname(os.path.abspath(__file__)),
                                 extra_cuda_cflags=['--use_fast_math'])


# --------------------------------------------------------------------------------------------------
# Public op.

@misc.profiled_function
def bias_act(x, b=None, dim=1, act='linear', alpha=None, gain=None, clamp=None, impl='cuda'):
    r"""Add a bias along one axis, apply an activation, scale by a gain and clamp, in one fused step.

    Args:
        x:     Input of any shape, float16/float32/float64 (the reference path also takes bfloat16).
        b:     Optional 1-D bias of length ``x.shape[dim]`` with x's dtype, or None.
        dim:   Axis of ``x`` that ``b`` runs along (default 1, the channel axis of NCHW).
        act:   Name from ``activation_funcs`` ('linear', 'relu', 'lrelu', 'tanh', 'sigmoid', 'elu',
               'selu', 'softplus', 'swish').
        alpha: Activation shape parameter (lrelu slope); None uses the table's ``def_alpha``.
        gain:  Output scale; None uses the table's ``def_gain``.
        clamp: If not None (must be >= 0), clamp the scaled output to [-clamp, +clamp]; the gradient
               is zero where the output was clamped.
        impl:  'cuda' (kernel for CUDA tensors when the plugin builds, see custom_ops.resolve_impl) or 'ref'.

    Returns:
        Tensor with x's shape and dtype (channels_last stays channels_last on the CUDA path).
        First- and second-order gradients are supported, third-order gradients are not.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f'bias_act: x must be a torch.Tensor, got {type(x).__name__}.')
    if impl not in ('cuda', 'ref', 'auto'):
        raise ValueError(f"bias_act: unknown impl {impl!r}; use 'cuda' or 'ref'.")
    if act not in activation_funcs:
        raise ValueError(f"bias_act: unknown activation {act!r}; use one of {', '.join(activation_funcs)}.")
    if clamp is not None and not clamp >= 0:
        raise ValueError(f'bias_act: clamp must be None or >= 0, got {clamp}.')
    if not -x.ndim <= dim < x.ndim:
        raise ValueError(f'bias_act: dim={dim} is out of range for a {x.ndim}-D input.')
    dim = dim % x.ndim
    if b is not None:
        if not isinstance(b, torch.Tensor) or b.ndim != 1 or b.shape[0] != x.shape[dim]:
            got = tuple(b.shape) if isinstance(b, torch.Tensor) else type(b).__name__
            raise ValueError(f'bias_act: b must be 1-D with length x.shape[{dim}]={x.shape[dim]}, got {got}.')
        if b.dtype != x.dtype or b.device != x.device:
            raise ValueError(f'bias_act: b is {b.dtype} on {b.device} but x is {x.dtype} on {x.device}; '
                             'cast b with b.to(x.dtype) first.')

    spec = activation_funcs[act]
    alpha = float(spec.def_alpha if alpha is None else alpha)
    gain = float(spec.def_gain if gain is None else gain)
    clamp = float(-1 if clamp is None else clamp)

    kernel_ok = x.dtype in _KERNEL_DTYPES and x.numel() <= _INT32_MAX
    if kernel_ok and custom_ops.resolve_impl(impl, x, _load_plugin) == 'cuda':
        y = _bias_act_cuda(x, b, dim, spec, alpha, gain, clamp)
    else:
        y = _bias_act_ref(x, b, dim, spec, alpha, gain, clamp)
    assert y.shape == x.shape and y.dtype == x.dtype
    return y


# --------------------------------------------------------------------------------------------------
# Reference path: plain torch ops, so autograd provides every order of derivative.

def _bias_act_ref(x, b, dim, spec, alpha, gain, clamp):
    # Half precision is evaluated in float32, as the kernel does, so both paths round once at the end.
    math_dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    s = x.to(math_dtype)
    if b is not None:
        bias_shape = [1] * x.ndim
        bias_shape[dim] = -1
        s = s + b.to(math_dtype).reshape(bias_shape)
    y = spec.func(s, alpha)
    if gain != 1:
        y = y * gain
    if clamp >= 0:
        y = y.clamp(-clamp, clamp)
    return y.to(x.dtype)


# --------------------------------------------------------------------------------------------------
# CUDA path. Two autograd Functions: the op, and its first-order backward, whose own backward gives the
# second order. The kernel contract (what xref / yref mean per grad mode) is documented in bias_act.h.

class _KernelArgs(NamedTuple):
    dim: int
    cuda_idx: int
    ref: str
    has_2nd_grad: bool
    alpha: float
    gain: float
    clamp: float
    memory_format: torch.memory_format


def _launch(cfg, grad_mode, operand, b=None, xref=None, yref=None, dy=None):
    nothing = operand.new_empty([0])
    return _load_plugin().bias_act(operand, nothing if b is None else b, nothing if xref is None else xref,
                                   nothing if yref is None else yref, nothing if dy is None else dy,
                                   grad_mode, cfg.dim, cfg.cuda_idx, cfg.alpha, cfg.gain, cfg.clamp)


def _sum_to_bias(grad, dim):
    other_axes = [axis for axis in range(grad.ndim) if axis != dim]
    return grad.sum(other_axes) if other_axes else grad


class _BiasActKernel(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, cfg):
        y = _launch(cfg, 0, x, b=b)
        keep_input = cfg.ref == 'x'
        # The output also tells the backward where the forward clamped.
        keep_output = cfg.ref == 'y' or (cfg.clamp >= 0 and not keep_input)
        ctx.save_for_backward(x if keep_input else None, b if keep_input else None, y if keep_output else None)
        ctx.cfg = cfg
        return y

    @staticmethod
    def backward(ctx, dy):
        x, b, y = ctx.saved_tensors
        cfg = ctx.cfg
        want_x, want_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not (want_x or want_b):
            return None, None, None
        dy = dy.contiguous(memory_format=cfg.memory_format)
        ds = _BiasActKernelGrad.apply(dy, x, b, y, cfg)
        return (ds if want_x else None), (_sum_to_bias(ds, cfg.dim) if want_b else None), None


class _BiasActKernelGrad(torch.autograd.Function):
    """ds = dy * gain * f'(s) * mask, as a function of (dy, xref, b, yref)."""

    @staticmethod
    def forward(ctx, dy, x, b, y, cfg):
        ds = _launch(cfg, 1, dy, b=b, xref=x, yref=y)
        ctx.save_for_backward(dy, x, b, y)
        ctx.cfg = cfg
        return ds

    @staticmethod
    def backward(ctx, dds):
        dy, x, b, y = ctx.saved_tensors
        cfg = ctx.cfg
        dds = dds.contiguous(memory_format=cfg.memory_format)
        grad_dy = grad_x = grad_b = grad_y = None
        if ctx.needs_input_grad[0]:
            # ds is linear in dy with the same per-element factor.
            grad_dy = _BiasActKernelGrad.apply(dds, x, b, y, cfg)
        if cfg.has_2nd_grad:
            if cfg.ref == 'x' and (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]):
                curvature = _launch(cfg, 2, dds, b=b, xref=x, dy=dy)
                grad_x = curvature if ctx.needs_input_grad[1] else None
                grad_b = _sum_to_bias(curvature, cfg.dim) if ctx.needs_input_grad[2] else None
            elif cfg.ref == 'y' and ctx.needs_input_grad[3]:
                # Routed to y; autograd carries it to x through the first-order backward of the op.
                grad_y = _launch(cfg, 2, dds, yref=y, dy=dy)
        return grad_dy, grad_x, grad_b, grad_y, None


def _bias_act_cuda(x, b, dim, spec, alpha, gain, clamp):
    memory_format = torch.channels_last if (x.ndim == 4 and x.stride(1) == 1) else torch.contiguous_format
    # Differentiable copies outside the Function keep the saved input connected for double backward.
    x = x.contiguous(memory_format=memory_format)
    if b is not None:
        b = b.contiguous()
    cfg = _KernelArgs(dim=dim, cuda_idx=spec.cuda_idx, ref=spec.ref, has_2nd_grad=spec.has_2nd_grad,
                      alpha=alpha, gain=gain, clamp=clamp, memory_format=memory_format)
    return _BiasActKernel.apply(x, b, cfg)
