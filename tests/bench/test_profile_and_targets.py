"""bench/profile_step.py and bench/gpu_targets.py on tiny CPU runs: the tables come out and hold real numbers."""

import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, 'bench', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TINY = '16 --cfg=fewshot --aug=noaug --cbase=256 --cmax=32'


def test_profile_step_reports_every_phase_with_flops_and_no_device_reads():
    profile_step = _load('profile_step')
    report = profile_step.profile(TINY, device='cpu', minibatches=4, warmup=1, peak_tflops={'fp32': 1.0})
    phases = report['phases']
    for phase in ('Gmain', 'Dmain', 'Greg'):  # fewshot: path length every 4th minibatch, R1 every 16th
        assert phases[phase]['flops'] > 0 and phases[phase]['host_ms'] > 0, phase
    assert phases['Dmain']['flops'] > phases['Greg']['flops'] > 0  # Dmain runs G and D on every minibatch
    assert all(values['device_reads'] == 0 for values in phases.values())  # the sync-free step, measured
    assert report['flops_per_image'] == pytest.approx(report['flops_per_minibatch'] / 4)
    assert report['mfu']['fp32'] == pytest.approx(report['achieved_tflops'])
    text = profile_step.format_report(report)
    assert '| Dmain |' in text and 'GFLOP/image' in text and 'top CPU ops' in text


def test_profile_step_counts_device_reads():
    profile_step = _load('profile_step')
    report = profile_step.profile('16 --cfg=fewshot --cbase=256 --cmax=32', device='cpu', minibatches=4, warmup=1)
    assert report['phases']['Dmain']['device_reads'] > 0  # ADA's geometric padding is read back on the host


def test_gpu_targets_smoke_row(tmp_path):
    gpu_targets = _load('gpu_targets')
    out = tmp_path / 'targets.md'
    gpu_targets.main(['--smoke', '--no-profile', '--rows=fewshot64', f'--out={out}', f'--json={tmp_path / "t.jsonl"}'])
    text = out.read_text()
    assert 'Machine: CPU' in text
    row = next(line for line in text.splitlines() if line.startswith('| fewshot64 |'))
    before, after = [float(cell) for cell in row.split('|')[4:6]]
    assert before > 0 and after > 0
    assert '| 64 --cfg=fewshot batch 4: img/s, at least 4x before |' in text
