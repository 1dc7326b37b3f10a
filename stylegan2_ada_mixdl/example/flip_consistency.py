"""FlipConsistencyLoss: D should score an image and its mirror image alike (the example plug-in of docs/PLUGINS.md).

Every D call also runs D on the horizontally flipped (augmented) images and returns
    aux = (D(x) - D(flip(x)))^2 per sample
as its auxiliary term; each adversarial loss adds weight * mean(aux) of its own D call.
"""
from training.loss import AuxiliaryLoss, DiscriminatorOutput, StyleGAN2Loss
from training.plugins import PluginOption, PluginOptions

# The settings as data. Listed in stylegan2_ada_mixdl.LOSS_PLUGINS, the class would get the train.py
# options --flipcr=1 and --flipcr-weight=W.
OPTIONS = PluginOptions(
    switch='flipcr',
    switch_help='Enable the flip-consistency regulariser of D',
    loss_class='stylegan2_ada_mixdl.example.FlipConsistencyLoss',
    settings=(
        PluginOption(name='flipcr_weight', kwarg='weight', default=1.0, type=float, minimum=0, tag='w',
                     help='Weight of (D(x) - D(flip(x)))^2 in the adversarial losses'),
    ),
)


class FlipConsistencyLoss(StyleGAN2Loss):
    """StyleGAN2Loss whose D calls also return the flip-consistency term (keyword `weight`, default 1)."""

    options = OPTIONS

    def __init__(self, device, G_mapping, G_synthesis, D, augment_pipe=None, **kwargs):
        settings, stylegan2_kwargs = OPTIONS.split(kwargs)  # defaults filled in, each value checked
        super().__init__(device, G_mapping, G_synthesis, D, augment_pipe=augment_pipe, **stylegan2_kwargs)
        self.weight = settings['weight']

    def run_D(self, img, c):
        """DiscriminatorOutput(logits [N, 1], aux (D(x) - D(flip(x)))^2 [N]) on augmented images x."""
        if self.augment_pipe is not None:
            img = self.augment_pipe(img)
        logits = self.D(img, c)
        term = (logits - self.D(img.flip(3), c)).square().squeeze(1)
        return DiscriminatorOutput(logits, AuxiliaryLoss('flipcr', term, self.weight))
