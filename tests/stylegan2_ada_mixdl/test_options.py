"""Tests for the MixDL train.py options: loss kwargs, desc suffix and errors."""
import click
import pytest

from stylegan2_ada_mixdl.options import LOSS_CLASS_NAME, cli_options, configure_from_cli


def _parse(args):
    """Parse args with just the MixDL options, as train.py would add them."""
    command = click.Command('train', params=cli_options(), callback=lambda **kw: kw)
    return command.main(args, standalone_mode=False)


def test_defaults_leave_the_baseline_untouched():
    opts = _parse([])
    assert opts == {'mixdl': False, 'mixdl_g': 1000.0, 'mixdl_d': 1.0, 'mixdl_alpha': 1.0, 'mixdl_coef': 'dirichlet',
                    'mixdl_interval': 2, 'mixdl_patch': True}
    loss_kwargs = {'class_name': 'training.loss.StyleGAN2Loss', 'r1_gamma': 10}
    assert configure_from_cli(opts, loss_kwargs) == ''
    assert loss_kwargs == {'class_name': 'training.loss.StyleGAN2Loss', 'r1_gamma': 10}


def test_enabled_with_defaults():
    loss_kwargs = {'class_name': 'training.loss.StyleGAN2Loss', 'r1_gamma': 10}
    assert configure_from_cli(_parse(['--mixdl=1']), loss_kwargs) == '-mixdl'
    assert loss_kwargs == {'class_name': LOSS_CLASS_NAME, 'r1_gamma': 10, 'lambda_G': 1000.0, 'lambda_D': 1.0,
                           'mixup_alpha': 1.0, 'coef_kind': 'dirichlet', 'mixdl_interval': 2,
                           'patch_discrimination': True}


def test_non_default_settings_appear_in_desc():
    loss_kwargs = {}
    opts = _parse(['--mixdl=true', '--mixdl-g=0', '--mixdl-d=0', '--mixdl-patch=0', '--mixdl-alpha=0.1',
                   '--mixdl-coef=uniform', '--mixdl-interval=4'])
    assert configure_from_cli(opts, loss_kwargs) == '-mixdl-g0-d0-alpha0.1-uniform-int4-patch0'
    assert loss_kwargs['lambda_G'] == 0.0 and loss_kwargs['patch_discrimination'] is False
    assert loss_kwargs['mixdl_interval'] == 4 and loss_kwargs['coef_kind'] == 'uniform'


def test_mixdl_settings_without_mixdl_are_rejected():
    with pytest.raises(click.UsageError, match='--mixdl-g only has an effect with --mixdl=1'):
        configure_from_cli(_parse(['--mixdl-g=5']), {})


@pytest.mark.parametrize('args', [['--mixdl-alpha=0'], ['--mixdl-interval=0'], ['--mixdl-g=-1'], ['--mixdl-coef=beta']])
def test_bad_values_fail_at_parse_time(args):
    with pytest.raises(click.BadParameter):
        _parse(['--mixdl=1'] + args)
