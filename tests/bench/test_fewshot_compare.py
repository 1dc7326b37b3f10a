"""Tests for bench/fewshot_compare.py's memorisation panel and option parsing (training itself is covered elsewhere)."""
import importlib.util
import os

import numpy as np
import PIL.Image
import pytest
import torch

from training import networks

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load_script():
    spec = importlib.util.spec_from_file_location('fewshot_compare', os.path.join(ROOT, 'bench', 'fewshot_compare.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


compare = _load_script()


def _tiny_generator():
    torch.manual_seed(0)
    return networks.Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3,
                              mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=256, channel_max=16)).eval()


def _samples(G, seeds):
    z = torch.from_numpy(np.stack([np.random.RandomState(seed).randn(G.z_dim) for seed in seeds])).float()
    with torch.no_grad():
        return G(z, torch.zeros(len(seeds), 0), truncation_psi=1, noise_mode='const').clamp(-1, 1)


def test_nearest_panel_finds_a_memorised_sample_and_lays_out_pairs_of_rows():
    G = _tiny_generator()
    seeds = list(range(8))
    fakes = _samples(G, seeds)
    # Training set: a copy of sample 5 (as uint8) hidden among random images.
    rng = np.random.RandomState(1)
    reals = torch.from_numpy(rng.randint(0, 256, size=(6, 3, 16, 16)).astype(np.uint8))
    reals[3] = (fakes[5] * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    grid, best, rms = compare.nearest_real_panel(G, reals, seeds=seeds, cols=4)

    assert grid.shape == (2 * 2 * 16, 4 * 16, 3) and grid.dtype == np.uint8
    assert best[5] == 3 and rms[5] < 0.01
    assert float(rms.min()) == float(rms[5]) and float(rms.max()) > 0.1
    # Row 0 holds samples 0-3, row 1 their nearest reals, row 2 samples 4-7, row 3 theirs: sample 5 sits at
    # row 2, column 1 and its neighbour (real 3) right below it.
    tile = lambda r, c: grid[r * 16:(r + 1) * 16, c * 16:(c + 1) * 16].astype(int)
    assert np.array_equal(tile(3, 1), reals[3].permute(1, 2, 0).numpy().astype(int))
    assert np.abs(tile(2, 1) - tile(3, 1)).max() <= 1
    assert np.array_equal(tile(1, 2), reals[best[2]].permute(1, 2, 0).numpy().astype(int))


def test_nearest_panel_rejects_a_training_set_at_another_resolution():
    G = _tiny_generator()
    reals = torch.zeros(4, 3, 32, 32, dtype=torch.uint8)
    with pytest.raises(AssertionError, match='do not match G output'):
        compare.nearest_real_panel(G, reals, seeds=range(8), cols=8)


def test_save_nearest_panel_reads_the_training_set_from_snapshot_kwargs(tmp_path):
    G = _tiny_generator()
    folder = tmp_path / 'reals'
    folder.mkdir()
    rng = np.random.RandomState(2)
    for i in range(5):
        PIL.Image.fromarray(rng.randint(0, 256, size=(16, 16, 3)).astype(np.uint8)).save(folder / f'{i}.png')
    kwargs = dict(class_name='training.dataset.ImageFolderDataset', path=str(folder), use_labels=False, max_size=5,
                  xflip=True, resolution=16)
    reals = compare.load_reals(kwargs)
    assert reals.shape == (5, 3, 16, 16) and reals.dtype == torch.uint8  # stored images only: no x-flipped copies
    stored = {np.asarray(PIL.Image.open(folder / f'{i}.png')).tobytes() for i in range(5)}
    assert {image.permute(1, 2, 0).numpy().tobytes() for image in reals} == stored
    path = tmp_path / 'panel.png'
    summary = compare.save_nearest_real_panel(G, kwargs, str(path))
    assert PIL.Image.open(path).size == (8 * 16, 4 * 16)
    assert 1 <= summary['nearest_distinct'] <= 5 and summary['nearest_rms_mean'] > 0


@pytest.mark.parametrize('text, expected', [('baseline,mixdl', ['baseline', 'mixdl']), (' mixdl ', ['mixdl'])])
def test_parse_arms_keeps_the_order_given(text, expected):
    assert compare.parse_arms(text) == expected


@pytest.mark.parametrize('text', ['baseline,baseline', 'styleganxl', ''])
def test_parse_arms_refuses_unknown_or_repeated_names(text):
    with pytest.raises(SystemExit, match='--arms='):
        compare.parse_arms(text)
