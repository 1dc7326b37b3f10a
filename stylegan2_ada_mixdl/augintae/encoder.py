"""AugIntAE's encoder: a StyleGAN2 discriminator backbone whose last layer emits a code as wide as W.

The paper (ICLR 2021 submission, sec. 4) gives encoder and discriminator one architecture, differing
only in the output width. Here the encoder is a `training.networks.Discriminator` built from D's own
constructor kwargs, unconditional, without the minibatch-std channel (a code must depend on its
own image only), with no frozen layers, and with the final dense layer `b4.out` replaced by one of
width w_dim. Codes are L2-normalised and multiplied by sqrt(w_dim), so the synthesis network's
style layers see vectors of the length an ordinary w has.
"""

import copy
import math

import torch

from training import networks

ENCODER_KEY = 'encoder'


def encoder_kwargs_from_discriminator(D: torch.nn.Module) -> dict:
    """Constructor kwargs for the encoder's backbone, taken from D's (D must be a persistent
    training.networks.Discriminator, as in every snapshot this project or StyleGAN2-ADA writes)."""
    init_kwargs = getattr(D, 'init_kwargs', None)
    if init_kwargs is None:
        raise ValueError(f'{type(D).__name__} has no recorded constructor kwargs; pass a Discriminator from a snapshot or from train.py')
    kwargs = copy.deepcopy(dict(init_kwargs))
    kwargs.pop('class_name', None)
    kwargs['c_dim'] = 0
    kwargs['block_kwargs'] = dict(kwargs.get('block_kwargs', {}), freeze_layers=0)
    kwargs['epilogue_kwargs'] = dict(kwargs.get('epilogue_kwargs', {}), mbstd_num_channels=0)
    kwargs.pop('mapping_kwargs', None)
    return kwargs


class Encoder(torch.nn.Module):
    """E(x): images [N, img_channels, R, R] in [-1, 1] -> codes [N, w_dim] of length sqrt(w_dim).

    backbone_kwargs: public constructor kwargs of training.networks.Discriminator (img_resolution and
    img_channels required); c_dim and the minibatch-std width are overridden as described above.
    """

    def __init__(self, w_dim: int, **backbone_kwargs):
        super().__init__()
        self.w_dim = int(w_dim)
        kwargs = dict(backbone_kwargs)
        kwargs['c_dim'] = 0
        kwargs['epilogue_kwargs'] = dict(kwargs.get('epilogue_kwargs', {}), mbstd_num_channels=0)
        self.backbone = networks.Discriminator(**kwargs)
        head = self.backbone.b4.out
        self.backbone.b4.out = networks.FullyConnectedLayer(head.in_features, self.w_dim)

    @classmethod
    def like_discriminator(cls, D: torch.nn.Module, w_dim: int) -> 'Encoder':
        """An encoder with D's architecture (see encoder_kwargs_from_discriminator)."""
        return cls(w_dim, **encoder_kwargs_from_discriminator(D))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        codes = self.backbone(images, None).to(torch.float32)
        return torch.nn.functional.normalize(codes, dim=1) * math.sqrt(self.w_dim)


def decode(G_synthesis: torch.nn.Module, codes: torch.Tensor, **synthesis_kwargs) -> torch.Tensor:
    """G's synthesis network fed `codes` [N, w_dim] as every w row -> images [N, C, R, R]."""
    ws = codes.unsqueeze(1).repeat(1, G_synthesis.num_ws, 1)
    return G_synthesis(ws, **synthesis_kwargs)
