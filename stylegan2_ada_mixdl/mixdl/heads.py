"""MixDL's trainable extras: the projection of D's penultimate feature and the patch-logit heads."""
from typing import Dict, List

import torch
import torch.nn.functional as F

from torch_utils.ops import bias_act
from training.features import LayerInfo, discriminator_conv_layers, discriminator_layers_at, penultimate_width


class EqualizedLinear(torch.nn.Module):
    """Linear layer with StyleGAN's equalised learning rate: N(0, 1) weights scaled by 1/sqrt(fan_in) at run time."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.weight = torch.nn.Parameter(torch.randn(self.out_features, self.in_features))
        self.bias = torch.nn.Parameter(torch.zeros(self.out_features))
        self.runtime_gain = 1.0 / self.in_features ** 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, in_features] -> [N, out_features] float32."""
        return torch.addmm(self.bias, x.float(), (self.weight * self.runtime_gain).t())


class PatchHead(torch.nn.Module):
    """3x3 equalised-lr conv from one D activation to one logit per spatial position.

    activation 'lrelu': the conv's output goes through a biased leaky ReLU (slope 0.2, gain sqrt(2)),
    as StyleGAN2's conv layers and the MixDL authors' patch head do; 'linear': conv plus bias only.
    Both have the same parameters, so a state saved with one loads into the other.
    """

    def __init__(self, in_channels: int, activation: str = 'lrelu'):
        super().__init__()
        if activation not in ('lrelu', 'linear'):
            raise ValueError(f'Patch head activation must be "lrelu" or "linear", got {activation!r}')
        self.in_channels = int(in_channels)
        self.activation = activation
        self.weight = torch.nn.Parameter(torch.randn(1, self.in_channels, 3, 3))
        self.bias = torch.nn.Parameter(torch.zeros(1))
        self.runtime_gain = 1.0 / (self.in_channels * 9) ** 0.5

    def forward(self, activation: torch.Tensor) -> torch.Tensor:
        """activation: [N, C, H, W] (any float dtype) -> patch logits [N, H * W] float32."""
        if activation.dim() != 4 or activation.shape[1] != self.in_channels:
            raise ValueError(f'Patch head expects [N, {self.in_channels}, H, W], got {list(activation.shape)}')
        x = activation.float().contiguous(memory_format=torch.contiguous_format)
        if self.activation == 'linear':
            logits = F.conv2d(x, self.weight * self.runtime_gain, self.bias, padding=1)
        else:
            logits = bias_act.bias_act(F.conv2d(x, self.weight * self.runtime_gain, padding=1), self.bias, act='lrelu')
        return logits.flatten(1)


def discriminator_patch_layers(D) -> List[LayerInfo]:
    """D's block conv outputs at 1/8 and 1/16 of the image size, where MixDL's patch heads read (paper sec. 3.4).

    At 256 px these are b64.conv1, b32.conv0 (32x32) and b32.conv1, b16.conv0 (16x16). They are
    feature-block activations only (see `training.features.discriminator_conv_layers`): the epilogue's
    4x4 conv follows minibatch stddev, so its patches would mix samples. Below 64 px, where the
    block convs do not reach 1/16, the smallest block conv outputs are used (b8.conv1, 4x4).
    """
    wanted = {D.img_resolution // 8, D.img_resolution // 16}
    layers = discriminator_conv_layers(D)
    if not any(info.resolution in wanted for info in layers):
        wanted = {min(info.resolution for info in layers)}
    return discriminator_layers_at(D, wanted)


class MixDLModules(torch.nn.Module):
    """The plug-in's own trainable modules, kept out of G and D so their state_dicts stay StyleGAN2-ADA's.

    proj: EqualizedLinear(feature_dim -> proj_dim) applied to D's penultimate feature.
    patch: one PatchHead per D activation named in patch_layers ({'b64.conv1': channels, ...}).
    patch_head: the heads' activation, 'lrelu' or 'linear' (see PatchHead).
    """

    def __init__(self, feature_dim: int = 512, patch_layers: Dict[str, int] = None, proj_dim: int = None,
                 patch_head: str = 'lrelu'):
        super().__init__()
        patch_layers = dict(patch_layers or {})
        self.feature_dim = int(feature_dim)
        self.proj_dim = int(proj_dim if proj_dim is not None else feature_dim)
        self.proj = EqualizedLinear(self.feature_dim, self.proj_dim)
        # Module names may not contain dots, so 'b64.conv1' is stored as 'b64_conv1'.
        self.patch_layer_names = list(patch_layers)
        self.patch = torch.nn.ModuleDict({name.replace('.', '_'): PatchHead(ch, patch_head)
                                            for name, ch in patch_layers.items()})

    @classmethod
    def for_discriminator(cls, D, proj_dim: int = None, patch_head: str = 'lrelu') -> 'MixDLModules':
        """Build the extras that match D's penultimate width and its 1/8, 1/16 resolution activations."""
        layers = {info.name: info.channels for info in discriminator_patch_layers(D)}
        return cls(feature_dim=penultimate_width(D), patch_layers=layers, proj_dim=proj_dim, patch_head=patch_head)

    def project(self, penultimate: torch.Tensor) -> torch.Tensor:
        """penultimate: [N, feature_dim] -> [N, proj_dim] float32."""
        if penultimate.dim() != 2 or penultimate.shape[1] != self.feature_dim:
            raise ValueError(f'Projection expects [N, {self.feature_dim}], got {list(penultimate.shape)}')
        return self.proj(penultimate)

    def patch_logits(self, layer_name: str, activation: torch.Tensor) -> torch.Tensor:
        """Patch logits [N, H * W] of the head reading D's activation `layer_name` ([N, C, H, W])."""
        return self.patch[layer_name.replace('.', '_')](activation)
