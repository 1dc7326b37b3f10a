"""Fixtures for the metric tests: a private dnnlib cache, stand-in detectors and no network."""

import pytest

import dnnlib
from metrics import metric_utils

from .standins import write_standin_detectors


@pytest.fixture(scope='session')
def standin_dir(tmp_path_factory):
    return write_standin_detectors(str(tmp_path_factory.mktemp('detectors')))


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No detectors anywhere, a private cache, and network probing switched off."""
    monkeypatch.setenv(metric_utils.OFFLINE_ENV, '1')
    monkeypatch.delenv(metric_utils.DETECTOR_DIR_ENV, raising=False)
    monkeypatch.delenv(metric_utils.LPIPS_CKPT_ENV, raising=False)
    dnnlib.set_cache_dir(str(tmp_path / 'cache'))
    metric_utils._loaded_detectors.clear()
    yield tmp_path
    dnnlib.set_cache_dir(None)
    metric_utils._loaded_detectors.clear()


@pytest.fixture
def metric_env(offline, standin_dir, monkeypatch):
    """Offline, with the stand-in detectors found through $SG2MIXDL_DETECTOR_DIR."""
    monkeypatch.setenv(metric_utils.DETECTOR_DIR_ENV, standin_dir)
    return offline
