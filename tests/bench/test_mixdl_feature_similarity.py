"""Tests for bench/mixdl_feature_similarity.py on a 16 px tiny generator."""
import importlib.util
import os
import pickle
import sys

import pytest
import torch

from training import networks

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
spec = importlib.util.spec_from_file_location('mixdl_feature_similarity',
                                              os.path.join(ROOT, 'bench', 'mixdl_feature_similarity.py'))
similarity = importlib.util.module_from_spec(spec)
spec.loader.exec_module(similarity)


def _tiny_G(seed=0):
    torch.manual_seed(seed)
    return networks.Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3,
                              mapping_kwargs=dict(num_layers=2),
                              synthesis_kwargs=dict(channel_base=128, channel_max=16)).eval()


def test_high_frequency_share_known_answers():
    flat = torch.ones(2, 3, 8, 8)
    checker = (torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2 * 2.0 - 1
    assert similarity.high_frequency_share(flat) == 0
    assert similarity.high_frequency_share(checker.expand(2, 3, 8, 8)) == pytest.approx(1.0)


def test_mean_off_diagonal_skips_the_diagonal():
    matrix = torch.tensor([[1.0, 0.2, 0.4], [0.2, 1.0, 0.6], [0.4, 0.6, 1.0]])
    assert similarity.mean_off_diagonal(matrix) == pytest.approx(0.4)


def test_identical_samples_have_cosine_one_and_distinct_ones_less():
    G = _tiny_G()
    cosines, share = similarity.feature_similarity(G, num_samples=6, seed=1)
    assert list(cosines) == ['b4.conv1', 'b8.conv0', 'b8.conv1', 'b16.conv0', 'b16.conv1']
    assert all(-1 <= value < 0.999 for value in cosines.values()) and 0 <= share <= 1
    # With every latent the same (constant noise), all samples' features coincide.
    G.mapping.forward = (lambda original: lambda z, c, **kw: original(z[:1].expand_as(z), c, **kw))(G.mapping.forward)
    same, _ = similarity.feature_similarity(G, num_samples=6, seed=1)
    assert all(value == pytest.approx(1.0, abs=1e-5) for value in same.values())


def test_command_prints_one_row_per_layer(tmp_path, monkeypatch, capsys):
    path = tmp_path / 'network-snapshot-000000.pkl'
    with open(path, 'wb') as f:
        D = networks.Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=128, channel_max=16)
        pickle.dump({'G': _tiny_G(), 'D': D, 'G_ema': _tiny_G()}, f)
    monkeypatch.setattr(sys, 'argv', ['mixdl_feature_similarity.py', f'a={path}', f'b={path}', '--samples=4'])
    similarity.main()
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if line.startswith('| b')]
    assert [row.split(' |')[0] for row in rows] == ['| b4.conv1', '| b8.conv0*', '| b8.conv1*', '| b16.conv0*',
                                                     '| b16.conv1']
    assert all(row.split(' | ')[1] == row.split(' | ')[2].rstrip(' |') for row in rows)  # same snapshot twice
    monkeypatch.setattr(sys, 'argv', ['mixdl_feature_similarity.py', 'no-equals-sign'])
    with pytest.raises(SystemExit, match='expected LABEL=PKL'):
        similarity.main()
    (tmp_path / 'junk.pkl').write_bytes(b'not a pickle')
    monkeypatch.setattr(sys, 'argv', ['mixdl_feature_similarity.py', f'a={tmp_path / "junk.pkl"}'])
    with pytest.raises(SystemExit, match='junk.pkl: cannot read a network'):
        similarity.main()
