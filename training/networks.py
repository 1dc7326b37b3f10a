"""StyleGAN2 generator and discriminator (Karras et al., CVPR 2020), state-dict compatible with StyleGAN2-ADA pickles."""

# This file is embedded verbatim in every network pickle we write, and NVIDIA's code must be able
# to exec it. It may therefore import only the public upstream op API (torch_utils.misc,
# persistence and ops.{conv2d_resample, upfirdn2d, bias_act, fma}), numpy, torch and the stdlib.
# Gains and other constants are stored as Python floats so that pickles carry no numpy scalars.
#
# Layout: `synthesis_plan` and `discriminator_plan` decide, once per network, every block's
# resolution, widths, precision and layer counts (and for G which ws each block reads); the
# network classes only turn those plans into modules. Module, parameter and buffer names are those
# of StyleGAN2-ADA, so state_dicts and pickles move between the two code bases in both directions.

import math
from typing import List, NamedTuple, Tuple

import torch

from torch_utils import misc
from torch_utils import persistence
from torch_utils.ops import bias_act
from torch_utils.ops import conv2d_resample
from torch_utils.ops import fma
from torch_utils.ops import upfirdn2d

_ARCHITECTURES = ('orig', 'skip', 'resnet')
_RESIDUAL_GAIN = math.sqrt(0.5)  # both branches of a resnet block are scaled by this, keeping unit variance


def _check_architecture(architecture):
    if architecture not in _ARCHITECTURES:
        raise ValueError(f"architecture must be 'orig', 'skip' or 'resnet', got {architecture!r}")


def _log2_resolution(img_resolution):
    """log2 of a power-of-two resolution >= 4, or a ValueError naming the bad value."""
    exponent = int(img_resolution).bit_length() - 1
    if img_resolution < 4 or img_resolution != 2 ** exponent:
        raise ValueError(f'img_resolution must be a power of two >= 4, got {img_resolution}')
    return exponent


def _activation_gain(activation):
    # float(): the op table may hold numpy scalars, which pickles must not carry.
    return float(bias_act.activation_funcs[activation].def_gain)


def _gained_clamp(conv_clamp, gain):
    return conv_clamp * gain if conv_clamp is not None else None


def _run_dtype(use_fp16, force_fp32, device):
    # Half precision only pays (and is only well supported) on CUDA; elsewhere an fp16 block quietly
    # computes in fp32, so every pickle can generate on a CPU.
    half = use_fp16 and not force_fp32 and device.type == 'cuda'
    return torch.float16 if half else torch.float32


def _memory_format(channels_last):
    return torch.channels_last if channels_last else torch.contiguous_format


def _keep(module, scope, names):
    """Copy the named constructor arguments from `scope` (the constructor's locals()) onto `module`.

    These plain attributes are part of the pickle format: code embedded in older pickles and other
    callers read them by name.
    """
    for name in names.split():
        setattr(module, name, scope[name])


def _register_filter(module, taps):
    module.register_buffer('resample_filter', upfirdn2d.setup_filter(taps))


def _new_kernel(out_channels, in_channels, kernel_size, channels_last=False):
    kernel = torch.randn([out_channels, in_channels, kernel_size, kernel_size])
    return kernel.to(memory_format=_memory_format(channels_last))

#----------------------------------------------------------------------------
# Per-resolution plans shared by G and D.


