"""Host-device synchronisation: copies that do not make the host wait, and a guard that finds device reads.

A CUDA training step runs ahead of the GPU only while the host never needs a value the GPU has
not produced yet. Any read of a device tensor on the host (`.item()`, `.cpu()`, `.tolist()`,
`bool(t)`, `float(t)`, `f'{t:.3f}'`, ...) drains the queue and leaves the GPU idle while Python
catches up. The training loop therefore reads device values only at tick boundaries;
`forbid_device_reads` checks that, on any device, CPU included.
"""

import contextlib

import torch
from torch.overrides import TorchFunctionMode
from torch.utils.weak import WeakIdKeyDictionary

#----------------------------------------------------------------------------

def to_device_async(tensor, device):
    """Copy a host tensor to `device` without making the host wait (pinned staging on CUDA); returns the copy."""
    device = torch.device(device)
    if device.type == 'cuda' and tensor.device.type == 'cpu' and not tensor.is_pinned():
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)

#----------------------------------------------------------------------------

class DeviceReadError(RuntimeError):
    """A device tensor was read on the host inside a region that must not synchronise."""


# Tensor methods and torch functions whose result is a host value computed from the tensor's data.
_READS = frozenset([
    'item', 'tolist', 'cpu', 'numpy', '__bool__', '__float__', '__int__', '__index__', '__complex__',
    '__format__', '__array__', 'equal', 'allclose', 'is_nonzero',
])


def _tensors_in(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors_in(item)


class _DeviceReadGuard(TorchFunctionMode):
    """Tracks which tensors hold host values and raises on a host read of any other tensor.

    A tensor holds a host value when it was made on the host in this region (a factory call
    without `device=` or with a CPU generator, `torch.as_tensor` of a numpy array, an optimiser's
    step counter) or computed only from such tensors. `torch.from_numpy` bypasses torch's function
    overrides, so its result counts as a device tensor. Everything else, including every tensor that
    existed before the region and every gradient, counts as a device tensor, so the guard finds
    device reads on a CPU-only machine too. The guard does not look at `.to()`, which on the CPU
    cannot tell an upload from a download.
    """

    def __init__(self, host_tensors=(), count_only=False):
        super().__init__()
        self.host = WeakIdKeyDictionary()
        self.allowed = 0
        self.count_only = count_only
        self.reads = []  # names of the reading functions, in order (count_only)
        for tensor in host_tensors:
            self.host[tensor] = True

    def _is_host(self, tensor):
        return tensor in self.host

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, '__name__', '')
        inputs = list(_tensors_in(args)) + list(_tensors_in(kwargs))
        if name in _READS and not self.allowed:
            device_inputs = [t for t in inputs if not self._is_host(t)]
            if device_inputs and self.count_only:
                self.reads.append(name)
            elif device_inputs:
                shape = list(device_inputs[0].shape)
                raise DeviceReadError(f'{name}() read a device tensor of shape {shape} on the host inside a minibatch; '
                                      f'keep the value on the device and read it once per tick')
        result = func(*args, **kwargs)
        outputs = list(_tensors_in(result))
        if outputs:
            # A draw from a CPU generator is made on the host whatever `device=` says (torch requires them to agree).
            generator = kwargs.get('generator')
            host_draw = generator is not None and generator.device.type == 'cpu'
            explicit_device = kwargs.get('device') is not None and not host_draw
            host = not explicit_device and all(self._is_host(t) for t in inputs)
            for tensor in outputs:
                if host:
                    self.host[tensor] = True
                elif tensor in self.host:
                    del self.host[tensor]  # an in-place op wrote device data into a host tensor
        return result


_active_guards = []


@contextlib.contextmanager
def forbid_device_reads(host_tensors=()):
    """Raise DeviceReadError when code inside reads a device tensor on the host (see _DeviceReadGuard).

    host_tensors: tensors made before the region that hold host values (e.g. optimiser step counters).
    """
    guard = _DeviceReadGuard(host_tensors)
    _active_guards.append(guard)
    try:
        with guard:
            yield guard
    finally:
        _active_guards.pop()


@contextlib.contextmanager
def count_device_reads(host_tensors=()):
    """Like forbid_device_reads(), but only records each read's function name in `guard.reads`."""
    guard = _DeviceReadGuard(host_tensors, count_only=True)
    with guard:
        yield guard


@contextlib.contextmanager
def allow_device_reads():
    """Suspend every active forbid_device_reads() guard (for work that runs once per tick)."""
    for guard in _active_guards:
        guard.allowed += 1
    try:
        yield
    finally:
        for guard in _active_guards:
            guard.allowed -= 1


def optimizer_host_tensors(optimizers):
    """The optimisers' state tensors that live on the host (torch keeps Adam's step counters on the CPU)."""
    found = []
    for opt in optimizers:
        for state in opt.state.values():
            found += [value for value in state.values() if isinstance(value, torch.Tensor) and value.device.type == 'cpu'
                      and value.ndim == 0]
    return found

#----------------------------------------------------------------------------
