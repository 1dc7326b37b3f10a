"""Tests for projector.py on CPU with a tiny generator and the scripted stand-in VGG16 detector."""

import os
import zipfile

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import projector
from metrics import metric_utils
from tests._shared import offline, single_torch_thread  # noqa: F401 (fixtures)
from tests.metrics.standins import write_standin_detectors
from tests.scripts.test_generate import RES, write_network


@pytest.fixture(scope='module')
def network(tmp_path_factory):
    path = tmp_path_factory.mktemp('net') / 'net.pkl'
    torch.manual_seed(1)
    return path, write_network(path)


@pytest.fixture(scope='module')
def detector_dir(tmp_path_factory):
    return write_standin_detectors(str(tmp_path_factory.mktemp('detectors')), which=('vgg16',))


def render(G, w):
    with torch.no_grad():
        img = G.synthesis(w.repeat(1, G.num_ws, 1), noise_mode='const', force_fp32=True)
    return (img[0].permute(1, 2, 0) * 127.5 + 128).clamp(0, 255).to(torch.uint8).numpy()


def reachable_target(G, seed=5):
    """An image the generator itself makes, at a w away from the mean."""
    z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim).astype(np.float32))
    w = G.mapping(z, None)[:, :1]
    return render(G, w)


def run(args):
    return CliRunner().invoke(projector.run_projection, [str(a) for a in args])


def test_learning_rate_schedule_warms_up_then_decays():
    rates = [projector.learning_rate(step, 100, 0.1) for step in range(100)]
    assert rates[0] == pytest.approx(0.1 / 5 * np.cos(0) , rel=1e-6)   # 5 warm-up steps of 100
    assert np.argmax(rates) == 4
    assert all(a >= b for a, b in zip(rates[4:], rates[5:]))
    assert 0 < rates[-1] < 0.001
    assert projector.exploration_scale(0, 100) == 1 and projector.exploration_scale(50, 100) == 0


def test_noise_penalty_is_small_for_white_noise_and_large_for_smooth_maps():
    torch.manual_seed(0)
    white = [torch.randn(32, 32), torch.randn(16, 16)]
    smooth = [torch.ones(32, 32), torch.ones(16, 16)]
    assert float(projector.noise_autocorrelation_penalty(white)) < 0.01
    assert float(projector.noise_autocorrelation_penalty(smooth)) > 1


def test_projection_reduces_lpips_on_a_reachable_target(network, detector_dir, offline):
    _, G = network
    embedder = projector.load_lpips(torch.device('cpu'), detector_dir)
    target = reachable_target(G).transpose(2, 0, 1)
    stats = projector.estimate_w_stats(G, 2000, seed=0, device=torch.device('cpu'))
    result = projector.project(G, target, embedder, num_steps=60, lr=0.1, w_stats=stats, seed=0)
    assert result.w.shape == (1, G.num_ws, G.w_dim)
    assert result.w_path.shape == (60, G.w_dim)
    assert result.final_distance < 0.5 * result.start_distance
    # The reported final distance belongs to the returned w.
    again = projector.lpips_embed(embedder, torch.as_tensor(result.image))
    target_embedding = projector.lpips_embed(embedder, torch.as_tensor(target)[None].float() / 127.5 - 1)
    assert float((again - target_embedding).square().sum()) == pytest.approx(result.final_distance, rel=0.05, abs=1e-4)


def test_noise_optimisation_restores_the_network(detector_dir, offline, tmp_path):
    torch.manual_seed(2)
    G = write_network(tmp_path / 'net.pkl')
    before = {name: buf.clone() for name, buf in projector.noise_buffers(G).items()}
    assert before, 'the tiny generator should have noise maps'
    embedder = projector.load_lpips(torch.device('cpu'), detector_dir)
    stats = projector.estimate_w_stats(G, 500, seed=0, device=torch.device('cpu'))
    result = projector.project(G, reachable_target(G).transpose(2, 0, 1), embedder, num_steps=8, w_stats=stats,
                               optimize_noise=True)
    assert set(result.noise) == set(before)
    for name, buf in projector.noise_buffers(G).items():
        assert torch.equal(buf, before[name]) and not buf.requires_grad
        fitted = result.noise[name]
        assert abs(float(fitted.mean())) < 1e-4 and float(fitted.std()) == pytest.approx(1, rel=0.1)


