"""StyleGAN2 generator and discriminator, state-dict compatible with StyleGAN2-ADA pickles."""

# This file is embedded verbatim in every network pickle we write, and NVIDIA's code must be able
# to exec it. It may therefore import only the public upstream op API (torch_utils.misc,
# persistence and ops.{conv2d_resample, upfirdn2d, bias_act, fma}), numpy, torch and the stdlib.
# Gains and other constants are stored as Python floats so that pickles carry no numpy scalars.

import math

import numpy as np
import torch

from torch_utils import misc
from torch_utils import persistence
from torch_utils.ops import bias_act
from torch_utils.ops import conv2d_resample
from torch_utils.ops import fma
from torch_utils.ops import upfirdn2d

_HALF_SQRT = math.sqrt(0.5)  # residual branches are summed with this gain to keep unit variance


def _default_gain(activation):
    # Read as a plain float: the op table may hold numpy scalars.
    return float(bias_act.activation_funcs[activation].def_gain)


def _scaled_clamp(conv_clamp, gain):
    return None if conv_clamp is None else conv_clamp * gain


def _half_precision_wanted(use_fp16, force_fp32, device):
    # fp16 kernels are only worth it (and only well supported) on CUDA; elsewhere every block
    # silently runs in fp32 so that any pickle generates images on a laptop.
    return bool(use_fp16) and not force_fp32 and device.type == 'cuda'


def _layout(channels_last):
    return torch.channels_last if channels_last else torch.contiguous_format

#----------------------------------------------------------------------------


@misc.profiled_function
def normalize_2nd_moment(x, dim=1, eps=1e-8):
    """Scale `x` so that its mean square along `dim` is one."""
    mean_square = x.square().mean(dim=dim, keepdim=True)
    return x * (mean_square + eps).rsqrt()

#----------------------------------------------------------------------------


