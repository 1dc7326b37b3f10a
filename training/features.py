"""Named access to the internals of G and D for loss plug-ins: layer finders, activation recording, D's features/head split."""

# Why hooks and not flags in forward(): the networks (ours and NVIDIA-pickled ones) stay untouched,
# nothing runs when nobody is recording, and the layer names are the state-dict names every
# StyleGAN2-ADA pickle shares. Names are always relative to the module handed to the function:
# 'b8.conv0' for G.synthesis, 'b32.conv0' / 'b4.fc' for D.

import contextlib
import re
from typing import Dict, Iterable, Iterator, List, NamedTuple, Optional, Union

import torch

from torch_utils import misc

_SYNTHESIS_CONV = re.compile(r'b(\d+)\.conv([01])')
PENULTIMATE_D_FEATURE = 'b4.fc'


class LayerInfo(NamedTuple):
    """One recordable layer: its name relative to the network, output channels and output resolution."""
    name: str
    channels: int
    resolution: int


def _synthesis_of(network: torch.nn.Module) -> torch.nn.Module:
    # Accept G or G.synthesis so callers need not care which one they hold.
    return getattr(network, 'synthesis', network)


def _out_channels(layer: torch.nn.Module) -> int:
    # `weight` is [out, in, kh, kw] whether it is a parameter or (frozen layer) a buffer.
    return int(layer.weight.shape[0])


def synthesis_conv_layers(network: torch.nn.Module) -> List[LayerInfo]:
    """Synthesis conv layers of G (or G.synthesis) in forward order: b4.conv1, b8.conv0, b8.conv1, ..., bR.conv1.

    Names are relative to G.synthesis; record them with `record_activations(G.synthesis, names)`.
    Each layer outputs [N, channels, resolution, resolution] after noise, bias and activation.
    """
    synthesis = _synthesis_of(network)
    found = []
    for name, module in synthesis.named_modules():
        match = _SYNTHESIS_CONV.fullmatch(name)
        if match:
            res, index = int(match.group(1)), int(match.group(2))
            found.append(((res, index), LayerInfo(name, _out_channels(module), res)))
    if not found:
        raise ValueError('no synthesis conv layers (bR.conv0 / bR.conv1) found; pass a Generator or its .synthesis')
    return [info for _, info in sorted(found)]


def synthesis_conv_names(network: torch.nn.Module) -> List[str]:
    """Just the names from `synthesis_conv_layers`, in forward order."""
    return [info.name for info in synthesis_conv_layers(network)]


