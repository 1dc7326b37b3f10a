"""Compile test: upfirdn2d_plugin really builds with nvcc into a fresh directory, GPU or not (about a minute)."""

import os

import pytest
import torch

from torch_utils import custom_ops
from torch_utils.ops import upfirdn2d


def _why_no_compile():
    if torch.version.cuda is None:
        return f'torch {torch.__version__} is a CPU-only build, so it cannot build CUDA extensions'
    if custom_ops.nvcc_version() is None:
        return 'nvcc (the CUDA toolkit) was not found on PATH or under CUDA_HOME'
    return None


@pytest.mark.slow
@pytest.mark.skipif(_why_no_compile() is not None, reason=str(_why_no_compile()))
def test_upfirdn2d_plugin_compiles_and_binds(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_EXTENSIONS_DIR', str(tmp_path))
    custom_ops.forget_plugin('upfirdn2d_plugin')
    try:
        plugin = upfirdn2d._load_plugin()
        built = os.path.realpath(plugin.__file__)
        assert built.startswith(os.path.realpath(str(tmp_path)) + os.sep)
        assert os.path.basename(built).startswith('upfirdn2d_plugin')
        assert callable(plugin.upfirdn2d) and callable(plugin.kernel_path)

        # The binding validates before touching a GPU, so its checks run on GPU-less machines too.
        cpu_x = torch.zeros(1, 1, 4, 4)
        with pytest.raises(RuntimeError, match='x must be a CUDA tensor'):
            plugin.upfirdn2d(cpu_x, torch.ones(2, 2), 1, 1, 1, 1, 0, 0, 0, 0, False, 1.0)
        with pytest.raises(RuntimeError, match='x must be a CUDA tensor'):
            plugin.kernel_path(cpu_x, torch.ones(2, 2), 2, 2, 1, 1, 1, 1, 1, 1)

        # A second request is served from the cache, not rebuilt.
        assert upfirdn2d._load_plugin() is plugin
    finally:
        custom_ops.forget_plugin('upfirdn2d_plugin')
