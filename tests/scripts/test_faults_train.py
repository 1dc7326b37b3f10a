"""train.py under bad input and faults: each case ends in one 'Error: ...' line naming the problem, exits non-zero,
and leaves no run directory behind; sub-kimg snapshots keep distinct names; --resume=latest continues a run with
the options it was started with."""

import errno
import json
import os
import pickle
import zipfile

import numpy as np
import PIL.Image
import pytest

import dnnlib
import train
from tests._faults import error_line, foreign_pickle_bytes, invoke
from tests._shared import single_torch_thread  # noqa: F401 (autouse fixture)

TINY = ['--cbase=256', '--cmax=32', '--device=cpu', '--workers=0', '--metrics=none']


def write_images(folder, resolution, count=6, seed=1):
    folder.mkdir(parents=True)
    rng = np.random.RandomState(seed)
    for i in range(count):
        PIL.Image.fromarray((rng.rand(resolution, resolution, 3) * 255).astype(np.uint8)).save(folder / f'img{i}.png')
    return folder


def run_dirs(outdir):
    return sorted(os.listdir(outdir)) if os.path.isdir(outdir) else []


@pytest.fixture(scope='module')
def data16(tmp_path_factory):
    return str(write_images(tmp_path_factory.mktemp('faults') / 'tiny16', 16))


@pytest.fixture(scope='module')
def sub_kimg_run(tmp_path_factory, data16):
    """One finished 1-kimg run with --tick=0.25 --snap=2 (snapshots every half kimg) under its own outdir."""
    outdir = tmp_path_factory.mktemp('faults') / 'runs'
    result = invoke(train.main, [f'--outdir={outdir}', f'--data={data16}', *TINY, '--batch=32', '--kimg=1',
                                 '--tick=0.25', '--snap=2', '--aug=noaug'])
    assert result.exit_code == 0, result.output
    (name,) = run_dirs(outdir)
    return outdir, outdir / name

#----------------------------------------------------------------------------
# Data.

