"""train.py's MixDL options: registered through the plug-in mechanism, recorded in the config and the run desc."""
import os

import pytest

from tests._shared import DEMO_ZIP, train_dry_run as _dry_run


@pytest.mark.skipif(not os.path.exists(DEMO_ZIP), reason='bundled demo dataset missing')
def test_mixdl_options_reach_loss_kwargs_and_desc(tmp_path):
    result, config = _dry_run(tmp_path, '--mixdl=1', '--mixdl-g=0', '--mixdl-interval=4')
    assert result.exit_code == 0, result.output
    loss_kwargs = config['loss_kwargs']
    assert loss_kwargs['class_name'] == 'stylegan2_ada_mixdl.mixdl.MixDLLoss'
    assert (loss_kwargs['lambda_G'], loss_kwargs['lambda_D'], loss_kwargs['interval']) == (0.0, 1.0, 4)
    assert loss_kwargs['coef_kind'] == 'dirichlet' and loss_kwargs['patch_discrimination'] is True
    assert os.path.basename(config['run_dir']).endswith('-mixdl-g0-int4')


@pytest.mark.skipif(not os.path.exists(DEMO_ZIP), reason='bundled demo dataset missing')
def test_default_run_is_untouched_and_stray_options_fail(tmp_path):
    result, config = _dry_run(tmp_path)
    assert result.exit_code == 0, result.output
    assert config['loss_kwargs']['class_name'] == 'training.loss.StyleGAN2Loss'
    assert 'mixdl' not in os.path.basename(config['run_dir'])
    result, _ = _dry_run(tmp_path, '--mixdl-alpha=0.1')
    assert result.exit_code != 0 and '--mixdl-alpha only has an effect with --mixdl=1' in result.output
