"""Tests for metrics.metric_utils: feature statistics, the dataset cache and offline detector lookup."""

import os

import numpy as np
import pytest
import torch

from metrics import metric_utils
from metrics.metric_utils import FeatureStats, MetricOptions

from .standins import toy_dataset_kwargs


def test_feature_stats_mean_cov_match_numpy():
    rng = np.random.RandomState(1)
    x = rng.randn(50, 6).astype(np.float32)
    stats = FeatureStats(capture_all=True, capture_mean_cov=True, max_items=40)
    stats.append(x[:25])
    stats.append_torch(torch.from_numpy(x[25:]))
    assert stats.num_items == 40 and stats.is_full()
    mean, cov = stats.get_mean_cov()
    np.testing.assert_allclose(mean, x[:40].astype(np.float64).mean(0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(cov, np.cov(x[:40].astype(np.float64), rowvar=False, bias=True), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(stats.get_all(), x[:40])


def test_feature_stats_save_load_roundtrip(tmp_path):
    stats = FeatureStats(capture_mean_cov=True)
    stats.append(np.arange(12, dtype=np.float32).reshape(4, 3))
    stats.save(str(tmp_path / 's.pkl'))
    loaded = FeatureStats.load(str(tmp_path / 's.pkl'))
    assert loaded.num_items == 4 and loaded.num_features == 3
    np.testing.assert_array_equal(loaded.raw_mean, [18, 22, 26])
    assert set(loaded.__dict__) == {'capture_all', 'capture_mean_cov', 'max_items', 'num_items', 'num_features',
                                    'all_features', 'raw_mean', 'raw_cov', }


def _opts(**kw):
    return MetricOptions(dataset_kwargs=toy_dataset_kwargs(), device=torch.device('cpu'), num_workers=0, **kw)


def test_dataset_stats_cached_and_reused(metric_env, monkeypatch):
    opts = _opts()
    first = metric_utils.compute_feature_stats_for_dataset(opts, metric_utils.INCEPTION_URL, dict(return_features=True),
                                                           capture_mean_cov=True)
    assert first.num_items == 12
    cached = os.listdir(os.path.join(str(metric_env), 'cache', 'gan-metrics'))
    assert len(cached) == 1 and cached[0].startswith('toy12-inception-2015-12-05-')

    def must_not_run(*args, **kwargs):
        raise AssertionError('the detector was loaded although the statistics are cached')
    monkeypatch.setattr(metric_utils, 'get_feature_detector', must_not_run)
    second = metric_utils.compute_feature_stats_for_dataset(_opts(), metric_utils.INCEPTION_URL, dict(return_features=True),
                                                            capture_mean_cov=True)
    np.testing.assert_array_equal(first.raw_cov, second.raw_cov)
    # max_items is part of the key (upstream left it out), so a smaller request is computed afresh.
    with pytest.raises(AssertionError, match='statistics are cached'):
        metric_utils.compute_feature_stats_for_dataset(_opts(), metric_utils.INCEPTION_URL, dict(return_features=True),
                                                       capture_mean_cov=True, max_items=5)


def test_missing_detector_offline_gives_clear_error(offline):
    with pytest.raises(metric_utils.DetectorUnavailableError) as info:
        metric_utils.get_feature_detector(metric_utils.VGG16_URL, detector_dir=str(offline / 'dets'))
    message = str(info.value)
    assert metric_utils.VGG16_URL in message
    assert os.path.join(str(offline / 'dets'), 'vgg16.pt') in message
    assert '--metrics=none' in message


def test_detector_found_in_dnnlib_download_cache(offline):
    import hashlib
    downloads = offline / 'cache' / 'downloads'
    downloads.mkdir(parents=True)
    name = hashlib.md5(metric_utils.VGG16_URL.encode()).hexdigest() + '_vgg16.pt'
    (downloads / name).write_bytes(b'x')
    assert metric_utils.find_local_detector(metric_utils.VGG16_URL) == str(downloads / name)


def test_generator_sampler_is_seeded(metric_env):
    from .standins import ToyGenerator
    G = ToyGenerator()
    a = metric_utils.GeneratorSampler(_opts(G=G)).images(3)
    b = metric_utils.GeneratorSampler(_opts(G=G)).images(3)
    c = metric_utils.GeneratorSampler(_opts(G=G, seed=1)).images(3)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (3, 3, 32, 32)


def test_quantize_images_matches_upstream_mapping():
    x = torch.tensor([-2.0, -1.0, 0.0, 0.999, 1.0, 3.0])
    assert metric_utils.quantize_images(x.view(1, 1, 1, -1)).flatten().tolist() == [0, 0, 128, 255, 255, 255]
