"""train.py: option validation (one-line errors), presets and run naming, a CLI run + resume=latest, and two gloo processes."""

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import train
from tests._shared import single_torch_thread  # noqa: F401 (autouse fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = ['--cbase=256', '--cmax=32', '--device=cpu', '--workers=0', '--metrics=none']


@pytest.fixture(scope='module')
def data16(tmp_path_factory):
    folder = tmp_path_factory.mktemp('tiny16')
    rng = np.random.RandomState(1)
    for i in range(6):
        PIL.Image.fromarray((rng.rand(16, 16, 3) * 255).astype(np.uint8)).save(folder / f'img{i}.png')
    return str(folder)


def invoke(*args):
    return CliRunner().invoke(train.main, list(args), catch_exceptions=False)


def config_for(*args, outdir='unused'):
    """(desc, config) exactly as train.py builds them, without running anything."""
    ctx = train.main.make_context('train.py', [f'--outdir={outdir}', *args])
    given = lambda name: train._given(ctx, name)  # noqa: E731
    desc, config, _ = train.build_training_config(dict(ctx.params), given=given)
    return desc, config


def last_line(result):
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    return lines[-1]

#----------------------------------------------------------------------------

@pytest.mark.parametrize('args, message', [
    (['--gpus=3'], '--gpus=3 is not a power of two'),
    (['--gpus=2', '--batch=5'], '--batch=5 is not divisible by --gpus=2'),
    (['--aug=fixed'], '--aug=fixed needs --p'),
    (['--p=0.3'], '--p only applies to --aug=fixed'),
    (['--aug=fixed', '--p=1.5'], '--p=1.5 is out of range; use a value in [0, 1]'),
    (['--aug=noaug', '--target=0.7'], '--target only applies to --aug=ada'),
    (['--target=-0.1'], '--target=-0.1 is out of range; use a value in [0, 1]'),
    (['--aug=noaug', '--augpipe=bg'], '--augpipe has no effect with --aug=noaug'),
    (['--cond=1'], '--cond=True requires labels specified in dataset.json'),
    (['--subset=99'], '--subset=99 is out of range'),
    (['--gamma=-1'], 'R1 gamma must be 0 or more'),
    (['--batch-gpu=3', '--batch=8'], '--batch-gpu=3 must divide the per-process batch 8'),
    (['--metrics=fid_bogus'], '--metrics: unknown fid_bogus'),
    (['--resume=latest'], '--resume=latest found no training-state'),
    (['--ops=cuda'], '--ops=cuda needs a CUDA device'),
])
def test_bad_options_fail_with_one_line(tmp_path, data16, args, message):
    result = invoke(f'--outdir={tmp_path}', f'--data={data16}', '--device=cpu', *args)
    assert result.exit_code == 2
    assert 'Traceback' not in result.output
    assert last_line(result).startswith('Error: ') and message in last_line(result)
    assert not os.listdir(tmp_path)


def test_unknown_cfg_and_bad_dataset_are_one_line(tmp_path, data16):
    result = invoke(f'--outdir={tmp_path}', f'--data={data16}', '--cfg=bogus')
    assert result.exit_code == 2 and "'bogus' is not one of" in last_line(result)

    (tmp_path / 'odd').mkdir()
    PIL.Image.new('RGB', (16, 12)).save(tmp_path / 'odd' / 'a.png')
    result = invoke(f'--outdir={tmp_path}', f'--data={tmp_path / "odd"}', '--device=cpu')
    assert result.exit_code == 2 and 'Traceback' not in result.output
    assert last_line(result).startswith('Error: --data: ') and 'a.png' in last_line(result)

    result = invoke(f'--outdir={tmp_path}', f'--data={tmp_path / "missing.zip"}', '--device=cpu')
    assert result.exit_code == 2 and last_line(result).startswith('Error: --data: ')