@misc.profiled_function
def modulated_conv2d(
    x,                      # Input activations [N, in, H, W].
    weight,                 # Shared convolution kernel [out, in, kh, kw].
    styles,                 # Per-sample input-channel scales [N, in].
    noise=None,             # Optional additive noise, broadcastable to the output.
    up=1,                   # Integer upsampling factor.
    down=1,                 # Integer downsampling factor.
    padding=0,              # Padding on the upsampled image.
    resample_filter=None,   # FIR filter from upfirdn2d.setup_filter(), or None.
    demodulate=True,        # Rescale each output channel of the modulated kernel to unit norm?
    flip_weight=True,       # False means true convolution (used when up > 1).
    fused_modconv=True,     # One grouped convolution over the batch instead of scaling x?
):
    """StyleGAN2 weight (de)modulation followed by convolution; returns [N, out, H', W']."""
    num_samples = x.shape[0]
    out_ch, in_ch, k_h, k_w = weight.shape
    misc.assert_shape(weight, [out_ch, in_ch, k_h, k_w])
    misc.assert_shape(x, [num_samples, in_ch, None, None])
    misc.assert_shape(styles, [num_samples, in_ch])

    if x.dtype == torch.float16 and demodulate:
        # The demodulated result is invariant to these rescalings, but they keep the fp16
        # intermediate products far from overflow.
        fan_in_scale = 1.0 / math.sqrt(in_ch * k_h * k_w)
        weight = weight * (fan_in_scale / weight.norm(float('inf'), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float('inf'), dim=1, keepdim=True)

    per_sample_kernel = None
    demod = None
    if demodulate or fused_modconv:
        per_sample_kernel = weight.unsqueeze(0) * styles.reshape(num_samples, 1, in_ch, 1, 1)
    if demodulate:
        demod = (per_sample_kernel.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # [N, out]
    if demodulate and fused_modconv:
        per_sample_kernel = per_sample_kernel * demod.reshape(num_samples, out_ch, 1, 1, 1)

    if not fused_modconv:
        # Modulate activations instead of weights: one shared kernel, cheaper for large batches.
        x = x * styles.to(x.dtype).reshape(num_samples, in_ch, 1, 1)
        x = conv2d_resample.conv2d_resample(x=x, w=weight.to(x.dtype), f=resample_filter,
                                            up=up, down=down, padding=padding, flip_weight=flip_weight)
        if demodulate:
            scale = demod.to(x.dtype).reshape(num_samples, out_ch, 1, 1)
            if noise is not None:
                return fma.fma(x, scale, noise.to(x.dtype))
            return x * scale
        if noise is not None:
            return x.add_(noise.to(x.dtype))
        return x

    # Fused path: fold the batch into channels and run a grouped convolution.
    with misc.suppress_tracer_warnings():
        num_samples = int(num_samples)
    misc.assert_shape(x, [num_samples, in_ch, None, None])
    folded = x.reshape(1, num_samples * in_ch, *x.shape[2:])
    grouped_kernel = per_sample_kernel.reshape(num_samples * out_ch, in_ch, k_h, k_w)
    folded = conv2d_resample.conv2d_resample(x=folded, w=grouped_kernel.to(x.dtype), f=resample_filter,
                                             up=up, down=down, padding=padding, groups=num_samples,
                                             flip_weight=flip_weight)
    out = folded.reshape(num_samples, out_ch, *folded.shape[2:])
    if noise is not None:
        out = out.add_(noise)
    return out

#----------------------------------------------------------------------------


@persistence.persistent_class
class FullyConnectedLayer(torch.nn.Module):
    """Dense layer with equalised learning rate: weights are stored at unit scale and rescaled per call."""

    def __init__(self,
        in_features,            # Input width.
        out_features,           # Output width.
        bias=True,              # Learn an additive bias?
        activation='linear',    # Name of a bias_act activation.
        lr_multiplier=1,        # Learning-rate multiplier for this layer.
        bias_init=0,            # Initial bias value.
    ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        # Storing weight / lr_mul and multiplying it back at run time scales the effective step size.
        self.weight = torch.nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = torch.nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = float(lr_multiplier) / math.sqrt(in_features)
        self.bias_gain = float(lr_multiplier)

    def forward(self, x):
        scaled_weight = self.weight.to(x.dtype) * self.weight_gain
        scaled_bias = self.bias
        if scaled_bias is not None:
            scaled_bias = scaled_bias.to(x.dtype)
            if self.bias_gain != 1:
                scaled_bias = scaled_bias * self.bias_gain
        if self.activation == 'linear' and scaled_bias is not None:
            return torch.addmm(scaled_bias.unsqueeze(0), x, scaled_weight.t())
        return bias_act.bias_act(x.matmul(scaled_weight.t()), scaled_bias, act=self.activation)

    def extra_repr(self):
        return f'in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}'

#----------------------------------------------------------------------------


@persistence.persistent_class
class Conv2dLayer(torch.nn.Module):
    """Convolution with equalised learning rate, optional FIR up/downsampling, bias, activation and clamp."""

    def __init__(self,
        in_channels,                    # Input channels.
        out_channels,                   # Output channels.
        kernel_size,                    # Square kernel width.
        bias=True,                      # Learn a per-channel bias?
        activation='linear',            # Name of a bias_act activation.
        up=1,                           # Integer upsampling factor.
        down=1,                         # Integer downsampling factor.
        resample_filter=[1, 3, 3, 1],   # Low-pass FIR taps used when resampling.
        conv_clamp=None,                # Clamp outputs to +-this value (None = no clamp).
        channels_last=False,            # Keep the weight in channels_last layout?
        trainable=True,                 # False registers weight and bias as buffers (frozen layers).
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.act_gain = _default_gain(activation)

        init_weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size])
        init_weight = init_weight.to(memory_format=_layout(channels_last))
        init_bias = torch.zeros([out_channels]) if bias else None
        if trainable:
            self.weight = torch.nn.Parameter(init_weight)
            self.bias = torch.nn.Parameter(init_bias) if init_bias is not None else None
        else:
            # Same names as parameters, so copy-by-name from a trainable network still works.
            self.register_buffer('weight', init_weight)
            if init_bias is not None:
                self.register_buffer('bias', init_bias)
            else:
                self.bias = None

    def forward(self, x, gain=1):
        kernel = (self.weight * self.weight_gain).to(x.dtype)
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        x = conv2d_resample.conv2d_resample(x=x, w=kernel, f=self.resample_filter, up=self.up, down=self.down,
                                            padding=self.padding, flip_weight=(self.up == 1))
        return bias_act.bias_act(x, bias, act=self.activation, gain=self.act_gain * gain,
                                 clamp=_scaled_clamp(self.conv_clamp, gain))

    def extra_repr(self):
        return (f'in_channels={self.in_channels}, out_channels={self.out_channels}, activation={self.activation}, '
                f'up={self.up}, down={self.down}')

#----------------------------------------------------------------------------


@persistence.persistent_class
class MappingNetwork(torch.nn.Module):
    """Maps (z, c) to intermediate latents w, tracks their running mean and applies truncation."""

    def __init__(self,
        z_dim,                  # Latent z width; 0 = no latent input.
        c_dim,                  # Conditioning label width; 0 = unconditional.
        w_dim,                  # Output w width.
        num_ws,                 # Number of copies of w to output; None = return [N, w_dim].
        num_layers=8,           # Number of dense layers.
        embed_features=None,    # Label embedding width; None = w_dim.
        layer_features=None,    # Hidden width; None = w_dim.
        activation='lrelu',     # Activation of the dense layers.
        lr_multiplier=0.01,     # Learning-rate multiplier of the dense layers.
        w_avg_beta=0.995,       # Decay of the running w average; None = do not track it.
    ):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta

        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        widths = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]

        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for index, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
            layer = FullyConnectedLayer(fan_in, fan_out, activation=activation, lr_multiplier=lr_multiplier)
            setattr(self, f'fc{index}', layer)

        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer('w_avg', torch.zeros([w_dim]))

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, skip_w_avg_update=False):
        parts = []
        with torch.autograd.profiler.record_function('input'):
            if self.z_dim > 0:
                misc.assert_shape(z, [None, self.z_dim])
                parts.append(normalize_2nd_moment(z.to(torch.float32)))
            if self.c_dim > 0:
                misc.assert_shape(c, [None, self.c_dim])
                parts.append(normalize_2nd_moment(self.embed(c.to(torch.float32))))
        w = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

        for index in range(self.num_layers):
            w = getattr(self, f'fc{index}')(w)

        if self.w_avg_beta is not None and self.training and not skip_w_avg_update:
            with torch.autograd.profiler.record_function('update_w_avg'):
                batch_mean = w.detach().mean(dim=0)
                self.w_avg.copy_(batch_mean.lerp(self.w_avg, self.w_avg_beta))

        if self.num_ws is not None:
            with torch.autograd.profiler.record_function('broadcast'):
                w = w.unsqueeze(1).repeat([1, self.num_ws, 1])

        if truncation_psi != 1:
            with torch.autograd.profiler.record_function('truncate'):
                assert self.w_avg_beta is not None, 'truncation needs a tracked w_avg (w_avg_beta is None)'
                if self.num_ws is None or truncation_cutoff is None:
                    w = self.w_avg.lerp(w, truncation_psi)
                else:
                    w[:, :truncation_cutoff] = self.w_avg.lerp(w[:, :truncation_cutoff], truncation_psi)
        return w

    def extra_repr(self):
        return f'z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}'

