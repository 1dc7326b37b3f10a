"""Shared pytest set-up: puts the repository root on sys.path and fixes seeds per test."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


@pytest.fixture(autouse=True)
def _fixed_seeds():
    import numpy as np
    import torch
    torch.manual_seed(0)
    np.random.seed(0)
    yield


@pytest.fixture(autouse=True)
def _restore_process_wide_op_settings():
    # The training loop switches these module globals on for the whole process (as upstream does);
    # restoring them keeps every test independent of which tests ran before it.
    from torch_utils import custom_ops
    from torch_utils.ops import conv2d_gradfix, grid_sample_gradfix
    saved = (conv2d_gradfix.enabled, conv2d_gradfix.weight_gradients_disabled, grid_sample_gradfix.enabled,
             custom_ops.get_preferred_impl())
    yield
    conv2d_gradfix.enabled, conv2d_gradfix.weight_gradients_disabled, grid_sample_gradfix.enabled = saved[:3]
    custom_ops.set_preferred_impl(saved[3])