def test_presets_and_run_naming(tmp_path, data16):
    desc, config = config_for(f'--data={data16}', '--device=cpu', '--metrics=none')
    assert desc == f'{os.path.basename(data16)}-auto1'
    assert config.batch_size == 32 and config.batch_gpu == 32 and config.ema_kimg == 10 and config.ema_rampup == 0.05
    assert config.loss_kwargs.r1_gamma == pytest.approx(0.0002 * 16 ** 2 / 32)
    assert config.G_kwargs.synthesis_kwargs.channel_base == 16384 and config.G_kwargs.mapping_kwargs.num_layers == 2
    assert config.G_kwargs.synthesis_kwargs.num_fp16_res == 0  # CPU runs in fp32
    assert config.ada_target == 0.6 and config.augment_kwargs.class_name == 'training.augment.AugmentPipe'
    desc, config = config_for(f'--data={data16}', '--device=cpu', '--metrics=none', '--target=0.7')
    assert desc.endswith('-target0.7') and config.ada_target == 0.7 and 'augment_p' not in config

    desc, config = config_for(f'--data={data16}', '--device=cpu', '--cfg=fewshot')
    assert desc.endswith('-fewshot')
    assert config.metrics == [] and config.training_set_kwargs.xflip is True
    assert (config.batch_size, config.batch_gpu, config.ema_kimg, config.total_kimg) == (4, 4, 1.25, 600)
    assert config.G_opt_kwargs.lr == 0.002 and config.loss_kwargs.r1_gamma == 10
    assert config.G_kwargs.synthesis_kwargs.channel_base == 32768 and config.G_kwargs.mapping_kwargs.num_layers == 8

    desc, config = config_for(f'--data={data16}', '--device=cpu', '--cfg=paper256', '--gpus=2', '--mirror=1',
                              '--gamma=2', '--kimg=10', '--aug=fixed', '--p=0.25', '--augpipe=bg', '--freezed=3',
                              '--metrics=none')
    assert desc == f'{os.path.basename(data16)}-mirror-paper256-gamma2-kimg10-fixed-p0.25-bg-freezed3'
    assert config.batch_gpu == 8 and config.D_kwargs.epilogue_kwargs.mbstd_group_size == 8
    assert config.augment_p == 0.25 and 'ada_target' not in config
    assert config.D_kwargs.block_kwargs.freeze_layers == 3

    desc, config = config_for(f'--data={data16}', '--device=cpu', '--cfg=cifar', '--aug=diffaug', '--metrics=none')
    assert config.loss_kwargs.pl_weight == 0 and config.D_kwargs.architecture == 'orig'
    assert config.augment_kwargs.class_name == 'training.augment.DiffAugment' and config.augment_p == 1.0

    desc, config = config_for(f'--data={data16}', '--device=cpu', '--resume=ffhq256', '--metrics=none')
    assert desc.endswith('-resumeffhq256') and config.ada_kimg == 100 and config.ema_rampup is None

    # Run ids continue after the largest existing one; dry runs write nothing.
    (tmp_path / '00007-old').mkdir()
    result = invoke(f'--outdir={tmp_path}', f'--data={data16}', '--device=cpu', '--metrics=none', '--dry-run')
    assert result.exit_code == 0
    assert f'00008-{os.path.basename(data16)}-auto1' in result.output
    assert sorted(os.listdir(tmp_path)) == ['00007-old']


def test_cli_run_then_resume_latest(tmp_path, data16):
    common = [f'--outdir={tmp_path}', f'--data={data16}', *TINY, '--batch=32', '--snap=100', '--tick=1']
    result = invoke(*common, '--kimg=1', '--aug=noaug')
    assert result.exit_code == 0, result.output
    (first,) = os.listdir(tmp_path)
    assert first == f'00000-{os.path.basename(data16)}-auto1-kimg1-batch32-noaug-cbase256-cmax32'
    run = tmp_path / first
    files = set(os.listdir(run))
    assert {'training_options.json', 'log.txt', 'stats.jsonl', 'reals.png', 'fakes_init.png', 'fakes000000.png',
            'fakes000001.png', 'network-snapshot-000001.pkl', 'training-state-000001.pt'} <= files
    log = (run / 'log.txt').read_text()
    assert 'tick 0 ' in log and 'sec/kimg' in log and '\r' not in log
    options = json.loads((run / 'training_options.json').read_text())
    assert options['total_kimg'] == 1 and options['run_dir'] == str(run)
    with open(run / 'network-snapshot-000001.pkl', 'rb') as f:
        assert list(pickle.load(f)) == ['training_set_kwargs', 'G', 'D', 'G_ema', 'augment_pipe']

    result = invoke(*common, '--kimg=2', '--aug=noaug', '--resume=latest')
    assert result.exit_code == 0, result.output
    second = sorted(os.listdir(tmp_path))[1]
    assert second.startswith('00001-') and second.endswith('-resumelatest-cbase256-cmax32')
    with open(tmp_path / second / 'stats.jsonl') as f:
        kimgs = [json.loads(line)['Progress/kimg']['mean'] for line in f]
    assert kimgs[0] > 1.0 and kimgs[-1] == pytest.approx(2.016, abs=0.02)
    assert 'network-snapshot-000002.pkl' in os.listdir(tmp_path / second)


