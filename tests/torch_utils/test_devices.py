"""Tests for torch_utils.devices.pick_device: auto, explicit choices, and one-line errors for absent devices."""

import pytest
import torch

from torch_utils import devices


def test_auto_and_cpu():
    expected = 'cuda' if torch.cuda.is_available() else 'cpu'
    assert devices.pick_device('auto').type == expected
    assert devices.pick_device('cpu') == torch.device('cpu')


@pytest.mark.skipif(torch.cuda.is_available(), reason='needs a machine without CUDA')
def test_absent_cuda_names_the_fix():
    with pytest.raises(devices.DeviceUnavailableError, match='--device=cpu'):
        devices.pick_device('cuda')


def test_mps_is_refused_with_a_reason_where_absent(monkeypatch):
    monkeypatch.setattr(devices, 'mps_available', lambda: False)
    with pytest.raises(devices.DeviceUnavailableError) as info:
        devices.pick_device('mps')
    message = str(info.value)
    assert 'MPS is not available' in message and '--device=cpu' in message and '\n' not in message


def test_mps_is_used_when_present(monkeypatch):
    monkeypatch.setattr(devices, 'mps_available', lambda: True)
    assert devices.pick_device('mps').type == 'mps'
    assert devices.pick_device('auto').type != 'mps'   # only by name


def test_unknown_choice():
    with pytest.raises(devices.DeviceUnavailableError, match='auto, cuda, cpu, mps'):
        devices.pick_device('tpu')