#----------------------------------------------------------------------------


@persistence.persistent_class
class SynthesisLayer(torch.nn.Module):
    """Style-modulated 3x3 convolution with per-pixel noise, bias and activation."""

    def __init__(self,
        in_channels,                    # Input channels.
        out_channels,                   # Output channels.
        w_dim,                          # Width of w.
        resolution,                     # Output resolution.
        kernel_size=3,                  # Square kernel width.
        up=1,                           # Integer upsampling factor.
        use_noise=True,                 # Add per-pixel noise?
        activation='lrelu',             # Name of a bias_act activation.
        resample_filter=[1, 3, 3, 1],   # Low-pass FIR taps used when upsampling.
        conv_clamp=None,                # Clamp outputs to +-this value (None = no clamp).
        channels_last=False,            # Keep the weight in channels_last layout?
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.act_gain = _default_gain(activation)

        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        init_weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size])
        self.weight = torch.nn.Parameter(init_weight.to(memory_format=_layout(channels_last)))
        if use_noise:
            self.register_buffer('noise_const', torch.randn([resolution, resolution]))
            self.noise_strength = torch.nn.Parameter(torch.zeros([]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x, w, noise_mode='random', fused_modconv=True, gain=1):
        if noise_mode not in ('random', 'const', 'none'):
            raise ValueError(f"noise_mode must be 'random', 'const' or 'none', got {noise_mode!r}")
        input_res = self.resolution // self.up
        misc.assert_shape(x, [None, self.weight.shape[1], input_res, input_res])
        styles = self.affine(w)

        noise = None
        if self.use_noise and noise_mode == 'random':
            fresh = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device)
            noise = fresh * self.noise_strength
        elif self.use_noise and noise_mode == 'const':
            noise = self.noise_const * self.noise_strength

        x = modulated_conv2d(x=x, weight=self.weight, styles=styles, noise=noise, up=self.up,
                             padding=self.padding, resample_filter=self.resample_filter,
                             flip_weight=(self.up == 1), fused_modconv=fused_modconv)
        return bias_act.bias_act(x, self.bias.to(x.dtype), act=self.activation, gain=self.act_gain * gain,
                                 clamp=_scaled_clamp(self.conv_clamp, gain))

    def extra_repr(self):
        return (f'in_channels={self.in_channels}, out_channels={self.out_channels}, w_dim={self.w_dim}, '
                f'resolution={self.resolution}, up={self.up}, activation={self.activation}')

