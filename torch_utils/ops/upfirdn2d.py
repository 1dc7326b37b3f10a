"""Upsample, FIR-filter and downsample 2-D images in one op (upfirdn2d), with a CUDA kernel and a PyTorch reference."""

import dataclasses
import numbers
import os

import torch

from . import conv2d_gradfix

# ----------------------------------------------------------------------------
# Argument parsing shared with conv2d_resample (the names are part of the public surface).


def _as_int_list(value, what, allowed_lengths):
    """Accept an int or a list/tuple of ints (numpy and 0-d tensors included) and return a list."""
    if isinstance(value, numbers.Integral) or (isinstance(value, torch.Tensor) and value.ndim == 0):
        value = [value]
    if not isinstance(value, (list, tuple)) or len(value) not in allowed_lengths:
        raise ValueError(f'{what} must be an int or a list of {" or ".join(map(str, allowed_lengths[1:]))} ints, '
                         f'got {value!r}')
    try:
        return [int(v.__index__()) for v in value]
    except (AttributeError, TypeError):
        raise ValueError(f'{what} must contain only integers, got {value!r}') from None


def _parse_scaling(scaling):
    """Turn an int or [sx, sy] into (sx, sy), each an int >= 1."""
    values = _as_int_list(scaling, 'up/down', (1, 2))
    sx, sy = values * 2 if len(values) == 1 else values
    assert sx >= 1 and sy >= 1, f'up/down factors must be >= 1, got {scaling!r}'
    return sx, sy


def _parse_padding(padding):
    """Turn an int, [x, y] or [x0, x1, y0, y1] into (x0, x1, y0, y1)."""
    values = _as_int_list(padding, 'padding', (1, 2, 4))
    if len(values) == 1:
        values = values * 4
    elif len(values) == 2:
        values = [values[0], values[0], values[1], values[1]]
    px0, px1, py0, py1 = values
    return px0, px1, py0, py1


def _get_filter_size(f):
    """Return (fw, fh) of a filter from setup_filter; a separable filter of n taps is n x n."""
    if f is None:
        return 1, 1
    assert isinstance(f, torch.Tensor) and f.ndim in [1, 2], 'filter must be a 1-D or 2-D tensor or None'
    fw = f.shape[-1]
    fh = f.shape[0]
    assert fw >= 1 and fh >= 1, 'filter must not be empty'
    return int(fw), int(fh)


# ----------------------------------------------------------------------------


def setup_filter(f, device=torch.device('cpu'), normalize=True, flip_filter=False, gain=1, separable=None):
    """Build a float32 FIR filter for upfirdn2d.

    f: list, numpy array or tensor of shape [taps] or [fh, fw]; None means [1].
    separable: None picks separable for 1-D filters with at least 8 taps.
    Returns [fh, fw] (2-D) or [taps] (separable), scaled by gain ** (ndim / 2).
    """
    if f is None:
        f = 1
    taps = torch.as_tensor(f, dtype=torch.float32)
    if taps.ndim == 0:
        taps = taps.reshape(1)
    if taps.ndim not in (1, 2) or taps.numel() == 0:
        raise ValueError(f'filter must be a non-empty 1-D or 2-D array, got shape {tuple(taps.shape)}')
    if separable is None:
        separable = taps.ndim == 1 and taps.numel() >= 8
    if taps.ndim == 1 and not separable:
        taps = torch.outer(taps, taps)
    if separable and taps.ndim != 1:
        raise ValueError('separable=True needs a 1-D filter; pass separable=None or False for a 2-D filter')
    if normalize:
        taps = taps / taps.sum()
    if flip_filter:
        taps = taps.flip(list(range(taps.ndim)))
    taps = taps * (gain ** (taps.ndim / 2))
    return taps.to(device=device)


# ----------------------------------------------------------------------------
# The geometry of one call, and the geometry of its gradient.


@dataclasses.dataclass(frozen=True)
class _Geometry:
    upx: int
    upy: int
    downx: int
    downy: int
    padx0: int
    padx1: int
    pady0: int
    pady1: int

    def output_size(self, in_h, in_w, fh, fw):
        out_w = (in_w * self.upx + self.padx0 + self.padx1 - fw + self.downx) // self.downx
        out_h = (in_h * self.upy + self.pady0 + self.pady1 - fh + self.downy) // self.downy
        return out_h, out_w

    def adjoint(self, in_h, in_w, fh, fw):
        """Geometry whose upfirdn2d (with the filter flipped) maps output gradients to input gradients."""
        out_h, out_w = self.output_size(in_h, in_w, fh, fw)
        # The adjoint walks the same chain backwards: zero-insert by `down`, pad so the flipped filter's
        # full support is covered, then keep every `up`-th sample; the trailing pad makes the sizes meet.
        return _Geometry(
            upx=self.downx, upy=self.downy, downx=self.upx, downy=self.upy,
            padx0=fw - self.padx0 - 1,
            padx1=in_w * self.upx - out_w * self.downx + self.padx0 - self.upx + 1,
            pady0=fh - self.pady0 - 1,
            pady1=in_h * self.upy - out_h * self.downy + self.pady0 - self.upy + 1)


