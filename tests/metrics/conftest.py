"""Fixtures for the metric tests: a private dnnlib cache, stand-in detectors and no network."""

import pytest

from metrics import metric_utils
from tests._shared import offline  # noqa: F401 (fixture, shared with tests/scripts)

from .standins import write_standin_detectors


@pytest.fixture(scope='session')
def standin_dir(tmp_path_factory):
    return write_standin_detectors(str(tmp_path_factory.mktemp('detectors')))


@pytest.fixture
def metric_env(offline, standin_dir, monkeypatch):
    """Offline, with the stand-in detectors found through $SG2MIXDL_DETECTOR_DIR."""
    monkeypatch.setenv(metric_utils.DETECTOR_DIR_ENV, standin_dir)
    return offline
