"""train.py options of the MixDL plug-in (--mixdl, --mixdl-g, ...) and their translation into loss kwargs."""
import click

from stylegan2_ada_mixdl.coefficients import COEFFICIENT_KINDS
from stylegan2_ada_mixdl.plugin import PluginOption, PluginOptions

LOSS_CLASS_NAME = 'stylegan2_ada_mixdl.loss.MixDLLoss'


def validate(lambda_G, lambda_D, mixup_alpha, coef_kind, mixdl_interval, patch_discrimination=True):
    """Raise ValueError naming the bad MixDL setting and how to fix it."""
    del patch_discrimination  # Any truth value is a valid switch; listed so the option table can pass it.
    if lambda_G < 0:
        raise ValueError(f'MixDL lambda_G must be >= 0, got {lambda_G}: set --mixdl-g=0 to turn the G term off')
    if lambda_D < 0:
        raise ValueError(f'MixDL lambda_D must be >= 0, got {lambda_D}: set --mixdl-d=0 to turn the D term off')
    if not mixup_alpha > 0:
        raise ValueError(f'MixDL Dirichlet alpha must be > 0, got {mixup_alpha}: try --mixdl-alpha=1')
    if coef_kind not in COEFFICIENT_KINDS:
        raise ValueError(f'Unknown --mixdl-coef={coef_kind!r}: use one of {", ".join(COEFFICIENT_KINDS)}')
    if int(mixdl_interval) != mixdl_interval or mixdl_interval < 1:
        raise ValueError(f'--mixdl-interval must be an integer >= 1, got {mixdl_interval}')


def _whole_or_unchanged(value):
    # Casting 2.5 to 2 would hide the mistake from validate(); only whole numbers become ints.
    return int(value) if int(value) == value else value


# Defaults follow the paper and the authors' code.
OPTIONS = PluginOptions(
    switch='mixdl',
    switch_help='Enable MixDL few-shot regularisation',
    loss_class=LOSS_CLASS_NAME,
    settings=(
        PluginOption(name='mixdl_g', kwarg='lambda_G', default=1000.0, kind=click.FloatRange(min=0), cast=float,
                     tag='g', help='MixDL generator distance weight lambda_G (0 = off)'),
        PluginOption(name='mixdl_d', kwarg='lambda_D', default=1.0, kind=click.FloatRange(min=0), cast=float,
                     tag='d', help='MixDL discriminator distance weight lambda_D (0 = off)'),
        PluginOption(name='mixdl_alpha', kwarg='mixup_alpha', default=1.0,
                     kind=click.FloatRange(min=0, min_open=True), cast=float, tag='alpha',
                     help='Dirichlet concentration of the mixup coefficients'),
        PluginOption(name='mixdl_coef', kwarg='coef_kind', default='dirichlet', kind=click.Choice(COEFFICIENT_KINDS),
                     cast=str, tag='', help='Mixup coefficient distribution'),
        PluginOption(name='mixdl_interval', kwarg='mixdl_interval', default=2, kind=click.IntRange(min=1),
                     cast=_whole_or_unchanged, tag='int', help='Every N-th minibatch is a MixDL minibatch'),
        PluginOption(name='mixdl_patch', kwarg='patch_discrimination', default=True, kind=bool, cast=bool,
                     tag='patch', help='Patch-level discrimination for mixup images'),
    ),
    validate=validate,
)


def cli_options():
    """click options for train.py, grouped under the 'MixDL' heading by the caller."""
    return OPTIONS.cli_options()


def configure_from_cli(opts, loss_kwargs):
    """Switch loss_kwargs to MixDLLoss when --mixdl=1 and return the run-dir desc suffix.

    Returns '' (and leaves loss_kwargs alone) when MixDL is off, so default runs keep their names.
    The suffix is '-mixdl' followed by each setting that differs from its default, e.g.
    '-mixdl-g0-patch0'.
    """
    return OPTIONS.configure(opts, loss_kwargs)