def _check_inputs(x, f):
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f'x must be a 4-D NCHW tensor, got {type(x).__name__} '
                         f'{tuple(x.shape) if isinstance(x, torch.Tensor) else ""}')
    if not x.is_floating_point():
        raise TypeError(f'x must be float16, float32 or float64, got {x.dtype}')
    if f is not None:
        if not isinstance(f, torch.Tensor) or f.ndim not in (1, 2):
            raise ValueError('f must be a 1-D or 2-D tensor from setup_filter(), or None')
        if f.dtype != torch.float32:
            raise TypeError(f'f must be float32 (use setup_filter()), got {f.dtype}')
        if f.requires_grad:
            raise ValueError('f must not require grad: upfirdn2d gives no gradient for the filter')


# ----------------------------------------------------------------------------
# Reference implementation: plain differentiable PyTorch, so derivatives of any order come for free.


def _upfirdn2d_ref(x, f, geom, flip_filter=False, gain=1):
    """Reference upfirdn2d on any device. x: [N, C, H, W], f: [fh, fw], [taps] or None."""
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    batch, channels, in_h, in_w = x.shape

    # Zero insertion: every input sample lands on the top-left corner of its up x up cell.
    if geom.upx > 1 or geom.upy > 1:
        spread = x.new_zeros([batch, channels, in_h * geom.upy, in_w * geom.upx])
        spread[:, :, ::geom.upy, ::geom.upx] = x
        x = spread

    # F.pad crops where a pad is negative, which is exactly the op's definition.
    x = torch.nn.functional.pad(x, [geom.padx0, geom.padx1, geom.pady0, geom.pady1])

    # conv2d correlates, so a true convolution needs the filter flipped first.
    taps = f.to(x.dtype)
    if not flip_filter:
        taps = taps.flip(list(range(taps.ndim)))
    taps = taps * (gain ** (taps.ndim / 2))
    if taps.ndim == 2:
        weight = taps[None, None].expand(channels, 1, *taps.shape)
        return conv2d_gradfix.conv2d(x, weight, stride=(geom.downy, geom.downx), groups=channels)
    across = taps.reshape(1, 1, 1, -1).expand(channels, 1, 1, taps.numel())
    x = conv2d_gradfix.conv2d(x, across, stride=(1, geom.downx), groups=channels)
    down_ = taps.reshape(1, 1, -1, 1).expand(channels, 1, taps.numel(), 1)
    return conv2d_gradfix.conv2d(x, down_, stride=(geom.downy, 1), groups=channels)


# ----------------------------------------------------------------------------
# CUDA implementation.

def _load_plugin():
    """Return the upfirdn2d CUDA plugin, building it on first use; custom_ops caches success and failure."""
    from .. import custom_ops
    return custom_ops.get_plugin(
        module_name='upfirdn2d_plugin',
        sources=['upfirdn2d.cpp', 'upfirdn2d.cu'],
        headers=['upfirdn2d.h'],
        source_dir=os.path.dirname(os.path.abspath(__file__)),
        extra_cuda_cflags=['--use_fast_math'],
    )


def _run_kernel(x, f, geom, flip_filter, gain):
    """Forward through the CUDA plugin; a separable filter runs as a horizontal then a vertical pass."""
    plugin = _load_plugin()
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    f = f.to(device=x.device)
    g = geom
    if f.ndim == 2:
        return plugin.upfirdn2d(x, f, g.upx, g.upy, g.downx, g.downy,
                                g.padx0, g.padx1, g.pady0, g.pady1, flip_filter, float(gain))
    pass_gain = float(gain) ** 0.5
    x = plugin.upfirdn2d(x, f[None, :], g.upx, 1, g.downx, 1, g.padx0, g.padx1, 0, 0, flip_filter, pass_gain)
    return plugin.upfirdn2d(x, f[:, None], 1, g.upy, 1, g.downy, 0, 0, g.pady0, g.pady1, flip_filter, pass_gain)


def _run_reference(x, f, geom, flip_filter, gain):
    """Same contract as _run_kernel, for exercising the autograd wiring without a GPU."""
    with torch.no_grad():
        return _upfirdn2d_ref(x, f, geom, flip_filter, gain)


