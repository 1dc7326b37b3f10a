"""Fixtures used by test packages that cannot see each other's conftest.py; import them by name to use them."""

import json
import os

import pytest
import torch

import dnnlib
from metrics import metric_utils


@pytest.fixture(autouse=True)
def single_torch_thread():
    """Autouse wherever imported: tiny convolutions gain nothing from threads, and other test processes
    compete for the cores."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No detectors anywhere, a private dnnlib cache under tmp_path, and network probing switched off."""
    monkeypatch.setenv(metric_utils.OFFLINE_ENV, '1')
    monkeypatch.delenv(metric_utils.DETECTOR_DIR_ENV, raising=False)
    monkeypatch.delenv(metric_utils.LPIPS_CKPT_ENV, raising=False)
    dnnlib.set_cache_dir(str(tmp_path / 'cache'))
    metric_utils._loaded_detectors.clear()
    yield tmp_path
    dnnlib.set_cache_dir(None)
    metric_utils._loaded_detectors.clear()


DEMO_ZIP = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'data', 'demo', 'emoji16-64.zip')


def train_dry_run(outdir, *args):
    """Run `train.py --dry-run` on the demo set with --cfg=fewshot on CPU; return (click result, printed config or None)."""
    from click.testing import CliRunner
    import train
    result = CliRunner().invoke(train.main, [f'--outdir={outdir}', f'--data={DEMO_ZIP}', '--cfg=fewshot',
                                             '--device=cpu', '--dry-run', *args])
    lines = result.output.splitlines()
    config = None
    if '{' in lines:
        start = lines.index('{')
        config = json.loads('\n'.join(lines[start:lines.index('}', start) + 1]))
    return result, config
