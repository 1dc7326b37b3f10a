"""train.py's --grid option, the demo run's defaults and the closing line that says where the results are."""

import json
import os

import pytest
from click.testing import CliRunner

import train
from tests._shared import DEMO_ZIP, single_torch_thread, train_dry_run  # noqa: F401 (autouse fixture)
from stylegan2_ada_mixdl import demo_data


def printed_config(output):
    lines = output.splitlines()
    start = lines.index('{')
    return json.loads('\n'.join(lines[start:lines.index('}', start) + 1]))


@pytest.mark.skipif(not os.path.exists(DEMO_ZIP), reason='bundled demo dataset missing')
@pytest.mark.parametrize('value, expected', [('5x3', [5, 3]), ('12X2', [12, 2]), (None, [8, 4])])
def test_grid_option_sets_the_loops_grid_size(tmp_path, value, expected):
    result, config = train_dry_run(tmp_path, *([f'--grid={value}'] if value else []))
    assert result.exit_code == 0, result.output
    assert config['grid_size'] == expected  # default on CPU: at most 8x4
    assert f'Image grids:    {expected[0]}x{expected[1]} (grid-seeds.json lists their seeds)' in result.output


@pytest.mark.parametrize('value, message', [('3y', "is not WIDTHxHEIGHT; write e.g. --grid=8x4"),
                                            ('0x4', 'columns and rows must be 1 to 64'),
                                            ('8x4x2', 'is not WIDTHxHEIGHT'), ('8x65', 'columns and rows must be 1 to 64')])
def test_bad_grid_is_one_line_naming_the_option(tmp_path, value, message):
    result, _ = train_dry_run(tmp_path, f'--grid={value}')
    assert result.exit_code == 2 and message in result.output and "'--grid'" in result.output
    assert 'Traceback' not in result.output


@pytest.mark.skipif(demo_data.demo_dataset_path('emoji16-32.zip') is None, reason='bundled demo dataset missing')
def test_demo_fills_in_the_cpu_settings_the_user_did_not_give(tmp_path):
    result = CliRunner().invoke(train.main, [f'--outdir={tmp_path}', '--device=cpu', '--kimg=1', '--dry-run'])
    assert result.exit_code == 0, result.output
    assert result.output.startswith('No --data given: training on the bundled demo set data/demo/emoji16-32.zip with '
                                    '--cfg=fewshot --batch=8 --cbase=1024')
    config = printed_config(result.output)
    assert config['training_set_kwargs']['path'] == demo_data.demo_dataset_path('emoji16-32.zip')
    assert config['training_set_kwargs']['resolution'] == 32
    assert config['total_kimg'] == 1  # given, so kept
    assert config['batch_size'] == 8 and 'augment_kwargs' not in config and config['loss_kwargs']['r1_gamma'] == 1
    assert config['G_kwargs']['synthesis_kwargs']['channel_base'] == 1024 and config['grid_size'] == [8, 4]
    assert config['image_snapshot_ticks'] == 5 and config['kimg_per_tick'] == 1
    assert list(train.DEMO_SETTINGS['cpu']) == ['cfg', 'kimg', 'batch', 'cbase', 'cmax', 'gamma', 'aug', 'tick', 'snap']


def test_demo_without_its_dataset_says_to_pass_data(tmp_path, monkeypatch):
    monkeypatch.setattr(demo_data, 'demo_dataset_path', lambda name: None)
    result = CliRunner().invoke(train.main, [f'--outdir={tmp_path}', '--device=cpu', '--dry-run'])
    assert result.exit_code == 2
    assert 'the bundled demo set data/demo/emoji16-32.zip; pass --data=<zip or folder>' in result.output


def test_where_to_look_names_the_run_and_its_newest_fakes_grid(tmp_path):
    assert train.where_to_look(str(tmp_path)) == f'Done. Results in {tmp_path}.'
    for name in ('fakes_init.png', 'fakes000000.png', 'fakes000020.png', 'fakes000005.png', 'reals.png'):
        (tmp_path / name).write_bytes(b'')
    assert train.where_to_look(str(tmp_path)) == (f'Done. Results in {tmp_path}; newest fakes grid: '
                                                  f'{tmp_path / "fakes000020.png"} (reals.png beside it shows the '
                                                  f'training images).')
