"""MixDL's settings as data: train.py's --mixdl* options and MixDLLoss's keyword arguments, with one default and one check each."""
from stylegan2_ada_mixdl.mixdl.coefficients import COEFFICIENT_KINDS
from stylegan2_ada_mixdl.mixdl.distance import G_SIMILARITIES
from training.plugins import PluginOption, PluginOptions

PATCH_HEADS = ('lrelu', 'linear')

# Defaults follow the paper (Kong et al., ECCV 2022, sec. 4) and the authors' code.
OPTIONS = PluginOptions(
    switch='mixdl',
    switch_help='Enable MixDL few-shot regularisation',
    loss_class='stylegan2_ada_mixdl.mixdl.MixDLLoss',
    settings=(
        PluginOption(name='mixdl_g', kwarg='lambda_G', default=1000.0, type=float, minimum=0, tag='g',
                     help='MixDL generator distance weight lambda_G (0 = off)'),
        PluginOption(name='mixdl_d', kwarg='lambda_D', default=1.0, type=float, minimum=0, tag='d',
                     help='MixDL discriminator distance weight lambda_D (0 = off)'),
        PluginOption(name='mixdl_alpha', kwarg='mixup_alpha', default=1.0, type=float, minimum=0, minimum_open=True,
                     tag='alpha', help='Dirichlet concentration of the mixup coefficients'),
        PluginOption(name='mixdl_coef', kwarg='coef_kind', default='dirichlet', type=str, choices=COEFFICIENT_KINDS,
                     tag='', help='Mixup coefficient distribution'),
        PluginOption(name='mixdl_interval', kwarg='interval', default=2, type=int, minimum=1, tag='int',
                     help='Every N-th minibatch is a MixDL minibatch'),
        PluginOption(name='mixdl_patch', kwarg='patch_discrimination', default=True, type=bool, tag='patch',
                     help='Patch-level discrimination for mixup images'),
        PluginOption(name='mixdl_patch_head', kwarg='patch_head', default='lrelu', type=str, choices=PATCH_HEADS,
                     tag='head', help='Patch head after its 3x3 conv: biased leaky ReLU (as the authors) or linear'),
        PluginOption(name='mixdl_keep_adv', kwarg='keep_full_adv', default=False, type=bool, tag='adv',
                     help='Keep the full-image adversarial terms on MixDL minibatches too (the authors drop them)'),
        PluginOption(name='mixdl_g_sim', kwarg='g_similarity', default='cosine', type=str,
                     choices=tuple(G_SIMILARITIES),
                     tag='gsim', help='Similarity of G features in the distance loss: cosine (as the authors) or '
                                      'centred (cosine after subtracting the batch mean of the sources)'),
    ),
    renamed={'mixdl_interval': 'interval', 'mixdl_seed': 'seed'},
)