#----------------------------------------------------------------------------


@persistence.persistent_class
class ToRGBLayer(torch.nn.Module):
    """Modulated 1x1 projection to image channels (no demodulation), linear with optional clamp."""

    def __init__(self, in_channels, out_channels, w_dim, kernel_size=1, conv_clamp=None, channels_last=False):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        init_weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size])
        self.weight = torch.nn.Parameter(init_weight.to(memory_format=_layout(channels_last)))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        # Without demodulation the equalised-lr scale has to go onto the styles instead.
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)

    def forward(self, x, w, fused_modconv=True):
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x=x, weight=self.weight, styles=styles, demodulate=False, fused_modconv=fused_modconv)
        return bias_act.bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)

    def extra_repr(self):
        return f'in_channels={self.in_channels}, out_channels={self.out_channels}, w_dim={self.w_dim}'

#----------------------------------------------------------------------------


@persistence.persistent_class
class SynthesisBlock(torch.nn.Module):
    """One generator resolution: (upsampling) conv0, conv1, and the image output for its architecture."""

    def __init__(self,
        in_channels,                    # Channels from the previous block; 0 = first block (learned constant).
        out_channels,                   # Channels of this block.
        w_dim,                          # Width of w.
        resolution,                     # Resolution of this block.
        img_channels,                   # Image channels.
        is_last,                        # Highest-resolution block?
        architecture='skip',            # 'orig', 'skip' or 'resnet'.
        resample_filter=[1, 3, 3, 1],   # Low-pass FIR taps used when upsampling.
        conv_clamp=None,                # Clamp conv outputs to +-this value (None = no clamp).
        use_fp16=False,                 # Run in fp16 (on CUDA)?
        fp16_channels_last=False,       # Use channels_last together with fp16?
        **layer_kwargs,                 # Forwarded to SynthesisLayer.
    ):
        if architecture not in ('orig', 'skip', 'resnet'):
            raise ValueError(f"architecture must be 'orig', 'skip' or 'resnet', got {architecture!r}")
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = (use_fp16 and fp16_channels_last)
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))

        self.num_conv = 0
        self.num_torgb = 0
        if in_channels == 0:
            self.const = torch.nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim=w_dim, resolution=resolution, up=2,
                                        resample_filter=resample_filter, conv_clamp=conv_clamp,
                                        channels_last=self.channels_last, **layer_kwargs)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim=w_dim, resolution=resolution,
                                    conv_clamp=conv_clamp, channels_last=self.channels_last, **layer_kwargs)
        self.num_conv += 1
        if is_last or architecture == 'skip':
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp,
                                    channels_last=self.channels_last)
            self.num_torgb += 1
        if in_channels != 0 and architecture == 'resnet':
            self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1, bias=False, up=2,
                                    resample_filter=resample_filter, channels_last=self.channels_last)

    def forward(self, x, img, ws, force_fp32=False, fused_modconv=None, **layer_kwargs):
        misc.assert_shape(ws, [None, self.num_conv + self.num_torgb, self.w_dim])
        ws_per_layer = iter(ws.unbind(dim=1))
        device = self.const.device if self.in_channels == 0 else x.device
        half = _half_precision_wanted(self.use_fp16, force_fp32, device)
        dtype = torch.float16 if half else torch.float32
        layout = _layout(self.channels_last and half)
        if fused_modconv is None:
            with misc.suppress_tracer_warnings():
                fused_modconv = (not self.training) and (dtype == torch.float32 or int(ws.shape[0]) == 1)

        if self.in_channels == 0:
            x = self.const.to(dtype).unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
            x = x.to(memory_format=layout)
            x = self.conv1(x, next(ws_per_layer), fused_modconv=fused_modconv, **layer_kwargs)
        else:
            half_res = self.resolution // 2
            misc.assert_shape(x, [None, self.in_channels, half_res, half_res])
            x = x.to(dtype=dtype, memory_format=layout)
            if self.architecture == 'resnet':
                shortcut = self.skip(x, gain=_HALF_SQRT)
                x = self.conv0(x, next(ws_per_layer), fused_modconv=fused_modconv, **layer_kwargs)
                x = self.conv1(x, next(ws_per_layer), fused_modconv=fused_modconv, gain=_HALF_SQRT, **layer_kwargs)
                x = shortcut.add_(x)
            else:
                x = self.conv0(x, next(ws_per_layer), fused_modconv=fused_modconv, **layer_kwargs)
                x = self.conv1(x, next(ws_per_layer), fused_modconv=fused_modconv, **layer_kwargs)

        if img is not None:
            half_res = self.resolution // 2
            misc.assert_shape(img, [None, self.img_channels, half_res, half_res])
            img = upfirdn2d.upsample2d(img, self.resample_filter)
        if self.is_last or self.architecture == 'skip':
            rgb = self.torgb(x, next(ws_per_layer), fused_modconv=fused_modconv)
            rgb = rgb.to(dtype=torch.float32, memory_format=torch.contiguous_format)
            img = rgb if img is None else img.add_(rgb)

        assert x.dtype == dtype
        assert img is None or img.dtype == torch.float32
        return x, img

    def extra_repr(self):
        return f'resolution={self.resolution}, architecture={self.architecture}, use_fp16={self.use_fp16}'

