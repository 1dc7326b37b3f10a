"""Tests for generate.py on CPU: seed images, grid, interpolation strips, GIF video, projected w, and errors."""

import pickle

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import generate
from training import networks

RES = 16


def write_network(path, c_dim=0):
    G = networks.Generator(z_dim=8, c_dim=c_dim, w_dim=8, img_resolution=RES, img_channels=3,
                           mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=256, channel_max=16))
    G.eval().requires_grad_(False)
    D = networks.Discriminator(c_dim=c_dim, img_resolution=RES, img_channels=3, channel_base=256, channel_max=16)
    with open(path, 'wb') as f:
        pickle.dump(dict(G=G, D=D.eval(), G_ema=G), f)
    return G


@pytest.fixture(scope='module')
def network(tmp_path_factory):
    path = tmp_path_factory.mktemp('net') / 'net.pkl'
    return path, write_network(path)


def run(args):
    result = CliRunner().invoke(generate.generate_images, [str(a) for a in args])
    return result


def pixels(path):
    return np.asarray(PIL.Image.open(path))


def expected_image(G, seed, psi=1.0):
    z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).float()
    with torch.no_grad():
        img = G(z, None, truncation_psi=psi, noise_mode='const')
    return (img.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8)[0].numpy()


def test_parse_seeds_accepts_lists_and_ranges():
    assert generate.parse_seeds('0-3,7, 9-10') == [0, 1, 2, 3, 7, 9, 10]
    assert generate.parse_seeds('5') == [5]


def test_seed_images_match_the_generator(network, tmp_path):
    path, G = network
    result = run(['--network', path, '--seeds', '0-2,12', '--outdir', tmp_path, '--device', 'cpu'])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ['seed0000.png', 'seed0001.png', 'seed0002.png',
                                                          'seed0012.png']
    image = pixels(tmp_path / 'seed0012.png')
    assert image.shape == (RES, RES, 3) and image.dtype == np.uint8
    assert np.abs(image.astype(int) - expected_image(G, 12)).max() <= 1
    assert not np.array_equal(pixels(tmp_path / 'seed0000.png'), pixels(tmp_path / 'seed0001.png'))


def test_truncation_zero_collapses_every_seed_to_the_same_image(network, tmp_path):
    path, _ = network
    result = run(['--network', path, '--seeds', '3,4', '--trunc', '0', '--outdir', tmp_path])
    assert result.exit_code == 0, result.output
    assert np.array_equal(pixels(tmp_path / 'seed0003.png'), pixels(tmp_path / 'seed0004.png'))


def test_grid_interp_and_gif(network, tmp_path):
    path, _ = network
    result = run(['--network', path, '--seeds', '0-2', '--outdir', tmp_path, '--grid', '--interp', '4',
                  '--video', 'walk.gif', '--fps', '10'])
    assert result.exit_code == 0, result.output
    grid = pixels(tmp_path / 'grid.png')
    assert grid.shape == (2 * RES, 2 * RES, 3)  # 3 seeds on a 2x2 grid, last cell black
    assert np.array_equal(grid[:RES, RES:], pixels(tmp_path / 'seed0001.png'))
    assert (grid[RES:, RES:] == 0).all()

    strip = pixels(tmp_path / 'interp0000-0001.png')
    assert strip.shape == (RES, 4 * RES, 3)
    assert np.abs(strip[:, :RES].astype(int) - pixels(tmp_path / 'seed0000.png')).max() <= 1
    assert np.abs(strip[:, -RES:].astype(int) - pixels(tmp_path / 'seed0001.png')).max() <= 1
    assert (tmp_path / 'interp0001-0002.png').exists()
    assert pixels(tmp_path / 'interp.png').shape == (2 * RES, 4 * RES, 3)

    with PIL.Image.open(tmp_path / 'walk.gif') as gif:
        assert gif.n_frames == 3 * (4 - 1)  # a closed loop over 3 seeds, shared endpoints dropped
        assert gif.size == (RES, RES)