def test_two_gloo_processes_on_cpu(tmp_path, data16):
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    command = [sys.executable, os.path.join(ROOT, 'train.py'), f'--outdir={tmp_path}', f'--data={data16}', *TINY,
               '--gpus=2', '--batch=32', '--kimg=1', '--snap=100', '--tick=1', '--aug=noaug']
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (run,) = os.listdir(tmp_path)
    with open(tmp_path / run / 'network-snapshot-000001.pkl', 'rb') as f:
        snapshot = pickle.load(f)
    images = snapshot['G_ema'](torch.randn(2, 512), torch.zeros(2, 0), noise_mode='const')
    assert images.shape == (2, 3, 16, 16) and torch.isfinite(images).all()
    state = torch.load(tmp_path / run / 'training-state-000001.pt', weights_only=True)
    assert state['num_gpus'] == 2 and len(state['rng']) == 2 and state['cur_nimg'] == 1024
    with open(tmp_path / run / 'stats.jsonl') as f:
        first_tick = json.loads(f.readline())
    assert first_tick['Loss/G/loss']['num'] == 32  # one minibatch: both processes' 16 samples, reduced


def test_loader_workers_default_to_three_but_never_more_than_the_usable_cores(data16, monkeypatch):
    monkeypatch.setattr(os, 'sched_getaffinity', lambda pid: {0, 1}, raising=False)
    _, config = config_for(f'--data={data16}', '--device=cpu')
    assert config.data_loader_kwargs.num_workers == 2
    monkeypatch.setattr(os, 'sched_getaffinity', lambda pid: set(range(16)), raising=False)
    _, config = config_for(f'--data={data16}', '--device=cpu')
    assert config.data_loader_kwargs.num_workers == 3
    _, config = config_for(f'--data={data16}', '--device=cpu', '--workers=5')
    assert config.data_loader_kwargs.num_workers == 5


def test_docs_keep_the_current_help():
    help_text = CliRunner().invoke(train.main, ['--help'], prog_name='train.py', terminal_width=100).output
    doc_path = os.path.join(ROOT, 'docs', 'TRAINING.md')
    with open(doc_path) as f:
        doc = f.read()
    start, end = '<!-- train-help-start -->\n', '<!-- train-help-end -->'
    head, rest = doc.split(start)
    _, tail = rest.split(end)
    current = f'{head}{start}```text\n{help_text}```\n{end}{tail}'
    if os.environ.get('REGEN_DOCS') == '1':
        with open(doc_path, 'w') as f:
            f.write(current)
    assert doc == current, 'docs/TRAINING.md is out of date: REGEN_DOCS=1 python -m pytest tests/scripts/test_train.py -k help'


def test_missing_metric_detector_stops_before_the_run_dir_is_made(tmp_path, data16, monkeypatch):
    monkeypatch.setenv('SG2MIXDL_OFFLINE', '1')
    monkeypatch.setenv('SG2MIXDL_DETECTOR_DIR', str(tmp_path / 'no_detectors_here'))
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'empty_cache'))
    outdir = tmp_path / 'runs'
    result = invoke(f'--outdir={outdir}', f'--data={data16}', '--metrics=fid50k_full', '--kimg=1', '--device=cpu')
    assert result.exit_code != 0
    message = result.output
    assert '--metrics' in message and 'fid50k_full' in message and '--metrics=none' in message
    assert 'Traceback' not in message
    assert not outdir.exists() or not any(outdir.iterdir())


def test_detector_dir_lets_the_metric_check_pass_offline(tmp_path, data16, monkeypatch):
    monkeypatch.setenv('SG2MIXDL_OFFLINE', '1')
    monkeypatch.delenv('SG2MIXDL_DETECTOR_DIR', raising=False)
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'empty_cache'))
    detectors = tmp_path / 'detectors'
    detectors.mkdir()
    (detectors / 'inception-2015-12-05.pt').write_bytes(b'stand-in: only its presence is checked up front')
    from metrics import metric_main
    metric_main.check_metrics_available(['fid50k_full'], detector_dir=str(detectors))  # found by file name
    result = invoke(f'--outdir={tmp_path / "runs"}', f'--data={data16}', '--metrics=fid50k_full',
                    f'--detector-dir={tmp_path / "missing"}', '--device=cpu', '--dry-run')
    assert result.exit_code != 0 and '--detector-dir' in last_line(result) and 'is not a folder' in last_line(result)
    result = invoke(f'--outdir={tmp_path / "runs"}', f'--data={data16}', '--metrics=fid50k_full',
                    f'--detector-dir={detectors}', '--device=cpu', '--dry-run')
    assert result.exit_code == 0, result.output
    assert os.environ['SG2MIXDL_DETECTOR_DIR'] == str(detectors)