#----------------------------------------------------------------------------


@persistence.persistent_class
class SynthesisNetwork(torch.nn.Module):
    """Stack of SynthesisBlocks from 4x4 up to img_resolution; maps ws [N, num_ws, w_dim] to images."""

    def __init__(self,
        w_dim,                  # Width of w.
        img_resolution,         # Output resolution (power of two, >= 4).
        img_channels,           # Output channels.
        channel_base=32768,     # Channels at resolution r are min(channel_base // r, channel_max).
        channel_max=512,        # Upper bound on channels per block.
        num_fp16_res=0,         # Run this many of the highest resolutions in fp16.
        **block_kwargs,         # Forwarded to SynthesisBlock.
    ):
        log2_res = int(np.log2(img_resolution)) if img_resolution > 0 else 0
        if img_resolution < 4 or 2 ** log2_res != img_resolution:
            raise ValueError(f'img_resolution must be a power of two >= 4, got {img_resolution}')
        super().__init__()
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = log2_res
        self.img_channels = img_channels
        self.block_resolutions = [2 ** k for k in range(2, log2_res + 1)]
        width = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        lowest_fp16_res = max(2 ** (log2_res + 1 - num_fp16_res), 8)

        self.num_ws = 0
        for res in self.block_resolutions:
            is_last = (res == img_resolution)
            block = SynthesisBlock(width[res // 2] if res > 4 else 0, width[res], w_dim=w_dim, resolution=res,
                                   img_channels=img_channels, is_last=is_last,
                                   use_fp16=(res >= lowest_fp16_res), **block_kwargs)
            # Each block's ToRGB shares its w with the next block's conv0, so only the last one adds a w.
            self.num_ws += block.num_conv + (block.num_torgb if is_last else 0)
            setattr(self, f'b{res}', block)

    def forward(self, ws, **block_kwargs):
        with torch.autograd.profiler.record_function('split_ws'):
            misc.assert_shape(ws, [None, self.num_ws, self.w_dim])
            ws = ws.to(torch.float32)
            ws_of_block = []
            start = 0
            for res in self.block_resolutions:
                block = getattr(self, f'b{res}')
                ws_of_block.append(ws.narrow(1, start, block.num_conv + block.num_torgb))
                start += block.num_conv

        x = img = None
        for res, block_ws in zip(self.block_resolutions, ws_of_block):
            x, img = getattr(self, f'b{res}')(x, img, block_ws, **block_kwargs)
        return img

    def extra_repr(self):
        return f'w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}'

#----------------------------------------------------------------------------


@persistence.persistent_class
class Generator(torch.nn.Module):
    """StyleGAN2 generator: MappingNetwork followed by SynthesisNetwork; returns NCHW float32 images."""

    def __init__(self,
        z_dim,                  # Latent z width.
        c_dim,                  # Conditioning label width; 0 = unconditional.
        w_dim,                  # Intermediate latent width.
        img_resolution,         # Output resolution.
        img_channels,           # Output channels.
        mapping_kwargs={},      # Forwarded to MappingNetwork.
        synthesis_kwargs={},    # Forwarded to SynthesisNetwork.
    ):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        # Registration order (synthesis before mapping) fixes named_parameters() order, as upstream.
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                                          **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **mapping_kwargs)

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, **synthesis_kwargs):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, **synthesis_kwargs)

