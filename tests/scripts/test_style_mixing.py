"""Tests for style_mixing.py on CPU: grid layout, every cell equal to the synthesis of its mixed ws, file names, errors."""

import os

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import style_mixing
from tests._shared import single_torch_thread  # noqa: F401 (fixture)
from tests.scripts.test_generate import RES, write_network


@pytest.fixture(scope='module')
def network(tmp_path_factory):
    path = tmp_path_factory.mktemp('net') / 'net.pkl'
    torch.manual_seed(3)
    return path, write_network(path)


def run(args):
    return CliRunner().invoke(style_mixing.generate_style_mix, [str(a) for a in args])


def seed_ws(G, seed, psi=1.0):
    z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim).astype(np.float32))
    return G.mapping(z, None, truncation_psi=psi)


def synth(G, ws):
    with torch.no_grad():
        img = G.synthesis(ws, noise_mode='const', force_fp32=True)
    return (img[0].permute(1, 2, 0) * 127.5 + 128).clamp(0, 255).to(torch.uint8).numpy()


def test_mix_ws_takes_only_the_chosen_layers_from_the_column():
    rows = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    cols = -torch.arange(3 * 4 * 3, dtype=torch.float32).reshape(3, 4, 3) - 1
    mixed = style_mixing.mix_ws(rows, cols, [1, 3])
    assert mixed.shape == (2, 3, 4, 3)
    for r in range(2):
        for c in range(3):
            for layer in range(4):
                source = cols[c] if layer in (1, 3) else rows[r]
                assert torch.equal(mixed[r, c, layer], source[layer])


def test_grid_cells_are_the_mixed_syntheses(network, tmp_path):
    path, G = network
    rows, cols, psi = [1, 7], [3, 4, 10], 0.8
    result = run(['--network', path, '--rows', '1,7', '--cols', '3-4,10', '--styles', '0-2', '--trunc', psi,
                  '--outdir', tmp_path, '--device', 'cpu'])
    assert result.exit_code == 0, result.output
    grid = np.asarray(PIL.Image.open(tmp_path / 'grid.png'))
    assert grid.shape == ((len(rows) + 1) * RES, (len(cols) + 1) * RES, 3)

    def cell(i, j):
        return grid[i * RES:(i + 1) * RES, j * RES:(j + 1) * RES].astype(int)

    assert not cell(0, 0).any()   # the corner stays black
    for j, col_seed in enumerate(cols, 1):
        assert np.abs(cell(0, j) - synth(G, seed_ws(G, col_seed, psi))).max() <= 1
    for i, row_seed in enumerate(rows, 1):
        assert np.abs(cell(i, 0) - synth(G, seed_ws(G, row_seed, psi))).max() <= 1
        for j, col_seed in enumerate(cols, 1):
            ws = seed_ws(G, row_seed, psi).clone()
            ws[:, :3] = seed_ws(G, col_seed, psi)[:, :3]
            expected = synth(G, ws)
            assert np.abs(cell(i, j) - expected).max() <= 1
            single = np.asarray(PIL.Image.open(tmp_path / f'{row_seed}-{col_seed}.png')).astype(int)
            assert np.array_equal(single, cell(i, j))
    # Mixing really mixes: a cell differs from both of its parents.
    assert np.abs(cell(1, 1) - cell(1, 0)).max() > 8 and np.abs(cell(1, 1) - cell(0, 1)).max() > 8
    expected_names = {f'{s}-{s}.png' for s in rows + cols} | {f'{r}-{c}.png' for r in rows for c in cols} | {'grid.png'}
    assert set(os.listdir(tmp_path)) == expected_names


def test_bad_styles_and_device_are_one_line_errors(network, tmp_path):
    path, G = network
    result = run(['--network', path, '--rows', '1', '--cols', '2', '--styles', f'0-{G.num_ws}', '--outdir', tmp_path])
    assert result.exit_code != 0 and f'0..{G.num_ws - 1}' in result.output and 'Traceback' not in result.output
    result = run(['--network', path, '--rows', '1', '--cols', '2', '--styles', 'fine', '--outdir', tmp_path])
    assert result.exit_code != 0 and 'list of layers' in result.output
    if not torch.backends.mps.is_available():
        result = run(['--network', path, '--rows', '1', '--cols', '2', '--outdir', tmp_path, '--device', 'mps'])
        assert result.exit_code != 0 and 'MPS is not available' in result.output
