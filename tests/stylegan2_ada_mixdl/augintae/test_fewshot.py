"""Few-shot generation from seeds (API and augintae_generate.py) and the novel-class measures, on an untrained 16 px model."""
import copy
import os
import pickle
import zipfile

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import augintae_generate
from stylegan2_ada_mixdl.augintae import encoder as enc
from stylegan2_ada_mixdl.augintae import evaluate, fewshot
from training import networks
from tests._shared import single_torch_thread  # noqa: F401  (autouse fixture)

RES = 16


def tiny_networks(channels=3):
    torch.manual_seed(0)
    G = networks.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=RES, img_channels=channels,
                           mapping_kwargs=dict(num_layers=1), synthesis_kwargs=dict(channel_base=64, channel_max=8))
    D = networks.Discriminator(c_dim=0, img_resolution=RES, img_channels=channels, channel_base=64, channel_max=8,
                               epilogue_kwargs=dict(mbstd_group_size=2))
    return G, D


def write_snapshot(path, channels=3, with_encoder=True):
    G, D = tiny_networks(channels)
    data = dict(G=G, D=D, G_ema=copy.deepcopy(G), training_set_kwargs=None, augment_pipe=None)
    if with_encoder:
        E = enc.Encoder.like_discriminator(D, w_dim=G.w_dim)
        data[fewshot.SNAPSHOT_KEY] = {enc.ENCODER_KEY: E.state_dict()}
    with open(path, 'wb') as f:
        pickle.dump(data, f)
    return str(path)


def write_seed_folder(folder, count=3, mode='RGB', size=(24, 40)):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        shape = (size[1], size[0], len(mode)) if mode != 'L' else (size[1], size[0])
        PIL.Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(os.path.join(folder, f'seed{i}.png'))
    return str(folder)


@pytest.fixture
def model(tmp_path):
    return fewshot.FewShotAutoencoder.from_snapshot(write_snapshot(tmp_path / 'net.pkl'))


def test_seeds_of_any_size_are_cropped_and_resized_like_dataset_tool(tmp_path):
    folder = write_seed_folder(tmp_path / 'seeds', count=3, mode='RGBA', size=(24, 40))
    names, seeds = fewshot.load_seed_images(folder, RES, 3)
    assert names == ['seed0.png', 'seed1.png', 'seed2.png']
    assert seeds.dtype == torch.uint8 and seeds.shape == (3, 3, RES, RES)
    # The same pixels dataset_tool would produce: composite onto white, centre crop, lanczos resize.
    import dataset_tool
    image = dataset_tool._to_plain_mode(PIL.Image.open(os.path.join(folder, 'seed1.png')), (255, 255, 255))
    expected = np.asarray(dataset_tool._center_crop(image, RES, RES, PIL.Image.LANCZOS)).transpose(2, 0, 1)
    assert np.array_equal(seeds[1].numpy(), expected)
    archive = tmp_path / 'seeds.zip'
    with zipfile.ZipFile(archive, 'w') as z:
        for name in names:
            z.write(os.path.join(folder, name), name)
    assert torch.equal(fewshot.load_seed_images(str(archive), RES, 3)[1], seeds)


def test_seed_errors_are_one_line(tmp_path):
    with pytest.raises(fewshot.FewShotError, match='at least two'):
        fewshot.load_seed_images(write_seed_folder(tmp_path / 'one', count=1), RES, 3)
    grey = write_seed_folder(tmp_path / 'grey', count=2, mode='L')
    with pytest.raises(fewshot.FewShotError, match=r'1 channel\(s\) but the network makes 3.*--color=rgb'):
        fewshot.load_seed_images(grey, RES, 3)
    with pytest.raises(fewshot.FewShotError, match='no such folder'):
        fewshot.load_seed_images(str(tmp_path / 'missing'), RES, 3)


def test_snapshot_without_encoder_is_refused(tmp_path):
    path = write_snapshot(tmp_path / 'plain.pkl', with_encoder=False)
    with pytest.raises(fewshot.FewShotError, match='no AugIntAE encoder.*--augintae=1'):
        fewshot.FewShotAutoencoder.from_snapshot(path)


def test_sampling_mixes_two_different_seeds(model):
    codes = model.encode(torch.randint(0, 256, [3, 3, RES, RES], dtype=torch.uint8))
    images, pairs, alphas = model.sample(codes, 64, generator=torch.Generator().manual_seed(0))
    assert images.shape == (64, 3, RES, RES)
    assert bool((pairs[:, 0] != pairs[:, 1]).all()) and set(pairs.flatten().tolist()) == {0, 1, 2}
    assert bool(((alphas >= 0) & (alphas <= 1)).all())
    again, _, _ = model.sample(codes, 64, generator=torch.Generator().manual_seed(0))
    assert torch.equal(images, again)
    # Each sample is the decoded SLERP of its pair.
    expected = model.decode(model.mix(codes, pairs[:4].tolist(), alphas[:4]))
    assert torch.allclose(images[:4], expected, atol=1e-5)


def test_midpoint_grid_and_strip_ends(model):
    seeds = torch.randint(0, 256, [3, 3, RES, RES], dtype=torch.uint8)
    codes = model.encode(seeds)
    recon = model.reconstruct(seeds)
    grid = model.midpoint_grid(codes).reshape(3, 3, 3, RES, RES)
    for i in range(3):
        assert torch.allclose(grid[i, i], recon[i], atol=1e-5)
    assert torch.allclose(grid[0, 2], grid[2, 0], atol=1e-5)
    assert not torch.allclose(grid[0, 2], recon[0], atol=1e-3)
    strip = model.strip(codes, 0, 2, 5)
    assert torch.allclose(strip[0], recon[0], atol=1e-5) and torch.allclose(strip[-1], recon[2], atol=1e-5)


