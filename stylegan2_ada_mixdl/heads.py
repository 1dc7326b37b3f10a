"""MixDL's trainable extras: the projection of D's penultimate feature and the patch-logit heads."""
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F


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
    """3x3 equalised-lr conv from one D activation to one logit per spatial position."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.in_channels = int(in_channels)
        self.weight = torch.nn.Parameter(torch.randn(1, self.in_channels, 3, 3))
        self.bias = torch.nn.Parameter(torch.zeros(1))
        self.runtime_gain = 1.0 / (self.in_channels * 9) ** 0.5

    def forward(self, activation: torch.Tensor) -> torch.Tensor:
        """activation: [N, C, H, W] (any float dtype) -> patch logits [N, H * W] float32."""
        if activation.dim() != 4 or activation.shape[1] != self.in_channels:
            raise ValueError(f'Patch head expects [N, {self.in_channels}, H, W], got {list(activation.shape)}')
        x = activation.float().contiguous(memory_format=torch.contiguous_format)
        logits = F.conv2d(x, self.weight * self.runtime_gain, self.bias, padding=1)
        return logits.flatten(1)


def discriminator_patch_layers(D) -> List[Tuple[str, int, int]]:
    """(layer name, channels, spatial size) of D's block conv outputs at 1/8 and 1/16 of the image size.

    Read from D's block structure (block_resolutions and each conv's weight shape), so it follows
    any resolution, width and architecture. When the image is too small for those sizes
    (below 64 px), the smallest block conv outputs are used instead.
    """
    candidates = []
    for res in D.block_resolutions:
        block = getattr(D, f'b{res}')
        candidates.append((f'b{res}.conv0', int(block.conv0.weight.shape[0]), res))
        candidates.append((f'b{res}.conv1', int(block.conv1.weight.shape[0]), res // 2))
    wanted = {D.img_resolution // 8, D.img_resolution // 16}
    chosen = [entry for entry in candidates if entry[2] in wanted]
    if not chosen:
        smallest = min(size for _, _, size in candidates)
        chosen = [entry for entry in candidates if entry[2] == smallest]
    return chosen


def discriminator_feature_dim(D) -> int:
    """Width of D's penultimate feature: the output size of the epilogue's fully connected layer b4.fc."""
    return int(D.b4.fc.weight.shape[0])


class MixDLModules(torch.nn.Module):
    """The plug-in's own trainable modules, kept out of G and D so their state_dicts stay StyleGAN2-ADA's.

    proj: EqualizedLinear(feature_dim -> proj_dim) applied to D's penultimate feature.
    patch: one PatchHead per D activation named in patch_layers ({'b64.conv1': channels, ...}).
    """

    def __init__(self, feature_dim: int = 512, patch_layers: Dict[str, int] = None, proj_dim: int = None):
        super().__init__()
        patch_layers = dict(patch_layers or {})
        self.feature_dim = int(feature_dim)
        self.proj_dim = int(proj_dim if proj_dim is not None else feature_dim)
        self.proj = EqualizedLinear(self.feature_dim, self.proj_dim)
        # Module names may not contain dots, so 'b64.conv1' is stored as 'b64_conv1'.
        self.patch_layer_names = list(patch_layers)
        self.patch = torch.nn.ModuleDict({name.replace('.', '_'): PatchHead(ch) for name, ch in patch_layers.items()})

    @classmethod
    def for_discriminator(cls, D, proj_dim: int = None) -> 'MixDLModules':
        """Build the extras that match D's penultimate width and its 1/8, 1/16 resolution activations."""
        layers = {name: channels for name, channels, _ in discriminator_patch_layers(D)}
        return cls(feature_dim=discriminator_feature_dim(D), patch_layers=layers, proj_dim=proj_dim)

    def project(self, penultimate: torch.Tensor) -> torch.Tensor:
        """penultimate: [N, feature_dim] -> [N, proj_dim] float32."""
        if penultimate.dim() != 2 or penultimate.shape[1] != self.feature_dim:
            raise ValueError(f'Projection expects [N, {self.feature_dim}], got {list(penultimate.shape)}')
        return self.proj(penultimate)

    def patch_logits(self, layer_name: str, activation: torch.Tensor) -> torch.Tensor:
        """Patch logits [N, H * W] of the head reading D's activation `layer_name` ([N, C, H, W])."""
        return self.patch[layer_name.replace('.', '_')](activation)
