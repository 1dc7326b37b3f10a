"""AdaptiveMix's settings as data: train.py's --adaptivemix* options and AdaptiveMixLoss's keyword arguments."""
from training.plugins import PluginOption, PluginOptions

OPTIONS = PluginOptions(
    switch='adaptivemix',
    switch_help='Enable AdaptiveMix feature-space shrinkage of D',
    loss_class='stylegan2_ada_mixdl.adaptivemix.AdaptiveMixLoss',
    settings=(
        PluginOption(name='adaptivemix_weight', kwarg='weight', default=1.0, type=float, minimum=0, tag='w',
                     help='Weight of the AdaptiveMix term L_ada in the G and D losses'),
        PluginOption(name='adaptivemix_alpha', kwarg='mixup_alpha', default=1.0, type=float, minimum=0,
                     minimum_open=True, tag='alpha', help='Beta(alpha, alpha) concentration of the mixing weight lambda'),
        PluginOption(name='adaptivemix_sigma', kwarg='sigma', default=0.05, type=float, minimum=0, tag='sigma',
                     help='Std of the Gaussian noise added to the feature target'),
    ),
    conflicts={'mixdl': 'MixDL replaces the adversarial logits of its minibatches with patch logits, while '
                        'AdaptiveMix replaces every D call with mixed-feature logits; enable one of them'},
    renamed={'adaptivemix_weight': 'weight', 'adaptivemix_alpha': 'mixup_alpha', 'adaptivemix_sigma': 'sigma',
             'adaptivemix_seed': 'seed'},
)