def test_generation_script_writes_every_file(tmp_path):
    network = write_snapshot(tmp_path / 'net.pkl')
    seeds = write_seed_folder(tmp_path / 'seeds', count=3)
    outdir = tmp_path / 'out'
    result = CliRunner().invoke(augintae_generate.main, [f'--network={network}', f'--seeds={seeds}', f'--outdir={outdir}',
                                                         '--num=5', '--strips=0-1,2-0', '--steps=4', '--device=cpu'])
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(outdir / 'samples')) == [f'sample-{i:04d}.png' for i in range(5)]
    sizes = {name: PIL.Image.open(outdir / name).size for name in
             ['samples.png', 'reconstructions.png', 'midpoints.png', 'strip-0-1.png', 'strip-2-0.png']}
    assert sizes == {'samples.png': (3 * RES, 2 * RES), 'reconstructions.png': (3 * RES, 2 * RES),
                     'midpoints.png': (3 * RES, 3 * RES), 'strip-0-1.png': (6 * RES, RES), 'strip-2-0.png': (6 * RES, RES)}
    lines = (outdir / 'samples.txt').read_text().splitlines()
    assert len(lines) == 6 and lines[1].split('\t')[1].startswith('seed')
    # The top row of the reconstructions grid is the seeds as read.
    top = np.asarray(PIL.Image.open(outdir / 'reconstructions.png'))[:RES, :RES].transpose(2, 0, 1)
    assert np.array_equal(top, fewshot.load_seed_images(seeds, RES, 3)[1][0].numpy())


@pytest.mark.parametrize('case, message', [
    ('one_seed', 'give at least two'),
    ('grey_seeds', 'channel'),
    ('no_encoder', 'no AugIntAE encoder'),
    ('bad_strip', 'strip 0-7'),
])
def test_generation_script_errors_are_one_line(tmp_path, case, message):
    network = write_snapshot(tmp_path / 'net.pkl', with_encoder=(case != 'no_encoder'))
    seeds = write_seed_folder(tmp_path / 'seeds', count=1 if case == 'one_seed' else 2, mode='L' if case == 'grey_seeds' else 'RGB')
    args = [f'--network={network}', f'--seeds={seeds}', f'--outdir={tmp_path / "out"}', '--device=cpu']
    if case == 'bad_strip':
        args.append('--strips=0-7')
    result = CliRunner().invoke(augintae_generate.main, args)
    assert result.exit_code != 0 and message in result.output
    assert 'Traceback' not in result.output and result.output.strip().count('\n') <= 1


def test_reconstruction_error_is_per_pixel_colour_distance(model, monkeypatch):
    images = torch.full([2, 3, RES, RES], 100, dtype=torch.uint8)
    # A reconstruction 3 and 4 grey levels off in two channels is 5 grey levels away per pixel.
    offset = torch.tensor([3.0, 4.0, 0.0]).reshape(1, 3, 1, 1) / 127.5
    monkeypatch.setattr(model, 'reconstruct', lambda x: fewshot.uint8_to_float(x) + offset)
    mean, per_image = evaluate.reconstruction_error(model, images)
    assert mean == pytest.approx(5.0, abs=1e-4) and per_image.shape == (2,)


def test_fewshot_measures_run_offline_with_the_pixel_distance(model):
    seeds = torch.randint(0, 256, [3, 3, RES, RES], dtype=torch.uint8)
    references = torch.randint(0, 256, [4, 3, RES, RES], dtype=torch.uint8)
    results = evaluate.evaluate_fewshot(model, seeds, references, distance='pixel', num_samples=8, num_steps=4)
    for key in ('recon_l2_references', 'recon_l2_seeds', 'diversity', 'smooth_mean', 'smooth_std', 'smooth_end',
                'nearest_reference', 'nearest_seed'):
        assert np.isfinite(results[key]), key
    assert results['diversity'] > 0 and results['smooth_end'] > 0
    assert (results['num_seeds'], results['num_references']) == (3, 4)
    # Smoothness on pixel distance: the end-to-end distance is the pixel MSE between the two seeds' reconstructions.
    codes = model.encode(seeds)
    recon = model.decode(codes)
    embedder = __import__('metrics.lpips', fromlist=['PixelEmbedder']).PixelEmbedder()
    _, _, end = evaluate.smoothness(model, codes, embedder, pairs=[(0, 1)], num_steps=4)
    expected = float(((recon[0] - recon[1]) * 1.0).clamp(-2, 2).square().mean())
    assert end == pytest.approx(expected, rel=1e-3)


def test_generation_script_measures_against_held_out_references(tmp_path):
    network = write_snapshot(tmp_path / 'net.pkl')
    seeds = write_seed_folder(tmp_path / 'seeds', count=2)
    references = write_seed_folder(tmp_path / 'refs', count=3, size=(16, 16))
    outdir = tmp_path / 'out'
    result = CliRunner().invoke(augintae_generate.main, [f'--network={network}', f'--seeds={seeds}', f'--outdir={outdir}',
                                                         '--num=2', f'--references={references}', '--distance=pixel',
                                                         '--eval-samples=4', '--device=cpu'])
    assert result.exit_code == 0, result.output
    import json
    metrics = json.loads((outdir / 'metrics.json').read_text())
    assert metrics['num_seeds'] == 2 and metrics['num_references'] == 3 and metrics['distance'] == 'pixel_mse'
    assert metrics['recon_l2_references'] > 0 and 'fid_references' not in metrics
    assert 'recon_l2_references' in result.output
