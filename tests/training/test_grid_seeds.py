"""Snapshot image grids: their default size per device and dataset, and grid-seeds.json, whose seeds let
generate.py redraw any cell of a fakes grid from the snapshot."""

import json
import os

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import generate
from tests._shared import single_torch_thread  # noqa: F401 (autouse fixture)
from tests.training.test_training_loop import image_dir, loop_kwargs  # noqa: F401 (fixture)
from training import training_loop as tl


def test_default_grid_size_is_small_off_cuda_and_follows_the_dataset_size_on_cuda():
    assert tl.default_grid_size(64, 16, 'cpu') == (8, 4)
    assert tl.default_grid_size(64, 16, 'mps') == (8, 4)
    assert tl.default_grid_size(1024, 16, 'cpu') == (7, 4)          # upstream's minimum stays
    assert tl.default_grid_size(64, 16, 'cuda') == (32, 4)          # 4 rows, not 32, for 16 images
    assert tl.default_grid_size(256, 100, 'cuda') == (30, 14)       # 400 cells wanted -> 14 rows of 30
    assert tl.default_grid_size(256, 70000, 'cuda') == (30, 16)     # a large set gets upstream's grid
    assert tl.default_grid_size(16, 10 ** 6, 'cuda') == (32, 32)


def test_grid_seeds_follow_generate_py():
    assert tl.grid_seeds(0, 3) == [0, 1, 2] and tl.grid_seeds(2, 2) == [20000, 20001]
    z = tl.seed_latents([5, 7], 12)
    assert z.dtype == torch.float32 and z.shape == (2, 12)
    assert np.array_equal(z[1].numpy(), np.random.RandomState(7).randn(12).astype(np.float32))


def test_run_records_grid_seeds_and_generate_py_redraws_a_cell(tmp_path, image_dir):  # noqa: F811
    run_dir = tmp_path / 'run'
    last = tl.training_loop(**loop_kwargs(run_dir, image_dir, total_kimg=0.008, image_snapshot_ticks=1,
                                          grid_size=(3, 2), random_seed=1))
    with open(run_dir / tl.GRID_SEEDS_FILE) as f:
        record = json.load(f)
    assert record['grid_size'] == [3, 2] and record['truncation_psi'] == 1 and record['noise_mode'] == 'const'
    assert [(c['x'], c['y'], c['seed']) for c in record['cells']] == [
        (0, 0, 10000), (1, 0, 10001), (2, 0, 10002), (0, 1, 10003), (1, 1, 10004), (2, 1, 10005)]
    assert '--seeds=<seed> --trunc=1 --noise-mode=const' in record['regenerate'] and '--class' not in record['regenerate']

    grid_png = sorted(name for name in os.listdir(run_dir) if name.startswith('fakes0'))[-1]
    grid = np.asarray(PIL.Image.open(run_dir / grid_png))
    assert grid.shape == (2 * 16, 3 * 16, 3)
    cell = record['cells'][4]
    out = tmp_path / 'out'
    result = CliRunner().invoke(generate.generate_images, [f'--network={last}', f'--seeds={cell["seed"]}', '--trunc=1',
                                                           '--noise-mode=const', f'--outdir={out}', '--device=cpu'])
    assert result.exit_code == 0, result.output
    redrawn = np.asarray(PIL.Image.open(out / f'seed{cell["seed"]:04d}.png'))
    y, x = cell['y'] * 16, cell['x'] * 16
    # Equal up to float rounding: the grid renders a batch, generate.py one image, and the last bit of a
    # convolution can differ between the two, moving a pixel across a grey-level boundary.
    difference = np.abs(redrawn.astype(int) - grid[y:y + 16, x:x + 16])
    assert difference.max() <= 1 and (difference > 0).mean() < 0.01
    neighbour = grid[y:y + 16, x - 16:x]
    assert np.abs(redrawn.astype(int) - neighbour).mean() > 2  # cells differ, so the match above pins the seed


def test_conditional_grid_records_each_cells_class(tmp_path):
    labels = np.eye(3, dtype=np.float32)[[0, 0, 2, 2]]
    tl.write_grid_seeds(str(tmp_path / 'g.json'), (2, 2), [0, 1, 2, 3], labels)
    record = json.loads((tmp_path / 'g.json').read_text())
    assert [c['class'] for c in record['cells']] == [0, 0, 2, 2]
    assert record['regenerate'].endswith('--class=<class>')
    tl.write_grid_seeds(str(tmp_path / 'h.json'), (2, 1), [0, 1], np.array([[0.5, 0.5], [1, 0]], dtype=np.float32))
    assert [c['label'] for c in json.loads((tmp_path / 'h.json').read_text())['cells']] == [[0.5, 0.5], [1, 0]]


@pytest.mark.parametrize('size', [(2, 3)])
def test_pick_grid_reals_takes_the_size(image_dir, size):  # noqa: F811
    from training.dataset import ImageFolderDataset
    dataset = ImageFolderDataset(path=image_dir, use_labels=False)
    got, images, labels = tl.pick_grid_reals(dataset, random_seed=0, grid_size=size)
    assert got == size and images.shape == (6, 3, 16, 16) and labels.shape == (6, 0)
