"""Faults for generate.py: absurd options, damaged pickles, NaN weights and unusable output folders."""

import os
import pickle

import numpy as np
import pytest
import torch

import generate
from tests._faults import disk_full, error_line, foreign_pickle_bytes, invoke
from training import networks


def tiny_snapshot(break_weights=False):
    G = networks.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3,
                           mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=256, channel_max=16))
    if break_weights:
        with torch.no_grad():
            G.synthesis.b8.conv0.weight[0, 0, 0, 0] = float('nan')
    D = networks.Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=256, channel_max=16)
    return pickle.dumps(dict(G=G.eval(), D=D.eval(), G_ema=G.eval()))


@pytest.fixture(scope='module')
def good_pkl(tmp_path_factory):
    path = tmp_path_factory.mktemp('net') / 'net.pkl'
    path.write_bytes(tiny_snapshot())
    return path


def run(*args):
    return invoke(generate.generate_images, ['--device=cpu', *args])


@pytest.mark.parametrize('trunc', ['nan', 'inf', '-inf', '1e30', '-3'])
def test_absurd_truncation_is_refused_up_front(good_pkl, tmp_path, trunc):
    result = run('--network', good_pkl, '--seeds=0', f'--trunc={trunc}', '--outdir', tmp_path / 'out')
    line = error_line(result)
    assert '--trunc' in line and 'from -2 to 2' in line
    assert 'Loading networks' not in result.output and not (tmp_path / 'out').exists()


def test_huge_seed_range_is_refused_with_the_limit(good_pkl, tmp_path):
    # One seed over the limit first: if the check is broken this fails cheaply, before the
    # 2**32-seed case below would try to build a list of four billion seeds.
    line = error_line(run('--network', good_pkl, f'--seeds=0-{generate.MAX_SEEDS - 2},{generate.MAX_SEEDS},5', '--outdir', tmp_path))
    assert str(generate.MAX_SEEDS) in line and '--seeds' in line
    line = error_line(run('--network', good_pkl, '--seeds=0-4294967295', '--outdir', tmp_path))
    assert str(generate.MAX_SEEDS) in line


def test_nan_weights_are_an_error_not_black_images(tmp_path):
    path = tmp_path / 'diverged.pkl'
    path.write_bytes(tiny_snapshot(break_weights=True))
    line = error_line(run('--network', path, '--seeds=0-1', '--outdir', tmp_path / 'out'))
    assert 'NaN or inf' in line and 'synthesis.b8.conv0.weight' in line
    assert not any(name.endswith('.png') for _, _, files in os.walk(tmp_path) for name in files)


def test_non_finite_output_is_an_error(good_pkl, tmp_path, monkeypatch):
    """Finite weights can still overflow (fp16, extreme inputs): the output itself is checked too."""
    real_synthesis = networks.SynthesisNetwork.forward
    monkeypatch.setattr(networks.SynthesisNetwork, 'forward',
                        lambda self, ws, **kwargs: real_synthesis(self, ws, **kwargs) * float('inf'))
    line = error_line(run('--network', good_pkl, '--seeds=0', '--outdir', tmp_path / 'out'))
    assert 'NaN or inf pixels' in line
    assert not (tmp_path / 'out' / 'seed0000.png').exists()


@pytest.mark.parametrize('kind, needle', [
    ('empty', 'empty or ends early'),
    ('truncated', 'ends early'),
    ('foreign', 'not available here'),
    ('text', 'not a pickle'),
])
def test_unreadable_pickles_are_one_line(good_pkl, tmp_path, kind, needle):
    path = tmp_path / 'bad.pkl'
    content = good_pkl.read_bytes()
    path.write_bytes({'empty': b'', 'truncated': content[:len(content) // 3], 'foreign': foreign_pickle_bytes(),
                      'text': b'hello\n'}[kind])
    line = error_line(run('--network', path, '--seeds=0', '--outdir', tmp_path / 'out'))
    assert str(path) in line and needle in line


def test_unreadable_pickle_file_is_one_line(good_pkl, tmp_path, monkeypatch):
    """A pickle the user may not read (tests can run as root, so the refusal is injected)."""
    real_open = open

    def guarded_open(file, *args, **kwargs):
        if os.fspath(file) == str(good_pkl):
            raise PermissionError(13, 'Permission denied', os.fspath(file))
        return real_open(file, *args, **kwargs)
    monkeypatch.setattr('builtins.open', guarded_open)
    line = error_line(run('--network', good_pkl, '--seeds=0', '--outdir', tmp_path / 'out'))
    assert str(good_pkl) in line and 'ermission denied' in line


def test_outdir_that_is_a_file_is_one_line(good_pkl, tmp_path):
    blocker = tmp_path / 'taken'
    blocker.write_text('not a folder')
    result = run('--network', good_pkl, '--seeds=0', '--outdir', blocker)
    assert 'existing file' in error_line(result) and 'Loading networks' not in result.output
    line = error_line(run('--network', good_pkl, '--seeds=0', '--outdir', blocker / 'sub'))
    assert str(blocker) in line


def test_read_only_outdir_is_one_line(good_pkl, tmp_path, monkeypatch):
    def refuse(path, *args, **kwargs):
        raise PermissionError(13, 'Permission denied', os.fspath(path))
    monkeypatch.setattr(generate.os, 'makedirs', refuse)
    line = error_line(run('--network', good_pkl, '--seeds=0', '--outdir', tmp_path / 'ro'))
    assert str(tmp_path / 'ro') in line and 'permission denied' in line


def test_full_disk_while_writing_images_leaves_no_partial_png(good_pkl, tmp_path, monkeypatch):
    outdir = tmp_path / 'out'
    monkeypatch.setattr(generate.PIL.Image.Image, 'save', lambda self, *args, **kwargs: disk_full())
    line = error_line(run('--network', good_pkl, '--seeds=0-1', '--outdir', outdir))
    assert str(outdir / 'seed0000.png') in line and 'no space left' in line
    assert os.listdir(outdir) == []


def test_bad_projected_w_file_is_one_line(good_pkl, tmp_path):
    bad = tmp_path / 'w.npz'
    np.savez(bad, not_w=np.zeros(3))
    line = error_line(run('--network', good_pkl, '--projected-w', bad, '--outdir', tmp_path / 'out'))
    assert str(bad) in line and '"w" array' in line
    bad.write_bytes(b'PK\x03\x04 broken')
    assert '"w" array' in error_line(run('--network', good_pkl, '--projected-w', bad, '--outdir', tmp_path / 'out'))
    plain = tmp_path / 'w.npy'
    np.save(plain, np.zeros([1, 4, 8]))
    assert '"w" array' in error_line(run('--network', good_pkl, '--projected-w', plain, '--outdir', tmp_path / 'out'))
