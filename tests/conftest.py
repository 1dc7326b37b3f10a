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
