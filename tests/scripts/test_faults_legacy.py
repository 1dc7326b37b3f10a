"""Faults for legacy.py: unreadable pickles, an existing --dest, a full disk and a kill mid-write."""

import os
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch

import legacy
from tests._faults import disk_full, error_line, foreign_pickle_bytes, invoke
from training import networks

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def snapshot_bytes():
    G = networks.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3,
                           mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=256, channel_max=16))
    D = networks.Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=256, channel_max=16)
    return pickle.dumps(dict(G=G.eval(), D=D.eval(), G_ema=G.eval()))


@pytest.fixture(scope='module')
def good_bytes():
    return snapshot_bytes()


def convert(*args):
    return invoke(legacy.convert_network_pickle, args)


@pytest.mark.parametrize('kind, needle', [
    ('empty', 'empty or ends early'),
    ('truncated', 'ends early'),
    ('text', 'not a pickle'),
    ('zip', 'torch.save'),
    ('foreign', 'not available here'),
])
def test_unreadable_pickles_are_one_line(tmp_path, good_bytes, kind, needle):
    source = tmp_path / 'bad.pkl'
    if kind == 'empty':
        source.write_bytes(b'')
    elif kind == 'truncated':
        source.write_bytes(good_bytes[:len(good_bytes) // 2])
    elif kind == 'text':
        source.write_text('this is not a pickle\n')
    elif kind == 'zip':
        torch.save({'step': 1}, source)
    else:
        source.write_bytes(foreign_pickle_bytes())
    result = convert('--source', source, '--dest', tmp_path / 'out.pkl')
    line = error_line(result)
    assert needle in line and str(source) in line
    assert not (tmp_path / 'out.pkl').exists()


def test_existing_dest_is_refused_without_overwrite(tmp_path, good_bytes):
    source, dest = tmp_path / 'in.pkl', tmp_path / 'out.pkl'
    source.write_bytes(good_bytes)
    dest.write_bytes(b'precious')
    line = error_line(convert('--source', source, '--dest', dest))
    assert '--overwrite' in line and str(dest) in line
    assert dest.read_bytes() == b'precious'
    assert convert('--source', source, '--dest', dest, '--overwrite').exit_code == 0
    assert isinstance(legacy.load_network_pkl(str(dest))['G_ema'], networks.Generator)


def test_dest_folder_is_refused(tmp_path, good_bytes):
    source = tmp_path / 'in.pkl'
    source.write_bytes(good_bytes)
    assert 'is a folder' in error_line(convert('--source', source, '--dest', tmp_path, '--overwrite'))


def test_converting_in_place_keeps_a_loadable_file(tmp_path, good_bytes):
    path = tmp_path / 'x.pkl'
    path.write_bytes(good_bytes)
    assert 'already exists' in error_line(convert('--source', path, '--dest', path))
    assert convert('--source', path, '--dest', path, '--overwrite').exit_code == 0
    assert isinstance(legacy.load_network_pkl(str(path))['G_ema'], networks.Generator)
    assert os.listdir(tmp_path) == ['x.pkl']


def test_full_disk_leaves_dest_untouched_and_no_temporary(tmp_path, good_bytes, monkeypatch):
    source, dest = tmp_path / 'in.pkl', tmp_path / 'out.pkl'
    source.write_bytes(good_bytes)
    dest.write_bytes(b'previous version')

    def dump_until_full(obj, handle):
        handle.write(b'\x80\x04partial')
        disk_full()
    monkeypatch.setattr(legacy.pickle, 'dump', dump_until_full)
    line = error_line(convert('--source', source, '--dest', dest, '--overwrite'))
    assert str(dest) in line and 'no space left' in line
    assert dest.read_bytes() == b'previous version'
    assert sorted(os.listdir(tmp_path)) == ['in.pkl', 'out.pkl']


def test_kill_while_writing_in_place_keeps_the_original(tmp_path, good_bytes):
    """SIGKILL half-way through writing --dest=--source: the only copy must survive intact."""
    path = tmp_path / 'x.pkl'
    path.write_bytes(good_bytes)
    script = textwrap.dedent(f'''
        import os, signal, sys
        sys.path.insert(0, {ROOT!r})
        import legacy
        def dump_then_die(obj, handle):
            handle.write(b'\\x80\\x04' + b'0' * 4096)
            handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        legacy.pickle.dump = dump_then_die
        legacy.convert_network_pickle(['--source', {str(path)!r}, '--dest', {str(path)!r}, '--overwrite'])
    ''')
    child = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, timeout=300)
    assert child.returncode == -9, child.stderr
    assert path.read_bytes() == good_bytes