@pytest.mark.parametrize('container', ['folder', 'zip'])
def test_a_truncated_image_stops_before_training_with_one_line(tmp_path, container):
    folder = write_images(tmp_path / 'data', 16)
    whole = (folder / 'img3.png').read_bytes()
    (folder / 'img3.png').write_bytes(whole[:len(whole) // 2])  # the header survives, the pixels do not
    data = folder
    if container == 'zip':
        data = tmp_path / 'data.zip'
        with zipfile.ZipFile(data, 'w') as archive:
            for name in sorted(os.listdir(folder)):
                archive.write(folder / name, name)
    outdir = tmp_path / 'runs'
    line = error_line(invoke(train.main, [f'--outdir={outdir}', f'--data={data}', *TINY, '--kimg=1']))
    assert line.startswith('Error: --data: 1 of 6 images cannot be decoded: ') and 'img3.png' in line
    assert run_dirs(outdir) == []

#----------------------------------------------------------------------------
# Option values.

@pytest.mark.parametrize('args, flag', [
    (['--tick=nan'], '--tick'),
    (['--gamma=nan'], '--gamma'),
    (['--gamma=inf'], '--gamma'),
    (['--aug=fixed', '--p=nan'], '--p'),
    (['--target=-inf'], '--target'),
    (['--mixdl=1', '--mixdl-g=inf'], '--mixdl-g'),
    (['--adaptivemix=1', '--adaptivemix-weight=nan'], '--adaptivemix-weight'),
])
def test_non_finite_option_values_are_refused_up_front(tmp_path, data16, args, flag):
    result = invoke(train.main, [f'--outdir={tmp_path / "runs"}', f'--data={data16}', *TINY, *args, '--dry-run'])
    line = error_line(result)
    assert result.exit_code == 2 and f"'{flag}'" in line and 'is not a finite number' in line
    assert run_dirs(tmp_path / 'runs') == []


def test_training_options_json_refuses_what_json_cannot_store():
    config = dnnlib.EasyDict(total_kimg=float('nan'))
    with pytest.raises(train.click.ClickException, match='value JSON cannot store'):
        train._training_options_text(config, dnnlib.EasyDict())

#----------------------------------------------------------------------------
# Snapshot names and continuing a run.

def test_sub_kimg_snapshots_do_not_overwrite_each_other(sub_kimg_run):
    _, run = sub_kimg_run
    names = os.listdir(run)
    # Ticks end at 32 images, then every 256 or so: snapshots at ticks 0, 2 and the last one.
    assert sorted(n for n in names if n.startswith('network-snapshot-')) == \
        ['network-snapshot-000000.032.pkl', 'network-snapshot-000000.544.pkl', 'network-snapshot-000001.024.pkl']
    assert sorted(n for n in names if n.startswith('training-state-')) == \
        ['training-state-000000.032.pt', 'training-state-000000.544.pt', 'training-state-000001.024.pt']
    strict = json.loads((run / 'training_options.json').read_text(), parse_constant=lambda name: pytest.fail(name))
    recorded = strict['train_py_options']
    assert recorded['values']['tick'] == 0.25 and recorded['values']['cbase'] == 256 and 'cbase' in recorded['given']


def test_resume_latest_continues_with_the_runs_own_options(sub_kimg_run, tmp_path):
    outdir, first = sub_kimg_run
    # Only the new length is given: the data, widths, augmentation, device and loader come from the run itself.
    result = invoke(train.main, [f'--outdir={outdir}', '--resume=latest', '--kimg=2'])
    assert result.exit_code == 0, result.output
    assert f'Continuing {first} with the options it was started with; changed now: --kimg=2 (the run has 1).' in result.output
    second = outdir / run_dirs(outdir)[1]
    assert second.name.startswith('00001-') and second.name.endswith('-noaug-resumelatest-cbase256-cmax32')
    assert 'network-snapshot-000002.016.pkl' in os.listdir(second)  # 63 minibatches of 32 after 1.024 kimg
    options = json.loads((second / 'training_options.json').read_text())
    assert options['total_kimg'] == 2 and options['G_kwargs']['synthesis_kwargs']['channel_base'] == 256


@pytest.mark.parametrize('args, refused', [
    (['--cbase=512'], '--cbase=512 (the run has 256)'),
    (['--mixdl=1'], '--mixdl=True (the run has False)'),
    (['--aug=ada'], '--aug=ada (the run has noaug)'),
])
def test_resume_latest_refuses_options_that_cannot_change_mid_run(sub_kimg_run, args, refused):
    outdir, _ = sub_kimg_run
    before = run_dirs(outdir)
    line = error_line(invoke(train.main, [f'--outdir={outdir}', '--resume=latest', '--kimg=3', *args]))
    assert refused in line and 'cannot change mid-run' in line
    assert run_dirs(outdir) == before


def test_resume_latest_with_data_of_another_resolution_is_one_line(sub_kimg_run, tmp_path):
    outdir, _ = sub_kimg_run
    data32 = write_images(tmp_path / 'data32', 32)
    before = run_dirs(outdir)
    line = error_line(invoke(train.main, [f'--outdir={outdir}', '--resume=latest', '--kimg=3', f'--data={data32}']))
    assert "the pickle's G has resolution 16, the network being trained has 32" in line
    assert run_dirs(outdir) == before

#----------------------------------------------------------------------------
# Resume pickles.

def test_a_16px_snapshot_into_a_32px_run_is_refused_before_any_run_dir(sub_kimg_run, tmp_path):
    _, run = sub_kimg_run
    data32 = write_images(tmp_path / 'data32', 32)
    outdir = tmp_path / 'runs'
    line = error_line(invoke(train.main, [f'--outdir={outdir}', f'--data={data32}', *TINY, '--kimg=1',
                                          f'--resume={run / "network-snapshot-000000.032.pkl"}']))
    assert "--resume: the pickle's G has resolution 16, the network being trained has 32" in line
    assert run_dirs(outdir) == []


@pytest.mark.parametrize('kind, cause', [
    ('empty', 'empty or ends early'),
    ('truncated', 'ends early'),
    ('foreign', 'refers to code that is not available here'),
])
def test_unreadable_resume_pickles_are_one_line(sub_kimg_run, data16, tmp_path, kind, cause):
    _, run = sub_kimg_run
    whole = (run / 'network-snapshot-000000.032.pkl').read_bytes()
    content = dict(empty=b'', truncated=whole[:len(whole) // 2], foreign=foreign_pickle_bytes())[kind]
    pkl = tmp_path / f'{kind}.pkl'
    pkl.write_bytes(content)
    outdir = tmp_path / 'runs'
    line = error_line(invoke(train.main, [f'--outdir={outdir}', f'--data={data16}', *TINY, '--kimg=1', f'--resume={pkl}']))
    assert line.startswith(f'Error: --resume: {pkl}: ') and cause in line
    assert run_dirs(outdir) == []


@pytest.mark.parametrize('content, cause', [
    (b'', 'the file is empty or cut short'),
    (b'PK\x03\x04 cut short', 'Cannot read training state'),
    (pickle.dumps({'format': open}), 'it holds more than tensors and plain data'),
])
def test_unreadable_training_states_are_one_line(tmp_path, content, cause):
    state = tmp_path / '00000-run' / 'training-state-000001.pt'
    state.parent.mkdir()
    state.write_bytes(content)
    line = error_line(invoke(train.main, [f'--outdir={tmp_path / "runs"}', f'--resume={state}']))
    assert str(state) in line and cause in line
    assert run_dirs(tmp_path / 'runs') == []


def test_a_replaced_snapshot_beside_its_state_is_refused(sub_kimg_run, tmp_path):
    _, run = sub_kimg_run
    state = str(run / 'training-state-000000.544.pt')
    copy = tmp_path / '00000-copy'
    copy.mkdir()
    for name in ('training_options.json', 'training-state-000000.544.pt'):
        (copy / name).write_bytes((run / name).read_bytes())
    (copy / 'network-snapshot-000000.544.pkl').write_bytes((run / 'network-snapshot-000000.032.pkl').read_bytes())
    line = error_line(invoke(train.main, [f'--outdir={tmp_path / "runs"}', f'--resume={copy / "training-state-000000.544.pt"}']))
    assert 'does not belong to' in line and 'network-snapshot-000000.544.pkl' in line
    assert run_dirs(tmp_path / 'runs') == [] and os.path.isfile(state)

#----------------------------------------------------------------------------
# The file system.

def test_outdir_that_is_a_file_is_one_line(tmp_path, data16):
    blocker = tmp_path / 'runs'
    blocker.write_text('not a folder')
    line = error_line(invoke(train.main, [f'--outdir={blocker}', f'--data={data16}', *TINY, '--kimg=1']))
    assert str(blocker) in line and ('not a folder' in line or 'is a file' in line)


def test_full_disk_while_writing_the_options_is_one_line_and_leaves_no_run_dir(tmp_path, data16, monkeypatch):
    real = dnnlib.util.write_atomically

    def full_disk(path, write_fn, mode='wb'):
        def failing_write(f):
            f.write('{')
            raise OSError(errno.ENOSPC, 'No space left on device')
        return real(path, failing_write, mode)
    monkeypatch.setattr(dnnlib.util, 'write_atomically', full_disk)
    outdir = tmp_path / 'runs'
    line = error_line(invoke(train.main, [f'--outdir={outdir}', f'--data={data16}', *TINY, '--kimg=1']))
    assert 'training_options.json: no space left on the device' in line
    assert run_dirs(outdir) == []


@pytest.mark.skipif(os.name != 'posix' or os.geteuid() == 0, reason='needs a user that permissions apply to')
def test_read_only_outdir_is_one_line(tmp_path, data16):
    outdir = tmp_path / 'runs'
    outdir.mkdir()
    outdir.chmod(0o555)
    try:
        line = error_line(invoke(train.main, [f'--outdir={outdir}', f'--data={data16}', *TINY, '--kimg=1']))
    finally:
        outdir.chmod(0o755)
    assert str(outdir) in line and 'permission denied' in line


def test_pickles_of_the_run_load_as_upstream_tools_expect(sub_kimg_run):
    _, run = sub_kimg_run
    with open(run / 'network-snapshot-000001.024.pkl', 'rb') as f:
        assert list(pickle.load(f)) == ['training_set_kwargs', 'G', 'D', 'G_ema', 'augment_pipe']