#----------------------------------------------------------------------------


@persistence.persistent_class
class DiscriminatorBlock(torch.nn.Module):
    """One discriminator resolution: (fromrgb), conv0, downsampling conv1, and a resnet shortcut."""

    def __init__(self,
        in_channels,                    # Channels from the previous block; 0 = first block (reads the image).
        tmp_channels,                   # Channels of conv0.
        out_channels,                   # Channels after downsampling.
        resolution,                     # Input resolution of this block.
        img_channels,                   # Image channels.
        first_layer_idx,                # Index of this block's first layer, for freezing.
        architecture='resnet',          # 'orig', 'skip' or 'resnet'.
        activation='lrelu',             # Name of a bias_act activation.
        resample_filter=[1, 3, 3, 1],   # Low-pass FIR taps used when downsampling.
        conv_clamp=None,                # Clamp conv outputs to +-this value (None = no clamp).
        use_fp16=False,                 # Run in fp16 (on CUDA)?
        fp16_channels_last=False,       # Use channels_last together with fp16?
        freeze_layers=0,                # Layers with index below this are frozen (stored as buffers).
    ):
        if in_channels not in (0, tmp_channels):
            raise ValueError(f'in_channels must be 0 or tmp_channels ({tmp_channels}), got {in_channels}')
        if architecture not in ('orig', 'skip', 'resnet'):
            raise ValueError(f"architecture must be 'orig', 'skip' or 'resnet', got {architecture!r}")
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.first_layer_idx = first_layer_idx
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = (use_fp16 and fp16_channels_last)
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))

        self.num_layers = 0

        def next_layer_trainable():
            # Layers are numbered across the whole D, highest resolution first.
            trainable = (first_layer_idx + self.num_layers) >= freeze_layers
            self.num_layers += 1
            return trainable

        common = dict(activation=activation, conv_clamp=conv_clamp, channels_last=self.channels_last)
        if in_channels == 0 or architecture == 'skip':
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, kernel_size=1,
                                       trainable=next_layer_trainable(), **common)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, kernel_size=3, trainable=next_layer_trainable(), **common)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, kernel_size=3, down=2, resample_filter=resample_filter,
                                 trainable=next_layer_trainable(), **common)
        if architecture == 'resnet':
            self.skip = Conv2dLayer(tmp_channels, out_channels, kernel_size=1, bias=False, down=2,
                                    resample_filter=resample_filter, trainable=next_layer_trainable(),
                                    channels_last=self.channels_last)

    def forward(self, x, img, force_fp32=False):
        device = (x if x is not None else img).device
        half = _half_precision_wanted(self.use_fp16, force_fp32, device)
        dtype = torch.float16 if half else torch.float32
        layout = _layout(self.channels_last and half)

        if x is not None:
            misc.assert_shape(x, [None, self.in_channels, self.resolution, self.resolution])
            x = x.to(dtype=dtype, memory_format=layout)

        if self.in_channels == 0 or self.architecture == 'skip':
            misc.assert_shape(img, [None, self.img_channels, self.resolution, self.resolution])
            img = img.to(dtype=dtype, memory_format=layout)
            from_image = self.fromrgb(img)
            x = from_image if x is None else x + from_image
            img = upfirdn2d.downsample2d(img, self.resample_filter) if self.architecture == 'skip' else None

        if self.architecture == 'resnet':
            shortcut = self.skip(x, gain=_HALF_SQRT)
            x = self.conv0(x)
            x = self.conv1(x, gain=_HALF_SQRT)
            x = shortcut.add_(x)
        else:
            x = self.conv1(self.conv0(x))

        assert x.dtype == dtype
        return x, img

    def extra_repr(self):
        return f'resolution={self.resolution}, architecture={self.architecture}, use_fp16={self.use_fp16}'

