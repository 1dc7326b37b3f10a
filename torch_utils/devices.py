"""Choosing the one torch device a script runs on, from a `--device=auto|cuda|cpu|mps` option."""

import torch

DEVICE_CHOICES = ('auto', 'cuda', 'cpu', 'mps')


class DeviceUnavailableError(ValueError):
    """The requested device does not exist on this machine; the message names the alternative."""


def mps_available():
    """True when this torch build can run on Apple's Metal (MPS) backend on this machine."""
    backend = getattr(torch.backends, 'mps', None)
    return backend is not None and backend.is_available()


def _mps_missing_reason():
    backend = getattr(torch.backends, 'mps', None)
    if backend is None or not backend.is_built():
        return 'this torch build has no MPS support (it needs the macOS build of torch on Apple silicon)'
    return 'torch has MPS support but no Metal device is available (it needs macOS 12.3+ on Apple silicon)'


def pick_device(choice='auto'):
    """torch.device for `choice`; raises DeviceUnavailableError with a one-line fix when it is absent.

    'auto' takes the first CUDA device when there is one and the CPU otherwise. It never picks MPS on its
    own: MPS lacks some operations and float64, so it is used only when asked for by name.
    """
    if choice not in DEVICE_CHOICES:
        raise DeviceUnavailableError(f'unknown device {choice!r}; use one of {", ".join(DEVICE_CHOICES)}')
    if choice == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if choice == 'cuda' and not torch.cuda.is_available():
        raise DeviceUnavailableError('CUDA is not available: this torch build has no CUDA support or sees no GPU '
                                     '(install a CUDA build of torch, or use --device=cpu or auto)')
    if choice == 'mps' and not mps_available():
        raise DeviceUnavailableError(f'MPS is not available: {_mps_missing_reason()}; use --device=cpu or auto')
    return torch.device(choice)
