"""Few-shot regularisers that plug into training/ through its public hooks, one subpackage per method.

    mixdl/        MixDL (Kong et al., ECCV 2022): mixup-based distance learning for G and D.
    adaptivemix/  AdaptiveMix (Liu et al., CVPR 2023): shrinking D's feature space with mixed images.
    augintae/     AugIntAE (ICLR 2021 submission): an autoencoder trained on a base set that makes images
                  of unseen classes from a few seeds (augintae_generate.py).
    example/      the worked example of docs/PLUGINS.md.

train.py offers command-line options for the loss plug-ins listed here (training.plugins.load_plugins).
"""

LOSS_PLUGINS = [
    'stylegan2_ada_mixdl.mixdl.MixDLLoss',
    'stylegan2_ada_mixdl.adaptivemix.AdaptiveMixLoss',
    'stylegan2_ada_mixdl.augintae.AugIntAELoss',
]