#----------------------------------------------------------------------------


@persistence.persistent_class
class MinibatchStdLayer(torch.nn.Module):
    """Appends the per-group standard deviation of features as extra channels (mode-collapse signal)."""

    def __init__(self, group_size, num_channels=1):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x):
        batch, channels, height, width = x.shape
        with misc.suppress_tracer_warnings():
            if self.group_size is None:
                group = batch
            else:
                group = torch.min(torch.as_tensor(self.group_size), torch.as_tensor(batch))
        feats = self.num_channels
        # Sample i belongs to group member i // (batch / group) and column i % (batch / group).
        stats = x.reshape(group, -1, feats, channels // feats, height, width)
        stats = stats - stats.mean(dim=0)
        stats = (stats.square().mean(dim=0) + 1e-8).sqrt()     # [batch/group, F, C/F, H, W]
        stats = stats.mean(dim=[2, 3, 4]).reshape(-1, feats, 1, 1)
        stats = stats.repeat(group, 1, height, width)
        return torch.cat([x, stats], dim=1)

    def extra_repr(self):
        return f'group_size={self.group_size}, num_channels={self.num_channels}'

#----------------------------------------------------------------------------


@persistence.persistent_class
class DiscriminatorEpilogue(torch.nn.Module):
    """Final 4x4 stage of D: minibatch std, conv, dense (the penultimate feature `fc`) and output."""

    def __init__(self,
        in_channels,            # Input channels.
        cmap_dim,               # Width of the label projection; 0 = unconditional.
        resolution,             # Input resolution (4).
        img_channels,           # Image channels.
        architecture='resnet',  # 'orig', 'skip' or 'resnet'.
        mbstd_group_size=4,     # Group size for minibatch std; None = whole batch.
        mbstd_num_channels=1,   # Minibatch std channels; 0 = disabled.
        activation='lrelu',     # Name of a bias_act activation.
        conv_clamp=None,        # Clamp conv outputs to +-this value (None = no clamp).
    ):
        if architecture not in ('orig', 'skip', 'resnet'):
            raise ValueError(f"architecture must be 'orig', 'skip' or 'resnet', got {architecture!r}")
        super().__init__()
        self.in_channels = in_channels
        self.cmap_dim = cmap_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.architecture = architecture

        if architecture == 'skip':
            self.fromrgb = Conv2dLayer(img_channels, in_channels, kernel_size=1, activation=activation,
                                       conv_clamp=conv_clamp)
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, kernel_size=3,
                                activation=activation, conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * resolution * resolution, in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, cmap_dim if cmap_dim > 0 else 1)

    def forward(self, x, img, cmap, force_fp32=False):
        del force_fp32  # the epilogue always runs in fp32
        misc.assert_shape(x, [None, self.in_channels, self.resolution, self.resolution])
        x = x.to(dtype=torch.float32, memory_format=torch.contiguous_format)
        if self.architecture == 'skip':
            misc.assert_shape(img, [None, self.img_channels, self.resolution, self.resolution])
            img = img.to(dtype=torch.float32, memory_format=torch.contiguous_format)
            x = x + self.fromrgb(img)

        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        x = self.out(x)

        if self.cmap_dim > 0:
            # Projection discriminator: score = <out, label embedding> / sqrt(dim).
            misc.assert_shape(cmap, [None, self.cmap_dim])
            x = (x * cmap).sum(dim=1, keepdim=True) * (1.0 / math.sqrt(self.cmap_dim))
        assert x.dtype == torch.float32
        return x

    def extra_repr(self):
        return f'resolution={self.resolution}, architecture={self.architecture}'

