"""train.py options of the MixDL plug-in (--mixdl, --mixdl-g, ...) and their translation into loss kwargs."""
import click

from stylegan2_ada_mixdl.coefficients import COEFFICIENT_KINDS

LOSS_CLASS_NAME = 'stylegan2_ada_mixdl.loss.MixDLLoss'

# Parameter name -> (default, loss kwarg, desc tag). Defaults follow the paper and the authors' code.
_OPTION_TABLE = {
    'mixdl_g':        (1000.0,      'lambda_G',             'g'),
    'mixdl_d':        (1.0,         'lambda_D',             'd'),
    'mixdl_alpha':    (1.0,         'mixup_alpha',          'alpha'),
    'mixdl_coef':     ('dirichlet', 'coef_kind',            ''),
    'mixdl_interval': (2,           'mixdl_interval',       'int'),
    'mixdl_patch':    (True,        'patch_discrimination', 'patch'),
}


def cli_options():
    """click options for train.py, grouped under the 'MixDL' heading by the caller."""
    return [
        click.Option(['--mixdl'], help='Enable MixDL few-shot regularisation', type=bool, default=False,
                     show_default=True, metavar='BOOL'),
        click.Option(['--mixdl-g'], help='MixDL generator distance weight lambda_G (0 = off)',
                     type=click.FloatRange(min=0), default=_OPTION_TABLE['mixdl_g'][0], show_default=True),
        click.Option(['--mixdl-d'], help='MixDL discriminator distance weight lambda_D (0 = off)',
                     type=click.FloatRange(min=0), default=_OPTION_TABLE['mixdl_d'][0], show_default=True),
        click.Option(['--mixdl-alpha'], help='Dirichlet concentration of the mixup coefficients',
                     type=click.FloatRange(min=0, min_open=True), default=_OPTION_TABLE['mixdl_alpha'][0],
                     show_default=True),
        click.Option(['--mixdl-coef'], help='Mixup coefficient distribution', type=click.Choice(COEFFICIENT_KINDS),
                     default=_OPTION_TABLE['mixdl_coef'][0], show_default=True),
        click.Option(['--mixdl-interval'], help='Every N-th minibatch is a MixDL minibatch',
                     type=click.IntRange(min=1), default=_OPTION_TABLE['mixdl_interval'][0], show_default=True),
        click.Option(['--mixdl-patch'], help='Patch-level discrimination for mixup images', type=bool,
                     default=_OPTION_TABLE['mixdl_patch'][0], show_default=True, metavar='BOOL'),
    ]


def validate(lambda_G, lambda_D, mixup_alpha, coef_kind, mixdl_interval):
    """Raise ValueError naming the bad MixDL setting and how to fix it."""
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


def _desc_value(value):
    if isinstance(value, bool):
        return str(int(value))
    return f'{value:g}' if isinstance(value, float) else str(value)


def configure_from_cli(opts, loss_kwargs):
    """Switch loss_kwargs to MixDLLoss when --mixdl=1 and return the run-dir desc suffix.

    Returns '' (and leaves loss_kwargs alone) when MixDL is off, so default runs keep their names.
    The suffix is '-mixdl' followed by each setting that differs from its default, e.g.
    '-mixdl-g0-patch0'.
    """
    given = {name: opts.get(name, spec[0]) for name, spec in _OPTION_TABLE.items()}
    if not opts.get('mixdl', False):
        changed = [name for name, value in given.items() if value != _OPTION_TABLE[name][0]]
        if changed:
            flag = '--' + changed[0].replace('_', '-')
            raise click.UsageError(f'{flag} only has an effect with --mixdl=1: add --mixdl=1 or drop {flag}')
        return ''
    try:
        validate(lambda_G=given['mixdl_g'], lambda_D=given['mixdl_d'], mixup_alpha=given['mixdl_alpha'],
                 coef_kind=given['mixdl_coef'], mixdl_interval=given['mixdl_interval'])
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    loss_kwargs['class_name'] = LOSS_CLASS_NAME
    desc = '-mixdl'
    for name, (default, kwarg, tag) in _OPTION_TABLE.items():
        value = given[name]
        if name == 'mixdl_interval' or name == 'mixdl_patch':
            value = int(value) if name == 'mixdl_interval' else bool(value)
        elif name != 'mixdl_coef':
            value = float(value)
        loss_kwargs[kwarg] = value
        if value != default:
            desc += f'-{tag}{_desc_value(value)}'
    return desc