def test_mp4_without_imageio_is_a_clear_error(network, tmp_path, monkeypatch):
    path, _ = network
    real_find_spec = generate.importlib.util.find_spec
    monkeypatch.setattr(generate.importlib.util, 'find_spec',
                        lambda name, *a: None if name.startswith('imageio') else real_find_spec(name, *a))
    result = run(['--network', path, '--seeds', '0,1', '--outdir', tmp_path, '--video', 'walk.mp4',
                  '--interp', '2'])
    assert result.exit_code == 1
    assert 'imageio-ffmpeg' in result.output
    assert list(tmp_path.iterdir()) == []  # checked before any work
    result = run(['--network', path, '--seeds', '0,1', '--outdir', tmp_path, '--video', 'walk.avi'])
    assert result.exit_code == 2 and 'use a .gif or .mp4' in result.output


def test_projected_w_renders_proj_images(network, tmp_path):
    path, G = network
    ws = G.mapping(torch.randn([2, 8]), None).numpy()
    np.savez(tmp_path / 'projected_w.npz', w=ws)
    for option in ('--projected-w', '--projected_w'):
        outdir = tmp_path / option.strip('-')
        result = run(['--network', path, option, tmp_path / 'projected_w.npz', '--outdir', outdir])
        assert result.exit_code == 0, result.output
        assert sorted(p.name for p in outdir.iterdir()) == ['proj00.png', 'proj01.png']
    with torch.no_grad():
        img = G.synthesis(torch.from_numpy(ws[1:2]), noise_mode='const')
    want = (img.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8)[0].numpy()
    assert np.abs(pixels(tmp_path / 'projected-w' / 'proj01.png').astype(int) - want).max() <= 1


def test_conditional_network_needs_a_class(tmp_path):
    path = tmp_path / 'cond.pkl'
    write_network(path, c_dim=4)
    result = run(['--network', path, '--seeds', '0', '--outdir', tmp_path / 'out'])
    assert result.exit_code == 1 and 'Must specify class label with --class' in result.output
    result = run(['--network', path, '--seeds', '0', '--class', '9', '--outdir', tmp_path / 'out'])
    assert result.exit_code == 2 and 'out of range' in result.output
    result = run(['--network', path, '--seeds', '0', '--class', '2', '--outdir', tmp_path / 'out'])
    assert result.exit_code == 0, result.output
    assert (tmp_path / 'out' / 'seed0000.png').exists()


@pytest.mark.parametrize('seeds, message', [('a-b', 'not a seed list'), ('5-2', 'runs backwards'),
                                            ('1,,2', 'not a seed list')])
def test_bad_seeds_are_one_line_errors(network, tmp_path, seeds, message):
    path, _ = network
    result = run(['--network', path, '--seeds', seeds, '--outdir', tmp_path])
    assert result.exit_code == 2
    assert message in result.output
    error_lines = [line for line in result.output.splitlines() if line.startswith('Error')]
    assert len(error_lines) == 1 and 'Traceback' not in result.output


def test_missing_network_and_missing_seeds_are_clear_errors(network, tmp_path):
    result = run(['--network', tmp_path / 'missing.pkl', '--seeds', '0', '--outdir', tmp_path])
    assert result.exit_code == 2 and 'no such file' in result.output and 'Traceback' not in result.output
    path, _ = network
    result = run(['--network', path, '--outdir', tmp_path])
    assert result.exit_code == 2 and '--seeds option is required' in result.output
    result = run(['--network', path, '--seeds', '1', '--interp', '3', '--outdir', tmp_path])
    assert result.exit_code == 2 and 'at least two seeds' in result.output


@pytest.mark.skipif(not all(__import__('importlib').util.find_spec(m) for m in ('imageio', 'imageio_ffmpeg')),
                    reason='MP4 output needs imageio and imageio-ffmpeg')
def test_mp4_video_when_imageio_ffmpeg_is_installed(network, tmp_path):
    path, _ = network
    result = run(['--network', path, '--seeds', '0,1', '--outdir', tmp_path, '--video', 'walk.mp4', '--interp', '3'])
    assert result.exit_code == 0, result.output
    assert (tmp_path / 'walk.mp4').stat().st_size > 0
