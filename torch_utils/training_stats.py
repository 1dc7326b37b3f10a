"""The stats bus: report scalars from anywhere, reduce them across processes once per tick with a Collector."""

import re

import numpy as np
import torch

import dnnlib

from . import misc

# Moments kept per name: [count, sum, sum of squares]. float64 keeps sums of many small losses exact enough.
_MOMENT_COUNT = 3
_MOMENT_DTYPE = torch.float64

_process_rank = 0           # set by init_multiprocessing(); report0 keeps only rank 0's values
_reduce_device = None       # device for the cross-process all_reduce; None means single process
_first_update_done = False  # init_multiprocessing must come before any reduction
_pending_moments = dict()   # name -> {device: moments tensor} accumulated since the last reduction
_total_moments = dict()     # name -> CPU moments tensor summed over all processes and all reductions


def init_multiprocessing(rank, sync_device):
    """Configure multi-process reduction; call before the first Collector.update().

    Repeating the current configuration later is allowed (a benchmark or test that sets up a single
    process again); changing it after statistics have been collected is not.

    rank: this process's rank. sync_device: device whose tensors torch.distributed can all_reduce
    (the process's GPU with NCCL, CPU with gloo), or None for a single process.
    """
    global _process_rank, _reduce_device
    if _first_update_done and (rank, sync_device) != (_process_rank, _reduce_device):
        raise RuntimeError('training_stats.init_multiprocessing() must be called before the first '
                           'Collector.update(); move it to process start-up')
    _process_rank = rank
    _reduce_device = sync_device


def _moments_of(value):
    values = torch.as_tensor(value).detach()
    if values.numel() == 0:
        return None
    if values.device.type == 'mps':
        values = values.cpu()  # MPS has no float64
    values = values.flatten().to(_MOMENT_DTYPE)
    count = torch.full((), values.numel(), dtype=_MOMENT_DTYPE, device=values.device)
    return torch.stack([count, values.sum(), values.square().sum()])


@misc.profiled_function
def report(name, value):
    """Accumulate `value` (scalar, list, array or tensor of any shape) under `name`; returns `value` unchanged.

    Adds on the value's own device without reading it back, so it never stalls the GPU. An empty
    value still registers the name (every process must report the same names in the same order).
    """
    per_device = _pending_moments.setdefault(name, dict())
    moments = _moments_of(value)
    if moments is None:
        return value
    assert moments.shape == (_MOMENT_COUNT,)
    if moments.device in per_device:
        per_device[moments.device].add_(moments)
    else:
        per_device[moments.device] = moments
    return value


def report0(name, value):
    """Like report(), but only rank 0's values count; other ranks register the name with no data."""
    report(name, value if _process_rank == 0 else [])
    return value


def pending_state():
    """A copy of everything reported since the last reduction, for restore_pending()."""
    return {name: {device: moments.clone() for device, moments in per_device.items()}
            for name, per_device in _pending_moments.items()}


def restore_pending(state):
    """Put the pending reports back as pending_state() saw them (in place: names reported since are zeroed, not dropped).

    In place, because a captured CUDA graph keeps adding into the tensors that were pending when it was captured.
    """
    for name, per_device in _pending_moments.items():
        for device, moments in per_device.items():
            saved = state.get(name, {}).get(device)
            moments.copy_(saved) if saved is not None else moments.zero_()


def _reduce(names):
    """Fold pending moments of `names` into the global totals (one all_reduce across processes)."""
    global _first_update_done
    if not names:
        return []
    _first_update_done = True
    device = _reduce_device if _reduce_device is not None else torch.device('cpu')
    fresh = torch.zeros([len(names), _MOMENT_COUNT], dtype=_MOMENT_DTYPE, device=device)
    for row, name in enumerate(names):
        for moments in _pending_moments[name].values():
            fresh[row].add_(moments.to(device))
            moments.zero_()
    if _reduce_device is not None:
        torch.distributed.all_reduce(fresh)
    fresh = fresh.cpu()
    for row, name in enumerate(names):
        total = _total_moments.setdefault(name, torch.zeros([_MOMENT_COUNT], dtype=_MOMENT_DTYPE))
        total.add_(fresh[row])
    return [(name, _total_moments[name]) for name in names]


class Collector:
    """Reads back the reported statistics whose names match `regex`, as deltas between update() calls.

    keep_previous: if a name received nothing since the last update, keep its previous values
    (True) or report it as empty (False).
    """

    def __init__(self, regex='.*', keep_previous=True):
        self._pattern = re.compile(regex)
        self._keep_previous = keep_previous
        self._seen_totals = dict()   # name -> totals at our previous update
        self._window = dict()        # name -> moments between the last two updates
        self.update()
        self._window.clear()         # only data reported after construction counts

    def names(self):
        """Names reported so far (in first-report order) that match the regex."""
        return [name for name in _pending_moments if self._pattern.fullmatch(name)]

    def update(self):
        """Reduce across processes and capture what was reported since the previous update()."""
        if not self._keep_previous:
            self._window.clear()
        for name, totals in _reduce(self.names()):
            previous = self._seen_totals.setdefault(name, torch.zeros_like(totals))
            delta = totals - previous
            previous.copy_(totals)
            if float(delta[0]) != 0:
                self._window[name] = delta

    def num(self, name):
        """Number of scalars reported under `name` in the last window."""
        moments = self._window.get(name)
        return 0 if moments is None else int(moments[0])

    def mean(self, name):
        """Mean over the last window (NaN if nothing was reported)."""
        moments = self._window.get(name)
        if moments is None or float(moments[0]) == 0:
            return float('nan')
        return float(moments[1] / moments[0])

    def std(self, name):
        """Population standard deviation over the last window (0 for one sample, NaN for none)."""
        moments = self._window.get(name)
        if moments is None or float(moments[0]) == 0:
            return float('nan')
        count = float(moments[0])
        mean = float(moments[1]) / count
        if not np.isfinite(mean):
            return float('nan')
        if count == 1:
            return 0.0
        variance = float(moments[2]) / count - mean ** 2
        return float(np.sqrt(max(variance, 0.0)))

    def as_dict(self):
        """{name: EasyDict(num, mean, std)} for every matching name."""
        return dnnlib.EasyDict({name: dnnlib.EasyDict(num=self.num(name), mean=self.mean(name), std=self.std(name))
                                for name in self.names()})

    def __getitem__(self, name):
        return self.mean(name)
