"""train.py's AugIntAE options: registered through the plug-in list, recorded in the config and the run desc, bad combinations refused."""
import os

import pytest

from tests._shared import DEMO_ZIP, train_dry_run as _dry_run

pytestmark = pytest.mark.skipif(not os.path.exists(DEMO_ZIP), reason='bundled demo dataset missing')


def test_augintae_options_reach_loss_kwargs_and_desc(tmp_path):
    result, config = _dry_run(tmp_path, '--augintae=1', '--augintae-mode=intae', '--augintae-adv=0.5')
    assert result.exit_code == 0, result.output
    loss_kwargs = config['loss_kwargs']
    assert loss_kwargs['class_name'] == 'stylegan2_ada_mixdl.augintae.AugIntAELoss'
    assert (loss_kwargs['mode'], loss_kwargs['adv_weight'], loss_kwargs['seed_recon_weight']) == ('intae', 0.5, 0.0)
    assert (loss_kwargs['aug_preset'], loss_kwargs['aug_strength'], loss_kwargs['k_rate']) == ('auto', 1.0, 0.001)
    assert os.path.basename(config['run_dir']).endswith('-augintae-intae-adv0.5')


@pytest.mark.parametrize('args, message', [
    (['--augintae-mode=ae'], '--augintae-mode only has an effect with --augintae=1'),
    (['--augintae=1', '--augintae-mode=ae', '--augintae-seed-recon=1'], '--augintae-seed-recon only applies to --augintae-mode=augintae'),
    (['--augintae=1', '--augintae-aug-strength=4'], '--augintae-aug-strength=4'),
    (['--augintae=1', '--mixdl=1'], 'cannot be combined'),
])
def test_bad_combinations_are_one_line_errors(tmp_path, args, message):
    result, _ = _dry_run(tmp_path, *args)
    assert result.exit_code != 0 and message in result.output, result.output
    assert 'Traceback' not in result.output
