"""Faults for calc_metrics.py: unreadable pickles, a missing dataset, and a full disk when recording a result."""

import os

import pytest

import calc_metrics
from tests._faults import disk_full, error_line, foreign_pickle_bytes, invoke
from tests._shared import offline  # noqa: F401 (fixture)
from tests.metrics.standins import write_standin_detectors
from tests.scripts.test_calc_metrics import _tiny_snapshot


@pytest.fixture
def snapshot(offline):
    run_dir = offline / 'run'
    run_dir.mkdir()
    return _tiny_snapshot(run_dir)


def run(*args):
    return invoke(calc_metrics.calc_metrics, ['--metrics=pix_div1k', '--item-cap=4', *args])


@pytest.mark.parametrize('kind, needle', [
    ('empty', 'empty or ends early'),
    ('truncated', 'ends early'),
    ('foreign', 'not available here'),
    ('missing', 'no such file or folder'),
])
def test_unreadable_pickles_are_one_line(snapshot, tmp_path, kind, needle):
    path = tmp_path / 'bad.pkl'
    content = snapshot.read_bytes()
    if kind != 'missing':
        path.write_bytes({'empty': b'', 'truncated': content[:len(content) // 2], 'foreign': foreign_pickle_bytes()}[kind])
    line = error_line(run(f'--network={path}'))
    assert str(path) in line and needle in line and '--network' in line


def test_missing_dataset_is_one_line(snapshot, tmp_path):
    missing = tmp_path / 'no-such-images'
    line = error_line(run(f'--network={snapshot}', f'--data={missing}'))
    assert str(missing) in line and 'does not exist' in line


def test_full_disk_when_appending_the_result_is_one_line(snapshot, monkeypatch):
    import dnnlib
    earlier = b'{"results": {"pix_div1k": 1.0}, "metric": "pix_div1k"}\n'
    jsonl = snapshot.parent / 'metric-pix_div1k.jsonl'
    jsonl.write_bytes(earlier)
    real_write_atomically = dnnlib.util.write_atomically

    def full_disk_for_jsonl(path, write_fn, mode='wb'):
        # The real writer, with the disk filling up while the .jsonl's temporary copy is written.
        return real_write_atomically(path, disk_full if str(path).endswith('.jsonl') else write_fn, mode)
    monkeypatch.setattr(dnnlib.util, 'write_atomically', full_disk_for_jsonl)
    line = error_line(run(f'--network={snapshot}'))
    assert str(snapshot.parent) in line and 'no space left' in line
    assert jsonl.read_bytes() == earlier  # the earlier records survive
    assert not [name for name in os.listdir(snapshot.parent) if name.endswith('.tmp')]


def test_image_cut_short_in_the_dataset_is_one_line(snapshot):
    """The header check passes; the failure comes from a DataLoader worker decoding the pixels."""
    damaged = snapshot.parent / 'images' / 'img3.png'
    content = damaged.read_bytes()
    damaged.write_bytes(content[:len(content) // 2])
    detectors = write_standin_detectors(str(snapshot.parent.parent / 'detectors'))
    line = error_line(run(f'--network={snapshot}', '--metrics=fid50k_full', f'--detector-dir={detectors}'))
    assert str(damaged) in line and 'could not be decoded' in line
