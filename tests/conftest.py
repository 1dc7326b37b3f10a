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


def _op_settings():
    from torch_utils import custom_ops
    from torch_utils.ops import conv2d_gradfix, grid_sample_gradfix
    return (conv2d_gradfix.enabled, conv2d_gradfix.weight_gradients_disabled, grid_sample_gradfix.enabled,
            custom_ops.get_preferred_impl())


def _set_op_settings(settings):
    from torch_utils import custom_ops
    from torch_utils.ops import conv2d_gradfix, grid_sample_gradfix
    conv2d_gradfix.enabled, conv2d_gradfix.weight_gradients_disabled, grid_sample_gradfix.enabled = settings[:3]
    custom_ops.set_preferred_impl(settings[3])


_PRISTINE_OP_SETTINGS = _op_settings()


@pytest.fixture(autouse=True)
def _restore_process_wide_op_settings():
    # The training loop switches these module globals on for the whole process (as upstream does).
    # Every test ends with the values a fresh process has, not the values it started with: a module-scoped
    # fixture that trains runs before this fixture, so "what the test started with" may already be switched on.
    yield
    _set_op_settings(_PRISTINE_OP_SETTINGS)
