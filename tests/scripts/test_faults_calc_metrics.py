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
    real_open = open

    class FullDiskFile:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def write(self, text):
            disk_full()

    def open_with_full_disk(file, mode='r', *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        return FullDiskFile(handle) if os.fspath(file).endswith('.jsonl') else handle
    monkeypatch.setattr('builtins.open', open_with_full_disk)
    line = error_line(run(f'--network={snapshot}'))
    assert str(snapshot.parent) in line and 'no space left' in line


def test_image_cut_short_in_the_dataset_is_one_line(snapshot):
    """The header check passes; the failure comes from a DataLoader worker decoding the pixels."""
    damaged = snapshot.parent / 'images' / 'img3.png'
    content = damaged.read_bytes()
    damaged.write_bytes(content[:len(content) // 2])
    detectors = write_standin_detectors(str(snapshot.parent.parent / 'detectors'))
    line = error_line(run(f'--network={snapshot}', '--metrics=fid50k_full', f'--detector-dir={detectors}'))
    assert str(damaged) in line and 'could not be decoded' in line