def test_cli_writes_upstream_outputs_that_generate_reproduces(network, detector_dir, offline, tmp_path):
    path, G = network
    target_path = tmp_path / 'target_in.png'
    PIL.Image.fromarray(np.pad(reachable_target(G), [(0, 0), (4, 4), (0, 0)], mode='edge')).save(target_path)
    out = tmp_path / 'out'
    result = run(['--network', path, '--target', target_path, '--outdir', out, '--num-steps', 20, '--w-samples', 500,
                  '--detector-dir', detector_dir, '--device', 'cpu', '--save-video', 'true'])
    assert result.exit_code == 0, result.output
    names = set(os.listdir(out))
    assert {'target.png', 'proj.png', 'projected_w.npz'} <= names
    assert ('proj.mp4' in names) or ('proj.gif' in names)
    assert 'LPIPS' in result.output
    w = np.load(out / 'projected_w.npz')['w']
    assert w.shape == (1, G.num_ws, G.w_dim) and w.dtype == np.float32
    target = np.asarray(PIL.Image.open(out / 'target.png'))
    assert target.shape == (RES, RES, 3)   # centre-cropped from 16x24 and not stretched
    proj = np.asarray(PIL.Image.open(out / 'proj.png'))
    assert np.abs(proj.astype(int) - render(G, torch.from_numpy(w[:, :1])).astype(int)).max() <= 1

    import generate
    again = CliRunner().invoke(generate.generate_images, ['--network', str(path), '--projected-w',
                                                          str(out / 'projected_w.npz'), '--outdir', str(tmp_path / 'gen')])
    assert again.exit_code == 0, again.output
    assert np.array_equal(np.asarray(PIL.Image.open(tmp_path / 'gen' / 'proj00.png')), proj)


def test_target_dir_over_a_zip_writes_a_memorisation_table(network, detector_dir, offline, tmp_path):
    path, G = network
    archive = tmp_path / 'data.zip'
    with zipfile.ZipFile(archive, 'w') as z:
        for index, seed in enumerate([5, 9]):
            picture = PIL.Image.fromarray(reachable_target(G, seed))
            with z.open(f'00000/img{index:08d}.png', 'w') as f:
                picture.save(f, format='PNG')
        z.writestr('dataset.json', '{"labels": null}')
    out = tmp_path / 'out'
    result = run(['--network', path, '--target-dir', archive, '--outdir', out, '--num-steps', 5, '--w-samples', 200,
                  '--detector-dir', detector_dir])
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(out)) == ['0000-img00000000', '0001-img00000001', 'lpips.csv', 'lpips_table.txt',
                                       'projected_w.npz', 'targets_and_projections.png']
    assert np.load(out / 'projected_w.npz')['w'].shape == (2, G.num_ws, G.w_dim)
    lines = (out / 'lpips.csv').read_text().splitlines()
    assert lines[0] == 'image,start_lpips,final_lpips' and len(lines) == 3
    assert '00000/img00000001.png' in (out / 'lpips_table.txt').read_text()
    grid = np.asarray(PIL.Image.open(out / 'targets_and_projections.png'))
    assert grid.shape == (2 * RES, 2 * RES, 3)
    assert np.array_equal(grid[:RES, RES:], np.asarray(PIL.Image.open(out / '0001-img00000001' / 'target.png')))


def test_missing_detector_is_one_line_naming_the_fix(network, offline, tmp_path):
    path, G = network
    target_path = tmp_path / 't.png'
    PIL.Image.fromarray(reachable_target(G)).save(target_path)
    result = run(['--network', path, '--target', target_path, '--outdir', tmp_path / 'out'])
    assert result.exit_code != 0
    assert 'Traceback' not in result.output
    assert metric_utils.VGG16_URL in result.output and '--detector-dir' in result.output


def test_bad_arguments_are_one_line_errors(network, detector_dir, offline, tmp_path):
    path, _ = network
    result = run(['--network', path, '--outdir', tmp_path])
    assert result.exit_code != 0 and 'exactly one of --target' in result.output
    empty = tmp_path / 'empty'
    empty.mkdir()
    result = run(['--network', path, '--target-dir', empty, '--outdir', tmp_path, '--detector-dir', detector_dir])
    assert result.exit_code != 0 and 'no images found' in result.output
    broken = tmp_path / 'imgs'
    broken.mkdir()
    (broken / 'a.png').write_bytes(b'not a png')
    result = run(['--network', path, '--target-dir', broken, '--outdir', tmp_path / 'o', '--detector-dir', detector_dir,
                  '--num-steps', 1, '--w-samples', 10])
    assert result.exit_code != 0 and 'cannot read target image a.png' in result.output
    assert 'Traceback' not in result.output
    result = run(['--network', path, '--target', broken / 'a.png', '--outdir', tmp_path, '--device', 'mps'])
    if not torch.backends.mps.is_available():
        assert result.exit_code != 0 and 'MPS is not available' in result.output


def test_lpips_weights_are_downloaded_once_into_the_cache(detector_dir, offline, monkeypatch):
    import contextlib
    import dnnlib
    payload = open(os.path.join(detector_dir, 'vgg16.pt'), 'rb').read()
    fetched = []

    @contextlib.contextmanager
    def fake_stream(url):
        fetched.append(url)
        yield 'vgg16.pt', len(payload), iter([payload])
    monkeypatch.setattr(dnnlib.util, '_stream_url', fake_stream)
    monkeypatch.setattr(metric_utils, 'can_download', lambda url, timeout=5.0: True)
    embedder = projector.load_lpips(torch.device('cpu'))
    assert fetched == [metric_utils.VGG16_URL]
    assert metric_utils.find_local_detector(metric_utils.VGG16_URL) is not None
    assert embedder(torch.zeros(1, 3, RES, RES), resize_images=False, return_lpips=True).ndim == 2
    metric_utils._loaded_detectors.clear()
    projector.load_lpips(torch.device('cpu'))
    assert fetched == [metric_utils.VGG16_URL]      # the second call uses the cached copy
