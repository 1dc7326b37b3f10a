"""Tests for metrics.plot: reading stats.jsonl and metric-*.jsonl, panel planning, and the missing-matplotlib message."""

import builtins
import json

import pytest

from metrics import plot
from tests.stylegan2_ada_mixdl.tiny_run import read_stats, tiny_config, train_run, write_image_folder


@pytest.fixture(scope='module')
def mixdl_run(tmp_path_factory):
    """A real two-minibatch MixDL run at 16 px on CPU: its stats.jsonl holds what the loss reports."""
    root = tmp_path_factory.mktemp('mixdl_run')
    config = tiny_config(write_image_folder(root / 'data', 16), dict(class_name='stylegan2_ada_mixdl.mixdl.MixDLLoss'),
                         minibatches=2, res=16, z_dim=8, w_dim=8, widths=dict(channel_base=128, channel_max=16))
    return train_run(root / 'run', config)


def test_plugin_terms_of_a_real_mixdl_run_get_their_own_panel(mixdl_run):
    # Only names with values: the stats registry is process-wide, so names other tests reported show with num 0.
    reported = {name for record in read_stats(mixdl_run) for name, value in record.items()
                if isinstance(value, dict) and value.get('num', 0) > 0}
    mixdl_names = {name for name in reported if name.startswith('Loss/') and 'mixdl' in name.lower()}
    assert len(mixdl_names) >= 4  # the G and D distance and patch terms
    figures = plot.plan_figures([mixdl_run])
    assert set(figures['mixdl']) == mixdl_names
    assert set(figures['losses']) == {name for name in reported if name.startswith('Loss/')} - mixdl_names
    assert 'Loss/G/loss' in figures['losses'] or 'Loss/D/loss' in figures['losses']


def _write_run(run_dir, offset=0.0):
    run_dir.mkdir()
    with open(run_dir / 'stats.jsonl', 'w') as f:
        for tick, kimg in enumerate([0.0, 4.0, 8.0]):
            f.write(json.dumps({'Progress/kimg': {'num': 1, 'mean': kimg, 'std': 0},
                                'Progress/augment': {'num': 1, 'mean': 0.1 * tick, 'std': 0},
                                'Loss/G/loss': {'num': 4, 'mean': 1.0 + tick + offset, 'std': 0.1},
                                'timestamp': 1.0 + tick}) + '\n')
        f.write('{"Progress/kimg": {"num"')   # a torn last line from a killed run
    with open(run_dir / 'metric-fid50k_full.jsonl', 'w') as f:
        for kimg, fid in [(8, 40.0), (0, 300.0)]:
            f.write(json.dumps({'results': {'fid50k_full': fid}, 'metric': 'fid50k_full',
                                'snapshot_pkl': f'network-snapshot-{kimg:06d}.pkl'}) + '\n')


def test_curves_are_read_and_sorted(tmp_path):
    _write_run(tmp_path / 'run1')
    stats = plot.load_stat_curves(str(tmp_path / 'run1'))
    assert stats['Loss/G/loss'] == ([0.0, 4.0, 8.0], [1.0, 2.0, 3.0])
    metrics = plot.load_metric_curves(str(tmp_path / 'run1'))
    assert metrics['fid50k_full'] == ([0, 8], [300.0, 40.0])


def test_sub_kimg_snapshot_names_give_fractional_kimg(tmp_path):
    run_dir = tmp_path / 'run'
    run_dir.mkdir()
    with open(run_dir / 'metric-fid50k_full.jsonl', 'w') as f:
        for name, fid in [('network-snapshot-000000.544.pkl', 90.0), ('network-snapshot-000001.088.pkl', 80.0)]:
            f.write(json.dumps({'results': {'fid50k_full': fid}, 'metric': 'fid50k_full', 'snapshot_pkl': name}) + '\n')
    assert plot.load_metric_curves(str(run_dir))['fid50k_full'] == ([0.544, 1.088], [90.0, 80.0])


def test_panels_for_several_runs(tmp_path):
    _write_run(tmp_path / 'a')
    _write_run(tmp_path / 'b', offset=1)
    figures = plot.plan_figures([str(tmp_path / 'a'), str(tmp_path / 'b')])
    assert set(figures) == {'losses', 'augment', 'metric-fid50k_full'}
    assert set(figures['losses']) == {'a: Loss/G/loss', 'b: Loss/G/loss'}
    assert figures['losses']['b: Loss/G/loss'][1] == [2.0, 3.0, 4.0]


def test_missing_matplotlib_gives_one_clear_line(tmp_path, monkeypatch, capsys):
    _write_run(tmp_path / 'run')
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith('matplotlib'):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, '__import__', no_matplotlib)
    assert plot.main([str(tmp_path / 'run'), '--out', str(tmp_path / 'out')]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'pip install matplotlib' in err[0]


def test_pngs_are_written(tmp_path):
    pytest.importorskip('matplotlib')
    _write_run(tmp_path / 'run')
    assert plot.main([str(tmp_path / 'run'), '--out', str(tmp_path / 'out')]) == 0
    assert (tmp_path / 'out' / 'losses.png').stat().st_size > 1000
    assert (tmp_path / 'out' / 'metric-fid50k_full.png').is_file()