class _UpFirDn2d(torch.autograd.Function):
    """upfirdn2d whose backward is again this Function, so gradients of every order run the kernel."""

    @staticmethod
    def forward(ctx, x, f, geom, flip_filter, gain, runner):
        y = runner(x, f, geom, flip_filter, gain)
        ctx.save_for_backward(f)
        ctx.setup = (geom, flip_filter, gain, runner, x.shape[2], x.shape[3])
        return y

    @staticmethod
    def backward(ctx, dy):
        f, = ctx.saved_tensors
        geom, flip_filter, gain, runner, in_h, in_w = ctx.setup
        dx = None
        if ctx.needs_input_grad[0]:
            fw, fh = _get_filter_size(f)
            back = geom.adjoint(in_h, in_w, fh, fw)
            dx = _UpFirDn2d.apply(dy, f, back, not flip_filter, gain, runner)
            assert dx.shape[2:] == (in_h, in_w), 'adjoint geometry produced the wrong gradient size'
        return dx, None, None, None, None, None


# ----------------------------------------------------------------------------
# Choosing the implementation.


def _resolve_impl(impl, x):
    """Return 'cuda' or 'ref' for this call through the decision path shared by all ops with kernels."""
    from .. import custom_ops
    return custom_ops.resolve_impl(impl, x, _load_plugin)


# ----------------------------------------------------------------------------
# Public ops.


def upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1, impl='cuda'):
    """Upsample (zero insertion), pad, FIR-filter and downsample a batch of images.

    x: [N, C, H, W] float16/32/64. f: float32 [fh, fw], [taps] (separable) or None (identity).
    up, down: int or [x, y]. padding: int, [x, y] or [x0, x1, y0, y1] on the upsampled grid;
    negative values crop. flip_filter=False convolves, True correlates. The filter is scaled by
    gain ** (f.ndim / 2). Returns [N, C, (H*upy + py0 + py1 - fh + downy) // downy, (same for x)].
    """
    _check_inputs(x, f)
    upx, upy = _parse_scaling(up)
    downx, downy = _parse_scaling(down)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    geom = _Geometry(upx, upy, downx, downy, padx0, padx1, pady0, pady1)
    fw, fh = _get_filter_size(f)
    out_h, out_w = geom.output_size(x.shape[2], x.shape[3], fh, fw)
    if out_h < 1 or out_w < 1:
        raise ValueError(f'upfirdn2d output would be {out_h}x{out_w} for input {tuple(x.shape)}, '
                         f'filter {fh}x{fw}, up {up}, down {down}, padding {padding}: increase the padding')
    if _resolve_impl(impl, x) == 'cuda':
        return _UpFirDn2d.apply(x, f, geom, bool(flip_filter), gain, _run_kernel)
    return _upfirdn2d_ref(x, f, geom, flip_filter=flip_filter, gain=gain)


def filter2d(x, f, padding=0, flip_filter=False, gain=1, impl='cuda'):
    """FIR-filter x with f keeping the size ("same"), plus optional extra padding.

    x: [N, C, H, W]; f: [fh, fw], [taps] or None. Returns [N, C, H + py0 + py1, W + px0 + px1].
    """
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    padding = [padx0 + fw // 2, padx1 + (fw - 1) // 2, pady0 + fh // 2, pady1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=padding, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(x, f, up=2, padding=0, flip_filter=False, gain=1, impl='cuda'):
    """Upsample x by `up` with the interpolation filter f, preserving DC.

    x: [N, C, H, W]. Returns [N, C, H * upy + py0 + py1, W * upx + px0 + px1].
    """
    upx, upy = _parse_scaling(up)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    padding = [padx0 + (fw + upx - 1) // 2, padx1 + (fw - upx) // 2,
               pady0 + (fh + upy - 1) // 2, pady1 + (fh - upy) // 2]
    return upfirdn2d(x, f, up=[upx, upy], padding=padding, flip_filter=flip_filter,
                     gain=gain * upx * upy, impl=impl)


def downsample2d(x, f, down=2, padding=0, flip_filter=False, gain=1, impl='cuda'):
    """Low-pass x with f and keep every `down`-th sample.

    x: [N, C, H, W]. Returns [N, C, (H + py0 + py1) // downy, (W + px0 + px1) // downx].
    """
    downx, downy = _parse_scaling(down)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    padding = [padx0 + (fw - downx + 1) // 2, padx1 + (fw - downx) // 2,
               pady0 + (fh - downy + 1) // 2, pady1 + (fh - downy) // 2]
    return upfirdn2d(x, f, down=[downx, downy], padding=padding, flip_filter=flip_filter, gain=gain, impl=impl)