#----------------------------------------------------------------------------


@persistence.persistent_class
class Discriminator(torch.nn.Module):
    """StyleGAN2 discriminator: blocks from img_resolution down to 8, then the 4x4 epilogue; returns [N, 1]."""

    def __init__(self,
        c_dim,                  # Conditioning label width; 0 = unconditional.
        img_resolution,         # Input resolution (power of two, >= 4).
        img_channels,           # Input channels.
        architecture='resnet',  # 'orig', 'skip' or 'resnet'.
        channel_base=32768,     # Channels at resolution r are min(channel_base // r, channel_max).
        channel_max=512,        # Upper bound on channels per block.
        num_fp16_res=0,         # Run this many of the highest resolutions in fp16.
        conv_clamp=None,        # Clamp conv outputs to +-this value (None = no clamp).
        cmap_dim=None,          # Label projection width; None = channels at 4x4.
        block_kwargs={},        # Forwarded to DiscriminatorBlock.
        mapping_kwargs={},      # Forwarded to the label MappingNetwork.
        epilogue_kwargs={},     # Forwarded to DiscriminatorEpilogue.
    ):
        log2_res = int(np.log2(img_resolution)) if img_resolution > 0 else 0
        if img_resolution < 4 or 2 ** log2_res != img_resolution:
            raise ValueError(f'img_resolution must be a power of two >= 4, got {img_resolution}')
        super().__init__()
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = log2_res
        self.img_channels = img_channels
        self.block_resolutions = [2 ** k for k in range(log2_res, 2, -1)]
        width = {res: min(channel_base // res, channel_max) for res in self.block_resolutions + [4]}
        lowest_fp16_res = max(2 ** (log2_res + 1 - num_fp16_res), 8)

        if cmap_dim is None:
            cmap_dim = width[4]
        if c_dim == 0:
            cmap_dim = 0

        shared = dict(img_channels=img_channels, architecture=architecture, conv_clamp=conv_clamp)
        layer_index = 0
        for res in self.block_resolutions:
            block = DiscriminatorBlock(width[res] if res < img_resolution else 0, width[res], width[res // 2],
                                       resolution=res, first_layer_idx=layer_index,
                                       use_fp16=(res >= lowest_fp16_res), **block_kwargs, **shared)
            setattr(self, f'b{res}', block)
            layer_index += block.num_layers
        if c_dim > 0:
            self.mapping = MappingNetwork(z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None, w_avg_beta=None,
                                          **mapping_kwargs)
        self.b4 = DiscriminatorEpilogue(width[4], cmap_dim=cmap_dim, resolution=4, **epilogue_kwargs, **shared)

    def forward(self, img, c, **block_kwargs):
        misc.assert_shape(img, [None, self.img_channels, self.img_resolution, self.img_resolution])
        x = None
        for res in self.block_resolutions:
            x, img = getattr(self, f'b{res}')(x, img, **block_kwargs)
        cmap = self.mapping(None, c) if self.c_dim > 0 else None
        return self.b4(x, img, cmap)

    def extra_repr(self):
        return f'c_dim={self.c_dim}, img_resolution={self.img_resolution}'

#----------------------------------------------------------------------------
