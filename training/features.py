"""Named access to intermediate activations of G and D through forward hooks, for loss plug-ins."""

# Why hooks and not flags in forward(): the networks (ours and NVIDIA-pickled ones) stay untouched,
# nothing runs when nobody is recording, and the layer names are the state-dict names every
# StyleGAN2-ADA pickle shares. Names are always relative to the module handed to the function:
# 'b8.conv0' for G.synthesis, 'b32.conv0' / 'b4.fc' for D.

import contextlib
import re
from typing import Dict, Iterable, Iterator, List, NamedTuple, Union

import torch

_SYNTHESIS_CONV = re.compile(r'b(\d+)\.conv([01])')
_DISCRIMINATOR_CONV = re.compile(r'b(\d+)\.(fromrgb|conv0|conv1|conv)')
# Where in a D block each conv sits relative to the block's input resolution (conv1 downsamples).
_D_LAYER_ORDER = {'fromrgb': 0, 'conv0': 1, 'conv1': 2, 'conv': 3}
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
    """D's conv activations in forward order (fromrgb, conv0, conv1 per block, then b4.fromrgb/b4.conv).

    The resolution is that of the layer's output: a block bR gives R for fromrgb and conv0 and R/2 for
    the downsampling conv1. Resnet shortcuts (bR.skip) are left out because they are linear
    projections, not activations. In resnet D, bR.conv1 is the residual branch before the shortcut
    is added; record the block itself ('bR', output `(x, img)`) to get the sum.
    """
    found = []
    for name, module in D.named_modules():
        match = _DISCRIMINATOR_CONV.fullmatch(name)
        if not match:
            continue
        block_res, kind = int(match.group(1)), match.group(2)
        out_res = block_res // 2 if kind == 'conv1' else block_res
        # Sort key: descending block resolution, then position inside the block.
        found.append(((-block_res, _D_LAYER_ORDER[kind]), LayerInfo(name, _out_channels(module), out_res)))
    if not found:
        raise ValueError('no discriminator conv layers (bR.conv0 / bR.conv1) found; pass a Discriminator')
    return [info for _, info in sorted(found)]


def discriminator_layers_at(D: torch.nn.Module, resolution: int) -> List[LayerInfo]:
    """The entries of `discriminator_conv_layers(D)` whose output is `resolution` x `resolution`.

    MixDL's patch heads read the layers at img_resolution // 8 and img_resolution // 16.
    """
    chosen = [info for info in discriminator_conv_layers(D) if info.resolution == resolution]
    if not chosen:
        available = sorted({info.resolution for info in discriminator_conv_layers(D)}, reverse=True)
        raise ValueError(f'D has no conv output at {resolution}x{resolution}; available resolutions: {available}')
    return chosen


def discriminator_penultimate_name(D: torch.nn.Module) -> str:
    """Name of D's penultimate feature: the epilogue's dense layer output [N, C4] just before `b4.out`."""
    names = dict(D.named_modules())
    if PENULTIMATE_D_FEATURE not in names:
        raise ValueError(f'{type(D).__name__} has no submodule {PENULTIMATE_D_FEATURE!r}; pass a Discriminator')
    return PENULTIMATE_D_FEATURE


def penultimate_width(D: torch.nn.Module) -> int:
    """Width of the feature named by `discriminator_penultimate_name` (512 for full-size D)."""
    return int(dict(D.named_modules())[discriminator_penultimate_name(D)].weight.shape[0])


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
