"""MixDL's option table as train.py offers it: defaults, loss kwargs, run desc and errors."""
import click
import pytest

import train
from stylegan2_ada_mixdl.mixdl import MixDLLoss
from stylegan2_ada_mixdl.mixdl.options import OPTIONS
from training.plugins import PluginConfigError


def _parse(args):
    """Parse args with just the MixDL options, built from the table as train.py builds them."""
    command = click.Command('train', params=train._plugin_click_options(OPTIONS), callback=lambda **kw: kw)
    return command.main(args, standalone_mode=False)


def test_the_loss_class_declares_this_table_and_its_dotted_name():
    assert MixDLLoss.options is OPTIONS
    assert OPTIONS.loss_class == 'stylegan2_ada_mixdl.mixdl.MixDLLoss'


def test_defaults_leave_the_baseline_untouched():
    opts = _parse([])
    assert opts == {'mixdl': False, 'mixdl_g': 1000.0, 'mixdl_d': 1.0, 'mixdl_alpha': 1.0, 'mixdl_coef': 'dirichlet',
                    'mixdl_interval': 2, 'mixdl_patch': True, 'mixdl_patch_head': 'lrelu', 'mixdl_keep_adv': False,
                    'mixdl_g_sim': 'cosine'}
    loss_kwargs = {'class_name': 'training.loss.StyleGAN2Loss', 'r1_gamma': 10}
    assert OPTIONS.configure(opts, loss_kwargs) == ''
    assert loss_kwargs == {'class_name': 'training.loss.StyleGAN2Loss', 'r1_gamma': 10}


def test_enabled_with_defaults():
    loss_kwargs = {'class_name': 'training.loss.StyleGAN2Loss', 'r1_gamma': 10}
    assert OPTIONS.configure(_parse(['--mixdl=1']), loss_kwargs) == '-mixdl'
    assert loss_kwargs == {'class_name': OPTIONS.loss_class, 'r1_gamma': 10, 'lambda_G': 1000.0, 'lambda_D': 1.0,
                           'mixup_alpha': 1.0, 'coef_kind': 'dirichlet', 'interval': 2,
                           'patch_discrimination': True, 'patch_head': 'lrelu', 'keep_full_adv': False,
                           'g_similarity': 'cosine'}


def test_non_default_settings_appear_in_desc():
    loss_kwargs = {}
    opts = _parse(['--mixdl=true', '--mixdl-g=0', '--mixdl-d=0', '--mixdl-patch=0', '--mixdl-alpha=0.1',
                   '--mixdl-coef=uniform', '--mixdl-interval=4', '--mixdl-patch-head=linear', '--mixdl-g-sim=centred'])
    assert OPTIONS.configure(opts, loss_kwargs) == '-mixdl-g0-d0-alpha0.1-uniform-int4-patch0-headlinear-gsimcentred'
    assert loss_kwargs['g_similarity'] == 'centred'
    assert loss_kwargs['lambda_G'] == 0.0 and loss_kwargs['patch_discrimination'] is False
    assert loss_kwargs['interval'] == 4 and loss_kwargs['coef_kind'] == 'uniform'
    assert loss_kwargs['patch_head'] == 'linear'


def test_mixdl_settings_without_mixdl_are_rejected():
    with pytest.raises(PluginConfigError, match='--mixdl-g only has an effect with --mixdl=1'):
        OPTIONS.configure(_parse(['--mixdl-g=5']), {})


@pytest.mark.parametrize('args', [['--mixdl-alpha=0'], ['--mixdl-interval=0'], ['--mixdl-g=-1'], ['--mixdl-coef=beta'],
                                  ['--mixdl-patch-head=relu']])
def test_bad_values_fail_at_parse_time(args):
    with pytest.raises(click.BadParameter):
        _parse(['--mixdl=1'] + args)
