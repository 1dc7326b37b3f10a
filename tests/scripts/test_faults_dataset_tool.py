"""Faults for dataset_tool.py: an existing destination, a full disk, absurd sizes and malformed labels."""

import json
import os
import zipfile

import numpy as np
import PIL.Image
import pytest

import dataset_tool
from tests._faults import disk_full, error_line, invoke


def make_source(folder, count=3, labels=None):
    folder.mkdir()
    for index in range(count):
        pixels = np.random.RandomState(index).randint(0, 256, size=[8, 8, 3], dtype=np.uint8)
        PIL.Image.fromarray(pixels).save(folder / f'{index}.png')
    if labels is not None:
        (folder / 'dataset.json').write_text(labels)
    return folder


def run(*args):
    return invoke(dataset_tool.main, args)


def test_existing_zip_is_refused_unless_overwrite(tmp_path):
    source = make_source(tmp_path / 'src')
    dest = tmp_path / 'out.zip'
    dest.write_bytes(b'an older dataset')
    line = error_line(run('--source', source, '--dest', dest))
    assert str(dest) in line and '--overwrite' in line
    assert dest.read_bytes() == b'an older dataset'
    assert run('--source', source, '--dest', dest, '--overwrite').exit_code == 0
    with zipfile.ZipFile(dest) as archive:
        assert sum(name.endswith('.png') for name in archive.namelist()) == 3


@pytest.mark.parametrize('fail_at', ['image', 'close'])
def test_full_disk_leaves_no_partial_and_no_dest(tmp_path, monkeypatch, fail_at):
    source = make_source(tmp_path / 'src')
    dest = tmp_path / 'out' / 'data.zip'
    if fail_at == 'image':
        writes = []
        real_writestr = zipfile.ZipFile.writestr

        def writestr_until_full(archive, info, data, *args, **kwargs):
            writes.append(info)
            if len(writes) == 2:
                disk_full()
            return real_writestr(archive, info, data, *args, **kwargs)
        monkeypatch.setattr(zipfile.ZipFile, 'writestr', writestr_until_full)
    else:
        monkeypatch.setattr(zipfile.ZipFile, 'close', lambda archive: disk_full())
    line = error_line(run('--source', source, '--dest', dest))
    assert str(dest) in line and 'no space left' in line
    assert os.listdir(dest.parent) == []


def test_huge_resolution_is_refused_before_any_work(tmp_path, monkeypatch):
    source = make_source(tmp_path / 'src')

    def no_resize(*args, **kwargs):  # without the up-front check this would allocate 12 GB
        raise AssertionError('an image was resized although the size is refused')
    monkeypatch.setattr(PIL.Image.Image, 'resize', no_resize)
    line = error_line(run('--source', source, '--dest', tmp_path / 'out.zip', '--resolution=65536x65536'))
    assert '65536x65536' in line and str(dataset_tool.MAX_SIDE) in line
    assert not (tmp_path / 'out.zip').exists() and not (tmp_path / 'out.zip.partial').exists()


@pytest.mark.parametrize('labels, needle', [
    ('{"labels": [["0.png"]]}', 'entry 0 is ["0.png"]'),
    ('{"labels": [["0.png", 1], ["1.png", 0, 5]]}', 'entry 1'),
    ('{"labels": [[3, 1]]}', 'entry 0'),
    ('{"labels": 5}', 'must be a list or null'),
    ('{"labels": [["0.png", 1]', 'is not valid'),
    ('{"classes": []}', 'is not valid'),
])
def test_malformed_dataset_json_is_one_line(tmp_path, labels, needle):
    source = make_source(tmp_path / 'src', labels=labels)
    line = error_line(run('--source', source, '--dest', tmp_path / 'out.zip'))
    assert 'dataset.json' in line and needle in line
    assert not (tmp_path / 'out.zip').exists()


def test_read_only_destination_folder_is_one_line(tmp_path, monkeypatch):
    """Tests may run as root, where chmod does not stop writes; the refusal is injected instead."""
    source = make_source(tmp_path / 'src')

    def refuse(path, *args, **kwargs):
        raise PermissionError(13, 'Permission denied', os.fspath(path))
    monkeypatch.setattr(dataset_tool.os, 'makedirs', refuse)
    line = error_line(run('--source', source, '--dest', tmp_path / 'ro' / 'out.zip'))
    assert str(tmp_path / 'ro') in line and 'permission denied' in line