def discriminator_conv_layers(D: torch.nn.Module) -> List[LayerInfo]:
    """The conv activations of D's feature blocks b<img_resolution> ... b8, in forward order (conv0, conv1 per block).

    The resolution is that of the layer's output: block bR gives R for conv0 and R/2 for the
    downsampling conv1. Left out: fromrgb layers (they read the image, not features), resnet
    shortcuts (linear projections), and the epilogue b4 (its conv follows the minibatch-stddev layer,
    so its output mixes samples; it is D's head, see `discriminator_head`). In resnet D, bR.conv1 is
    the residual branch before the shortcut is added; record the block itself ('bR', output
    `(x, img)`) to get the sum.
    """
    found = []
    for res in getattr(D, 'block_resolutions', ()):
        block = getattr(D, f'b{res}')
        found.append(LayerInfo(f'b{res}.conv0', _out_channels(block.conv0), res))
        found.append(LayerInfo(f'b{res}.conv1', _out_channels(block.conv1), res // 2))
    if not found:
        raise ValueError(f'{type(D).__name__} has no discriminator blocks (block_resolutions, bR.conv0 / bR.conv1); '
                         f'pass a Discriminator')
    return found


def discriminator_layers_at(D: torch.nn.Module, resolutions: Union[int, Iterable[int]]) -> List[LayerInfo]:
    """The entries of `discriminator_conv_layers(D)` whose output is R x R for R in `resolutions`, in forward order."""
    wanted = {int(resolutions)} if isinstance(resolutions, int) else {int(r) for r in resolutions}
    layers = discriminator_conv_layers(D)
    chosen = [info for info in layers if info.resolution in wanted]
    if not chosen:
        available = sorted({info.resolution for info in layers}, reverse=True)
        raise ValueError(f'D has no block conv output at {sorted(wanted, reverse=True)}; available resolutions: {available}')
    return chosen


def discriminator_penultimate_name(D: torch.nn.Module) -> str:
    """Name of D's penultimate feature: the epilogue's dense layer output [N, C4] just before `b4.out`."""
    names = dict(D.named_modules())
    if PENULTIMATE_D_FEATURE not in names:
        raise ValueError(f'{type(D).__name__} has no submodule {PENULTIMATE_D_FEATURE!r}; pass a Discriminator')
    return PENULTIMATE_D_FEATURE


def penultimate_width(D: torch.nn.Module) -> int:
    """Width of the feature named by `discriminator_penultimate_name` (512 for full-size D)."""
    return _out_channels(dict(D.named_modules())[discriminator_penultimate_name(D)])

#----------------------------------------------------------------------------
# D split into its feature blocks F (b<img_resolution> ... b8) and its head J (the 4x4 epilogue b4):
# head(features(D, img), label_embedding(D, c)) is exactly D(img, c).


class DiscriminatorFeatures(NamedTuple):
    """What D's blocks hand to the epilogue: x [N, C4, 4, 4], plus the 4x4 image for 'skip' D (else None)."""
    x: torch.Tensor
    img: Optional[torch.Tensor]

    def mixed_with(self, other: 'DiscriminatorFeatures', weight: float) -> 'DiscriminatorFeatures':
        """weight * self + (1 - weight) * other, in float32 (what the epilogue computes in)."""
        def blend(a, b):
            return None if a is None else weight * a.float() + (1 - weight) * b.float()
        return DiscriminatorFeatures(blend(self.x, other.x), blend(self.img, other.img))

    def take(self, index: torch.Tensor) -> 'DiscriminatorFeatures':
        """The samples at `index` (a LongTensor or slice along dim 0)."""
        return DiscriminatorFeatures(self.x[index], None if self.img is None else self.img[index])

    def halves(self, size: int):
        """Split a batch of 2 * size along dim 0 into its first and second halves."""
        return self.take(slice(None, size)), self.take(slice(size, None))


def discriminator_features(D: torch.nn.Module, img: torch.Tensor) -> DiscriminatorFeatures:
    """F(img): run D's blocks b<res> ... b8 only. img [N, C, R, R] -> what enters D.b4.

    Works on any StyleGAN2-ADA Discriminator (ours, or one rebuilt by legacy.load_network_pkl),
    since it only uses the submodule names every such pickle shares.
    """
    misc.assert_shape(img, [None, D.img_channels, D.img_resolution, D.img_resolution])
    x, image = None, img
    for res in D.block_resolutions:
        x, image = getattr(D, f'b{res}')(x, image)
    return DiscriminatorFeatures(x, image)


def discriminator_features_shape(D: torch.nn.Module) -> List[int]:
    """[C4, 4, 4]: the per-sample shape of `discriminator_features(D, img).x`, read from the epilogue."""
    return [int(D.b4.in_channels), int(D.b4.resolution), int(D.b4.resolution)]


def label_embedding(D: torch.nn.Module, c: torch.Tensor) -> Optional[torch.Tensor]:
    """D's projection of the labels c [N, c_dim] (None for an unconditional D)."""
    return D.mapping(None, c) if D.c_dim > 0 else None


def discriminator_head(D: torch.nn.Module, features: DiscriminatorFeatures, cmap: Optional[torch.Tensor]) -> torch.Tensor:
    """J(features): D's epilogue (minibatch stddev, conv, fc, out, label projection). Returns logits [N, 1]."""
    return D.b4(features.x, features.img, cmap)

#----------------------------------------------------------------------------


class ActivationRecord(dict):
    """Dict of name -> recorded output. With accumulate=True each value is a list, one entry per call."""


@contextlib.contextmanager
def record_activations(
    module: torch.nn.Module,
    names: Union[str, Iterable[str]],
    accumulate: bool = False,
    detach: bool = False,
) -> Iterator[ActivationRecord]:
    """Record the forward outputs of the named submodules of `module` while the block is active.

        with record_activations(G.synthesis, synthesis_conv_names(G)) as feats:
            img = G.synthesis(ws)
        feats['b8.conv0']   # [N, C8, 8, 8], still part of the autograd graph

    names: submodule names as in `module.named_modules()` (e.g. 'b8.conv0', 'b4.fc').
    accumulate: keep every call's output in a list instead of only the latest (useful when the
        same network runs several times inside the block, e.g. D on reals and on fakes).
    detach: store detached outputs (saves memory when no gradient is needed).
    The hooks are removed when the block exits, even on error, so outside it nothing runs.
    """
    wanted = [names] if isinstance(names, str) else list(names)
    submodules = dict(module.named_modules())
    missing = [name for name in wanted if name not in submodules or name == '']
    if missing:
        sample = ', '.join(name for name in list(submodules)[1:9])
        raise KeyError(f'no submodule named {missing} in {type(module).__name__}; names look like: {sample}, ...')

    record = ActivationRecord()
    if accumulate:
        for name in wanted:
            record[name] = []

    def make_hook(name):
        def store(_module, _inputs, output):
            if detach:
                output = output.detach() if torch.is_tensor(output) else \
                    type(output)(o.detach() if torch.is_tensor(o) else o for o in output)
            if accumulate:
                record[name].append(output)
            else:
                record[name] = output
        return store

    handles = [submodules[name].register_forward_hook(make_hook(name)) for name in wanted]
    try:
        yield record
    finally:
        for handle in handles:
            handle.remove()


def features_by_name(record: Dict[str, torch.Tensor], names: Iterable[str]) -> List[torch.Tensor]:
    """The recorded tensors for `names` in that order, with a clear error if one never ran."""
    ordered = []
    for name in names:
        if name not in record:
            raise KeyError(f'{name!r} was not recorded: was the network run inside record_activations?')
        ordered.append(record[name])
    return ordered