def _width_and_precision(img_resolution, channel_base, channel_max, num_fp16_res):
    """{res: (channels, use_fp16)} for res = 4, 8, ..., img_resolution.

    Width halves as resolution doubles, capped at channel_max. fp16 covers the num_fp16_res highest
    resolutions but never the 4x4 stage (G's constant input and D's epilogue stay in fp32).
    """
    top = _log2_resolution(img_resolution)
    plan = {}
    for exponent in range(2, top + 1):
        res = 2 ** exponent
        plan[res] = (min(channel_base // res, channel_max), res >= 8 and top - exponent < num_fp16_res)
    return plan


def _synthesis_layer_counts(in_channels, is_last, architecture):
    """(modulated convs, toRGB layers) of one synthesis block: the 4x4 block has no upsampling conv0."""
    return (1 if in_channels == 0 else 2), (1 if is_last or architecture == 'skip' else 0)


def _discriminator_layer_names(in_channels, architecture):
    """The layers of one discriminator block in the order they are numbered (for freeze_layers)."""
    names = ['fromrgb'] if in_channels == 0 or architecture == 'skip' else []
    return names + ['conv0', 'conv1'] + (['skip'] if architecture == 'resnet' else [])


class SynthesisStage(NamedTuple):
    resolution: int
    in_channels: int    # width arriving from the block below; 0 for the 4x4 block (learned constant)
    out_channels: int
    use_fp16: bool
    num_conv: int
    num_torgb: int
    first_w: int        # the block reads ws[:, first_w : first_w + num_conv + num_torgb]


class DiscriminatorStage(NamedTuple):
    resolution: int
    in_channels: int    # width arriving from the block above; 0 for the first block (reads the image)
    tmp_channels: int
    out_channels: int   # width at resolution // 2
    use_fp16: bool
    first_layer_idx: int
    num_layers: int


def synthesis_plan(img_resolution, channel_base=32768, channel_max=512, num_fp16_res=0,
                   architecture='skip') -> Tuple[List[SynthesisStage], int]:
    """G's blocks from 4x4 up to img_resolution, and num_ws, the number of ws the network reads.

    Consecutive blocks overlap by one w: a block's toRGB uses the same w as the next block's
    upsampling conv, so only the last block's toRGB adds a w of its own.
    """
    _check_architecture(architecture)
    widths = _width_and_precision(img_resolution, channel_base, channel_max, num_fp16_res)
    stages, next_w = [], 0
    for res, (channels, use_fp16) in widths.items():
        in_channels = widths[res // 2][0] if res > 4 else 0
        num_conv, num_torgb = _synthesis_layer_counts(in_channels, res == img_resolution, architecture)
        stages.append(SynthesisStage(res, in_channels, channels, use_fp16, num_conv, num_torgb, next_w))
        next_w += num_conv
    return stages, next_w + stages[-1].num_torgb


def discriminator_plan(img_resolution, channel_base=32768, channel_max=512, num_fp16_res=0,
                       architecture='resnet') -> Tuple[List[DiscriminatorStage], int]:
    """D's blocks from img_resolution down to 8, and the width of the 4x4 epilogue that follows.

    Layers are numbered across the whole of D from the image side, which is what freeze_layers counts.
    """
    _check_architecture(architecture)
    widths = _width_and_precision(img_resolution, channel_base, channel_max, num_fp16_res)
    stages, layer_idx = [], 0
    for res in sorted(widths, reverse=True)[:-1]:
        channels, use_fp16 = widths[res]
        in_channels = channels if res < img_resolution else 0
        count = len(_discriminator_layer_names(in_channels, architecture))
        stages.append(DiscriminatorStage(res, in_channels, channels, widths[res // 2][0], use_fp16, layer_idx, count))
        layer_idx += count
    return stages, widths[4][0]

#----------------------------------------------------------------------------


@misc.profiled_function
def normalize_2nd_moment(x, dim=1, eps=1e-8):
    """Scale `x` so that its mean square along `dim` is one."""
    return x * x.square().mean(dim=dim, keepdim=True).add(eps).rsqrt()


def _fp16_friendly(weight, styles):
    """Rescale kernel and styles before fp16 modulation; demodulation cancels both factors exactly
    in theory, and in practice they keep the intermediate products far from fp16 overflow."""
    fan_in = weight[0].numel()
    weight = weight * (1 / math.sqrt(fan_in) / weight.norm(float('inf'), dim=[1, 2, 3], keepdim=True))
    return weight, styles / styles.norm(float('inf'), dim=1, keepdim=True)


def _demodulation(weight, styles):
    """1 / |style-scaled kernel| per sample and output channel: [N, out] (StyleGAN2 paper, eq. 3)."""
    energy = styles.square() @ weight.square().sum(dim=[2, 3]).t()
    return (energy + 1e-8).rsqrt()


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
    """StyleGAN2 weight (de)modulation followed by convolution; returns [N, out, H', W'].

    Fused: every sample gets its own modulated kernel and the batch runs as one grouped conv.
    Unfused: the shared kernel runs once and the styles scale x before it (and the demodulation
    factors scale the result after it), which is cheaper for large batches and in training.
    """
    batch = x.shape[0]
    out_ch, in_ch = weight.shape[:2]
    misc.assert_shape(weight, [out_ch, in_ch, None, None])
    misc.assert_shape(x, [batch, in_ch, None, None])
    misc.assert_shape(styles, [batch, in_ch])
    if x.dtype == torch.float16 and demodulate:
        weight, styles = _fp16_friendly(weight, styles)
    scale_out = _demodulation(weight, styles) if demodulate else None
    resample = dict(f=resample_filter, up=up, down=down, padding=padding, flip_weight=flip_weight)

    if not fused_modconv:
        y = conv2d_resample.conv2d_resample(x=x * styles.to(x.dtype)[:, :, None, None], w=weight.to(x.dtype),
                                            **resample)
        if scale_out is not None:
            scale_out = scale_out.to(x.dtype)[:, :, None, None]
            return y * scale_out if noise is None else fma.fma(y, scale_out, noise.to(x.dtype))
        return y if noise is None else y.add_(noise.to(x.dtype))

    kernels = weight.unsqueeze(0) * styles[:, None, :, None, None]            # [N, out, in, kh, kw]
    if scale_out is not None:
        kernels = kernels * scale_out[:, :, None, None, None]
    with misc.suppress_tracer_warnings():
        batch = int(batch)
    # Fold the batch into channels: sample n owns input group n and output group n.
    y = conv2d_resample.conv2d_resample(x=x.reshape(1, batch * in_ch, *x.shape[2:]),
                                        w=kernels.flatten(0, 1).to(x.dtype), groups=batch, **resample)
    y = y.reshape(batch, out_ch, *y.shape[2:])
    return y if noise is None else y.add_(noise)

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
        _keep(self, locals(), 'in_features out_features activation')
        # Storing the weight divided by lr_multiplier and multiplying it back in forward() makes
        # the optimiser's steps lr_multiplier times smaller in effect.
        bias_values = torch.full([out_features], float(bias_init)) if bias else None
        self.weight = torch.nn.Parameter(torch.randn([out_features, in_features]).div(lr_multiplier))
        self.bias = None if bias_values is None else torch.nn.Parameter(bias_values)
        self.weight_gain = float(lr_multiplier) / math.sqrt(in_features)
        self.bias_gain = float(lr_multiplier)

    def forward(self, x):
        matrix = (self.weight.to(x.dtype) * self.weight_gain).t()
        if self.bias is None:
            return bias_act.bias_act(x.matmul(matrix), None, act=self.activation)
        offset = self.bias.to(x.dtype) * self.bias_gain
        if self.activation != 'linear':
            return bias_act.bias_act(x.matmul(matrix), offset, act=self.activation)
        return torch.addmm(offset.unsqueeze(0), x, matrix)

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
        _keep(self, locals(), 'in_channels out_channels activation up down conv_clamp')
        _register_filter(self, resample_filter)
        self.padding = kernel_size // 2
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.act_gain = _activation_gain(activation)

        tensors = {'weight': _new_kernel(out_channels, in_channels, kernel_size, channels_last),
                   'bias': torch.zeros([out_channels]) if bias else None}
        for name, value in tensors.items():
            if value is None:
                setattr(self, name, None)
            elif trainable:
                setattr(self, name, torch.nn.Parameter(value))
            else:
                # Frozen layers keep the same names as buffers, so copying weights by name still works.
                self.register_buffer(name, value)

    def forward(self, x, gain=1):
        y = conv2d_resample.conv2d_resample(x=x, w=(self.weight * self.weight_gain).to(x.dtype),
                                            f=self.resample_filter, up=self.up, down=self.down,
                                            padding=self.padding, flip_weight=(self.up == 1))
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return bias_act.bias_act(y, bias, act=self.activation, gain=self.act_gain * gain,
                                 clamp=_gained_clamp(self.conv_clamp, gain))

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
        _keep(self, locals(), 'z_dim c_dim w_dim num_ws num_layers w_avg_beta')

        label_width = 0 if c_dim == 0 else (w_dim if embed_features is None else embed_features)
        hidden = w_dim if layer_features is None else layer_features
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, label_width)
        for index in range(num_layers):
            fan_in = z_dim + label_width if index == 0 else hidden
            fan_out = w_dim if index == num_layers - 1 else hidden
            setattr(self, f'fc{index}', FullyConnectedLayer(fan_in, fan_out, activation=activation,
                                                            lr_multiplier=lr_multiplier))
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer('w_avg', torch.zeros([w_dim]))

    def _embed_inputs(self, z, c):
        # z and the label embedding are each normalised to unit mean square, then concatenated.
        parts = []
        if self.z_dim > 0:
            misc.assert_shape(z, [None, self.z_dim])
            parts.append(normalize_2nd_moment(z.to(torch.float32)))
        if self.c_dim > 0:
            misc.assert_shape(c, [None, self.c_dim])
            parts.append(normalize_2nd_moment(self.embed(c.to(torch.float32))))
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, skip_w_avg_update=False):
        w = self._embed_inputs(z, c)
        for index in range(self.num_layers):
            w = getattr(self, f'fc{index}')(w)

        if self.training and not skip_w_avg_update and self.w_avg_beta is not None:
            self.w_avg.copy_(w.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is not None:
            w = w.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi == 1:
            return w

        # Truncation trick: pull w towards the running mean (StyleGAN, Karras et al. 2019, sec. 3.2),
        # only for the first truncation_cutoff ws when a cutoff is given.
        assert self.w_avg_beta is not None, 'truncation needs a tracked w_avg (w_avg_beta is None)'
        pulled = self.w_avg.lerp(w, truncation_psi)
        if self.num_ws is None or truncation_cutoff is None:
            return pulled
        early = (torch.arange(self.num_ws, device=w.device) < truncation_cutoff).reshape(-1, 1)
        return torch.where(early, pulled, w)

    def extra_repr(self):
        return f'z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}'

#----------------------------------------------------------------------------


@persistence.persistent_class
class SynthesisLayer(torch.nn.Module):
    """Style-modulated convolution with per-pixel noise, bias and activation."""

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
        _keep(self, locals(), 'in_channels out_channels w_dim resolution up use_noise activation conv_clamp')
        _register_filter(self, resample_filter)
        self.padding = kernel_size // 2
        self.act_gain = _activation_gain(activation)

        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(_new_kernel(out_channels, in_channels, kernel_size, channels_last))
        if use_noise:
            pattern = torch.randn([resolution, resolution])  # the fixed noise image of noise_mode='const'
            self.register_buffer('noise_const', pattern)
            self.noise_strength = torch.nn.Parameter(torch.tensor(0.0))
        self.bias = torch.nn.Parameter(torch.zeros(out_channels))

    def _noise(self, noise_mode, batch, device):
        if noise_mode not in ('random', 'const', 'none'):
            raise ValueError(f"noise_mode must be 'random', 'const' or 'none', got {noise_mode!r}")
        if not self.use_noise or noise_mode == 'none':
            return None
        if noise_mode == 'const':
            return self.noise_const * self.noise_strength
        return torch.randn([batch, 1, self.resolution, self.resolution], device=device) * self.noise_strength

    def forward(self, x, w, noise_mode='random', fused_modconv=True, gain=1):
        noise = self._noise(noise_mode, x.shape[0], x.device)
        misc.assert_shape(x, [None, self.in_channels, self.resolution // self.up, self.resolution // self.up])
        y = modulated_conv2d(x=x, weight=self.weight, styles=self.affine(w), noise=noise, up=self.up,
                             padding=self.padding, resample_filter=self.resample_filter,
                             flip_weight=(self.up == 1), fused_modconv=fused_modconv)
        return bias_act.bias_act(y, self.bias.to(y.dtype), act=self.activation, gain=self.act_gain * gain,
                                 clamp=_gained_clamp(self.conv_clamp, gain))

    def extra_repr(self):
        return (f'in_channels={self.in_channels}, out_channels={self.out_channels}, w_dim={self.w_dim}, '
                f'resolution={self.resolution}, up={self.up}, activation={self.activation}')

#----------------------------------------------------------------------------


@persistence.persistent_class
class ToRGBLayer(torch.nn.Module):
    """Modulated 1x1 projection to image channels (no demodulation), linear with optional clamp."""

    def __init__(self, in_channels, out_channels, w_dim, kernel_size=1, conv_clamp=None, channels_last=False):
        super().__init__()
        _keep(self, locals(), 'in_channels out_channels w_dim conv_clamp')
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(_new_kernel(out_channels, in_channels, kernel_size, channels_last))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        # Without demodulation nothing normalises the kernel, so the equalised-lr scale goes onto the styles.
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)

    def forward(self, x, w, fused_modconv=True):
        y = modulated_conv2d(x=x, weight=self.weight, styles=self.affine(w) * self.weight_gain,
                             demodulate=False, fused_modconv=fused_modconv)
        return bias_act.bias_act(y, self.bias.to(y.dtype), clamp=self.conv_clamp)

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
        _check_architecture(architecture)
        super().__init__()
        _keep(self, locals(), 'in_channels out_channels w_dim resolution img_channels is_last architecture use_fp16')
        self.channels_last = use_fp16 and fp16_channels_last
        _register_filter(self, resample_filter)
        self.num_conv, self.num_torgb = _synthesis_layer_counts(in_channels, is_last, architecture)

        layout = dict(channels_last=self.channels_last)
        layer = dict(w_dim=w_dim, resolution=resolution, conv_clamp=conv_clamp, **layout)
        doubling = dict(up=2, resample_filter=resample_filter)
        if in_channels == 0:
            self.const = torch.nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, **doubling, **layer, **layer_kwargs)
        self.conv1 = SynthesisLayer(out_channels, out_channels, **layer, **layer_kwargs)
        if self.num_torgb:
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp, **layout)
        if architecture == 'resnet' and in_channels > 0:
            self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1, bias=False, **doubling, **layout)

    def _features(self, x, ws, dtype, layout, **conv_kwargs):
        """conv0 (upsampling) and conv1, or conv1 on the learned constant; resnet adds the shortcut."""
        if self.in_channels == 0:
            start = self.const.to(dtype).unsqueeze(0).repeat([ws[0].shape[0], 1, 1, 1])
            return self.conv1(start.to(memory_format=layout), ws[0], **conv_kwargs)
        below = self.resolution // 2
        misc.assert_shape(x, [None, self.in_channels, below, below])
        x = x.to(dtype=dtype, memory_format=layout)
        if self.architecture != 'resnet':
            return self.conv1(self.conv0(x, ws[0], **conv_kwargs), ws[1], **conv_kwargs)
        shortcut = self.skip(x, gain=_RESIDUAL_GAIN)
        y = self.conv1(self.conv0(x, ws[0], **conv_kwargs), ws[1], gain=_RESIDUAL_GAIN, **conv_kwargs)
        return shortcut.add_(y)

    def forward(self, x, img, ws, force_fp32=False, fused_modconv=None, **layer_kwargs):
        count = self.num_conv + self.num_torgb
        misc.assert_shape(ws, [None, count, self.w_dim])
        device = self.const.device if self.in_channels == 0 else x.device
        dtype = _run_dtype(self.use_fp16, force_fp32, device)
        if fused_modconv is None:
            # One grouped convolution per layer for fp32 (or single-sample) inference; training and
            # fp16 batches scale the activations around a shared convolution instead.
            with misc.suppress_tracer_warnings():
                fused_modconv = not self.training and (dtype == torch.float32 or int(ws.shape[0]) == 1)
        per_layer = ws.unbind(dim=1)
        layout = _memory_format(self.channels_last and dtype == torch.float16)
        x = self._features(x, per_layer, dtype, layout, fused_modconv=fused_modconv, **layer_kwargs)

        if img is not None:
            below = self.resolution // 2
            misc.assert_shape(img, [None, self.img_channels, below, below])
            img = upfirdn2d.upsample2d(img, self.resample_filter)
        if self.num_torgb:
            rgb = self.torgb(x, per_layer[self.num_conv], fused_modconv=fused_modconv)
            rgb = rgb.to(dtype=torch.float32, memory_format=torch.contiguous_format)
            img = rgb if img is None else img.add_(rgb)
        assert x.dtype == dtype and (img is None or img.dtype == torch.float32)
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
        # 'skip' is SynthesisBlock's default architecture.
        stages, num_ws = synthesis_plan(img_resolution, channel_base, channel_max, num_fp16_res,
                                        block_kwargs.get('architecture', 'skip'))
        super().__init__()
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = _log2_resolution(img_resolution)
        self.img_channels = img_channels
        self.block_resolutions = [stage.resolution for stage in stages]
        self.num_ws = num_ws
        # (first w, number of ws) per block, in block order.
        self.block_ws = [(stage.first_w, stage.num_conv + stage.num_torgb) for stage in stages]
        for stage in stages:
            block = SynthesisBlock(stage.in_channels, stage.out_channels, w_dim=w_dim, resolution=stage.resolution,
                                   img_channels=img_channels, is_last=(stage.resolution == img_resolution),
                                   use_fp16=stage.use_fp16, **block_kwargs)
            setattr(self, f'b{stage.resolution}', block)

    def forward(self, ws, **block_kwargs):
        misc.assert_shape(ws, [None, self.num_ws, self.w_dim])
        ws = ws.to(torch.float32)
        x = img = None
        for res, (first, count) in zip(self.block_resolutions, self.block_ws):
            x, img = getattr(self, f'b{res}')(x, img, ws[:, first:first + count], **block_kwargs)
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
        _keep(self, locals(), 'z_dim c_dim w_dim img_resolution img_channels')
        # Synthesis is registered first, so parameters are listed (and optimised) in upstream's order.
        image = dict(img_resolution=img_resolution, img_channels=img_channels)
        self.synthesis = SynthesisNetwork(w_dim=w_dim, **image, **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        latents = dict(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim)
        self.mapping = MappingNetwork(num_ws=self.num_ws, **latents, **mapping_kwargs)

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, **synthesis_kwargs):
        truncation = dict(truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(self.mapping(z, c, **truncation), **synthesis_kwargs)

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
        _check_architecture(architecture)
        super().__init__()
        _keep(self, locals(), 'in_channels resolution img_channels first_layer_idx architecture use_fp16')
        self.channels_last = use_fp16 and fp16_channels_last
        _register_filter(self, resample_filter)

        names = _discriminator_layer_names(in_channels, architecture)
        self.num_layers = len(names)
        trainable = {name: first_layer_idx + index >= freeze_layers for index, name in enumerate(names)}
        shared = dict(channels_last=self.channels_last)
        convs = dict(shared, activation=activation, conv_clamp=conv_clamp)
        halving = dict(down=2, resample_filter=resample_filter)
        if 'fromrgb' in trainable:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, kernel_size=1, trainable=trainable['fromrgb'],
                                       **convs)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, kernel_size=3, trainable=trainable['conv0'], **convs)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, kernel_size=3, trainable=trainable['conv1'],
                                 **halving, **convs)
        if 'skip' in trainable:
            self.skip = Conv2dLayer(tmp_channels, out_channels, kernel_size=1, bias=False,
                                    trainable=trainable['skip'], **halving, **shared)

    def forward(self, x, img, force_fp32=False):
        dtype = _run_dtype(self.use_fp16, force_fp32, (img if x is None else x).device)
        layout = _memory_format(self.channels_last and dtype == torch.float16)
        side = self.resolution
        if x is not None:
            misc.assert_shape(x, [None, self.in_channels, side, side])
            x = x.to(dtype=dtype, memory_format=layout)

        if hasattr(self, 'fromrgb'):
            misc.assert_shape(img, [None, self.img_channels, side, side])
            img = img.to(dtype=dtype, memory_format=layout)
            from_img = self.fromrgb(img)
            x = from_img if x is None else x + from_img
            # Only the skip architecture feeds the (downsampled) image to the next block.
            img = upfirdn2d.downsample2d(img, self.resample_filter) if self.architecture == 'skip' else None

        if self.architecture == 'resnet':
            shortcut = self.skip(x, gain=_RESIDUAL_GAIN)
            x = shortcut.add_(self.conv1(self.conv0(x), gain=_RESIDUAL_GAIN))
        else:
            x = self.conv1(self.conv0(x))
        assert x.dtype == dtype
        return x, img

    def extra_repr(self):
        return f'resolution={self.resolution}, architecture={self.architecture}, use_fp16={self.use_fp16}'

#----------------------------------------------------------------------------


@persistence.persistent_class
class MinibatchStdLayer(torch.nn.Module):
    """Appends the per-group standard deviation of features as extra channels (Karras et al. 2018, sec. 3)."""

    def __init__(self, group_size, num_channels=1):
        super().__init__()
        _keep(self, locals(), 'group_size num_channels')

    def forward(self, x):
        batch, channels, height, width = x.shape
        with misc.suppress_tracer_warnings():
            group = batch if self.group_size is None else min(int(self.group_size), int(batch))
        # Sample i sits in column i % (batch / group) of the [group, batch / group] grid; the columns
        # are the groups. The channels are split into num_channels slices, one statistic each.
        grid = x.reshape(group, -1, self.num_channels, channels // self.num_channels, height, width)
        spread = (grid.var(dim=0, unbiased=False) + 1e-8).sqrt()          # [batch/group, F, C/F, H, W]
        per_slice = spread.mean(dim=[2, 3, 4])[:, :, None, None]          # [batch/group, F, 1, 1]
        return torch.cat([x, per_slice.repeat(group, 1, height, width)], dim=1)

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
        _check_architecture(architecture)
        super().__init__()
        _keep(self, locals(), 'in_channels cmap_dim resolution img_channels architecture')

        if architecture == 'skip':
            # Unlike the blocks' fromrgb layers, this one is never clamped (as in StyleGAN2-ADA, whose
            # pickles must score images identically): conv_clamp applies from the 3x3 conv on.
            self.fromrgb = Conv2dLayer(img_channels, in_channels, kernel_size=1, activation=activation)
        self.mbstd = None
        if mbstd_num_channels > 0:
            self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels)
        act = dict(activation=activation)
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, kernel_size=3, conv_clamp=conv_clamp,
                                **act)
        flat_width = in_channels * resolution * resolution
        self.fc = FullyConnectedLayer(flat_width, in_channels, **act)
        self.out = FullyConnectedLayer(in_channels, max(cmap_dim, 1))

    def forward(self, x, img, cmap, force_fp32=False):
        del force_fp32  # the epilogue always runs in fp32
        side = self.resolution
        misc.assert_shape(x, [None, self.in_channels, side, side])
        x = x.to(dtype=torch.float32, memory_format=torch.contiguous_format)
        if self.architecture == 'skip':
            misc.assert_shape(img, [None, self.img_channels, side, side])
            x = x + self.fromrgb(img.to(dtype=torch.float32, memory_format=torch.contiguous_format))
        if self.mbstd is not None:
            x = self.mbstd(x)
        scores = self.out(self.fc(self.conv(x).flatten(1)))
        if self.cmap_dim == 0:
            return scores
        # Projection discriminator (Miyato & Koyama 2018): the score is <out, label embedding>,
        # divided by sqrt(cmap_dim) to keep its scale independent of the width.
        misc.assert_shape(cmap, [None, self.cmap_dim])
        return (scores * cmap).sum(dim=1, keepdim=True) * (1.0 / math.sqrt(self.cmap_dim))

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
        stages, epilogue_width = discriminator_plan(img_resolution, channel_base, channel_max, num_fp16_res,
                                                    architecture)
        super().__init__()
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = _log2_resolution(img_resolution)
        self.img_channels = img_channels
        self.block_resolutions = [stage.resolution for stage in stages]
        if c_dim == 0:
            cmap_dim = 0
        elif cmap_dim is None:
            cmap_dim = epilogue_width

        common = dict(img_channels=img_channels, architecture=architecture, conv_clamp=conv_clamp)
        for stage in stages:
            block = DiscriminatorBlock(stage.in_channels, stage.tmp_channels, stage.out_channels,
                                       resolution=stage.resolution, first_layer_idx=stage.first_layer_idx,
                                       use_fp16=stage.use_fp16, **block_kwargs, **common)
            setattr(self, f'b{stage.resolution}', block)
        if c_dim > 0:
            # Labels only: no z, a single output vector (the projection target), no running mean.
            labels_only = dict(z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None, w_avg_beta=None)
            self.mapping = MappingNetwork(**labels_only, **mapping_kwargs)
        self.b4 = DiscriminatorEpilogue(epilogue_width, cmap_dim=cmap_dim, resolution=4, **epilogue_kwargs, **common)

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