def test_gpus_without_cuda_is_one_line_naming_the_fix(tmp_path, data16, monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    for gpus in ('2', '1'):
        result = invoke(f'--outdir={tmp_path}', f'--data={data16}', f'--gpus={gpus}', '--metrics=none', '--dry-run')
        assert result.exit_code == 2 and 'Traceback' not in result.output
        line = last_line(result)
        assert line.startswith(f'Error: --gpus={gpus}, but PyTorch') and 'sees no CUDA device' in line
        assert 'install a CUDA build of torch' in line and '--device=cpu' in line
    # On purpose: N CPU processes; and no --gpus at all still falls back to one CPU process.
    assert invoke(f'--outdir={tmp_path}', f'--data={data16}', '--gpus=2', '--device=cpu', '--metrics=none', '--dry-run').exit_code == 0
    result = invoke(f'--outdir={tmp_path}', f'--data={data16}', '--metrics=none', '--dry-run')
    assert result.exit_code == 0 and 'Processes:      1 (CPU)' in result.output
    assert not os.listdir(tmp_path)


def test_device_mps_is_refused_with_a_clear_message_where_it_cannot_train(tmp_path, data16, monkeypatch):
    if not torch.backends.mps.is_available():
        result = invoke(f'--outdir={tmp_path}', f'--data={data16}', '--device=mps', '--metrics=none', '--dry-run')
        assert result.exit_code == 2 and 'Traceback' not in result.output
        assert last_line(result).startswith('Error: --device=mps: this PyTorch') and last_line(result).endswith('use --device=cpu')

    # Where MPS is present, a failing test step of the ops is the reason given; a working one trains on MPS in fp32.
    monkeypatch.setattr(torch.backends.mps, 'is_built', lambda: True)
    monkeypatch.setattr(torch.backends.mps, 'is_available', lambda: True)

    def broken_probe(device):
        raise NotImplementedError('The operator aten::grid_sampler_2d_backward is not implemented for MPS\nmore text')
    monkeypatch.setattr(train, 'probe_training_ops', broken_probe)
    result = invoke(f'--outdir={tmp_path}', f'--data={data16}', '--device=mps', '--metrics=none', '--dry-run')
    assert result.exit_code == 2
    assert last_line(result) == ('Error: --device=mps: a test training step in fp32 with the reference ops failed on MPS '
                                 '(The operator aten::grid_sampler_2d_backward is not implemented for MPS); use --device=cpu')
    monkeypatch.setattr(train, 'probe_training_ops', lambda device: None)
    _, config = config_for(f'--data={data16}', '--device=mps', '--cfg=paper256', '--metrics=none')
    assert config.device == 'mps' and config.G_kwargs.synthesis_kwargs.num_fp16_res == 0 and config.D_kwargs.num_fp16_res == 0
    assert config.data_loader_kwargs.pin_memory is False
    result = invoke(f'--outdir={tmp_path}', f'--data={data16}', '--device=mps', '--gpus=2', '--metrics=none', '--dry-run')
    assert result.exit_code == 2 and 'one MPS device' in last_line(result)


def test_probe_training_ops_runs_a_real_step_on_cpu(monkeypatch):
    from torch_utils.ops import conv2d_gradfix
    monkeypatch.setattr(conv2d_gradfix, 'enabled', False)
    train.probe_training_ops(torch.device('cpu'))
    assert conv2d_gradfix.enabled is False  # switches put back


def test_precision_policy_lives_in_one_function():
    G_kwargs = dict(synthesis_kwargs=dict(num_fp16_res=4, conv_clamp=256))
    D_kwargs = dict(num_fp16_res=4, conv_clamp=256)
    train.apply_precision(G_kwargs, D_kwargs, 'cuda')
    assert G_kwargs['synthesis_kwargs']['num_fp16_res'] == D_kwargs['num_fp16_res'] == 4
    for device_type in ('cpu', 'mps'):
        train.apply_precision(G_kwargs, D_kwargs, device_type)
        assert G_kwargs['synthesis_kwargs']['num_fp16_res'] == D_kwargs['num_fp16_res'] == 0
        assert D_kwargs['conv_clamp'] == 256
    train.apply_precision(G_kwargs, D_kwargs, 'cuda', fp32=True)
    assert G_kwargs['synthesis_kwargs']['conv_clamp'] is None and D_kwargs['conv_clamp'] is None
    assert train.process_device('cpu', local_rank=3) == torch.device('cpu')


def test_loop_takes_the_device_and_loader_settings_it_is_given(data16):
    # CPU: no pinned memory, no prefetching without workers, fp32 layers; the loop itself decides none of it.
    _, config = config_for(f'--data={data16}', '--device=cpu', '--workers=0', '--cfg=paper256', '--metrics=none')
    assert config.data_loader_kwargs == {'pin_memory': False, 'num_workers': 0}
    assert config.G_kwargs.synthesis_kwargs.num_fp16_res == 0 and config.device == 'cpu'
    import inspect
    from training import training_loop
    source = inspect.getsource(training_loop)
    assert 'set_device' not in source and 'pin_memory' not in source and 'num_fp16_res' not in source
