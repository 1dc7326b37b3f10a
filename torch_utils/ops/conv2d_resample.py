"""2-D convolution fused with FIR up/downsampling (conv2d_resample), routed to the cheapest equivalent op order."""

import torch

from .. import misc
from . import conv2d_gradfix
from . import upfirdn2d
from .upfirdn2d import _parse_padding, _get_filter_size


def _oriented_weight(w, flip_weight):
    """conv2d correlates; a true convolution (flip_weight=False) needs the kernel rotated by 180 degrees."""
    return w if flip_weight else w.flip([2, 3])


def _transpose_groups(w, groups):
    """[Cout, Cin/g, kh, kw] conv weight -> [Cin, Cout/g, kh, kw] weight for conv_transpose2d."""
    out_channels, in_per_group, kh, kw = w.shape
    w = w.reshape(groups, out_channels // groups, in_per_group, kh, kw)
    return w.transpose(1, 2).reshape(groups * in_per_group, out_channels // groups, kh, kw)


def _footprint_margin(taps, factor, upsampling):
    """Extra (leading, trailing) padding along one axis for a `taps`-long FIR filter that resamples
    by `factor`. Upsampling biases the odd pixel to the front, downsampling to the back; a factor
    of 1 needs nothing."""
    if factor == 1:
        return 0, 0
    excess = taps - factor
    lead = excess + 2 * factor - 1 if upsampling else excess + 1
    return lead // 2, excess // 2


@misc.profiled_function
def conv2d_resample(x, w, f=None, up=1, down=1, padding=0, groups=1, flip_weight=True, flip_filter=False):
    """Upsample by `up`, pad, convolve with `w`, then downsample by `down`, all in one call.

    x: [N, Cin, H, W]; w: [Cout, Cin/groups, kh, kw] with x's dtype; f: float32 filter from
    upfirdn2d.setup_filter() or None; up, down: ints >= 1; padding: int, [x, y] or [x0, x1, y0, y1]
    on the upsampled image. flip_weight=True means torch conv2d semantics (correlation), False a
    true convolution. Upsampling filters with gain up**2; downsampling filters with gain 1.
    Returns [N, Cout, H_out, W_out].
    """
    if not (isinstance(x, torch.Tensor) and x.ndim == 4):
        raise ValueError('x must be a 4-D [N, C, H, W] tensor')
    if not (isinstance(w, torch.Tensor) and w.ndim == 4 and w.dtype == x.dtype):
        raise ValueError(f'w must be a 4-D [Cout, Cin/groups, kh, kw] tensor with dtype {x.dtype}')
    if f is not None and not (isinstance(f, torch.Tensor) and f.ndim in (1, 2) and f.dtype == torch.float32):
        raise ValueError('f must be a float32 filter from upfirdn2d.setup_filter() or None')
    if not (isinstance(up, int) and isinstance(down, int) and up >= 1 and down >= 1):
        raise ValueError(f'up and down must be ints >= 1, got up={up!r}, down={down!r}')
    if not (isinstance(groups, int) and groups >= 1):
        raise ValueError(f'groups must be an int >= 1, got {groups!r}')
    out_channels, in_per_group, kh, kw = w.shape
    if x.shape[1] != in_per_group * groups or out_channels % groups != 0:
        raise ValueError(f'x has {x.shape[1]} channels but w {tuple(w.shape)} with groups={groups} expects '
                         f'{in_per_group * groups} input channels and Cout divisible by groups')
    fw, fh = _get_filter_size(f)
    px0, px1, py0, py1 = _parse_padding(padding)

    # Widen the padding by the filter footprint, so resampling keeps the image centred and sized
    # exactly up (or 1/down) times the input.
    for factor, upsampling in ((up, True), (down, False)):
        lead_x, tail_x = _footprint_margin(fw, factor, upsampling)
        lead_y, tail_y = _footprint_margin(fh, factor, upsampling)
        px0, px1 = px0 + lead_x, px1 + tail_x
        py0, py1 = py0 + lead_y, py1 + tail_y
    pads = [px0, px1, py0, py1]
    pointwise = kw == 1 and kh == 1

    # A 1x1 kernel commutes with any spatial op: run it on whichever side has fewer pixels.
    if pointwise and down > 1 and up == 1:
        x = upfirdn2d.upfirdn2d(x, f, down=down, padding=pads, flip_filter=flip_filter)
        return conv2d_gradfix.conv2d(x, w, groups=groups)
    if pointwise and up > 1 and down == 1:
        x = conv2d_gradfix.conv2d(x, w, groups=groups)
        return upfirdn2d.upfirdn2d(x, f, up=up, padding=pads, gain=up ** 2, flip_filter=flip_filter)

    # Down only: the FIR filter commutes with the convolution, so filter first and let the conv stride.
    if down > 1 and up == 1:
        x = upfirdn2d.upfirdn2d(x, f, padding=pads, flip_filter=flip_filter)
        return conv2d_gradfix.conv2d(x, _oriented_weight(w, flip_weight), stride=down, groups=groups)

    # Up: a strided transposed conv does zero insertion and convolution at once; it produces the
    # full convolution, so the filter step trims (kh - 1) rows in front and (kh - up) behind it.
    if up > 1:
        w_t = _transpose_groups(_oriented_weight(w, not flip_weight), groups)
        trim_x = [px0 - (kw - 1), px1 - (kw - up)]
        trim_y = [py0 - (kh - 1), py1 - (kh - up)]
        # conv_transpose2d can crop symmetrically itself, which saves computing rows we would drop.
        crop_x = max(0, min(-trim_x[0], -trim_x[1]))
        crop_y = max(0, min(-trim_y[0], -trim_y[1]))
        x = conv2d_gradfix.conv_transpose2d(x, w_t, stride=up, padding=[crop_y, crop_x], groups=groups)
        x = upfirdn2d.upfirdn2d(x, f, padding=[trim_x[0] + crop_x, trim_x[1] + crop_x,
                                                 trim_y[0] + crop_y, trim_y[1] + crop_y],
                                gain=up ** 2, flip_filter=flip_filter)
        if down > 1:
            x = upfirdn2d.upfirdn2d(x, f, down=down, flip_filter=flip_filter)
        return x

    # No resampling: plain conv when torch's symmetric padding can express ours.
    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return conv2d_gradfix.conv2d(x, _oriented_weight(w, flip_weight), padding=[py0, px0], groups=groups)

    # General case (asymmetric or negative padding): pad, convolve.
    x = upfirdn2d.upfirdn2d(x, None, padding=pads, flip_filter=flip_filter)
    return conv2d_gradfix.conv2d(x, _oriented_weight(w, flip_weight), groups=groups)
