"""The NaN/inf watch of the training loss, kept on the device and read once per tick."""

import torch

# Codes are batch_idx * _MAX_PHASES + phase position; _NONE means nothing non-finite yet.
_MAX_PHASES = 64
_NONE = 2 ** 62


class NonFiniteWatch:
    """Remembers the first (minibatch, phase) whose watched loss terms were NaN or infinite.

    watch() and end_minibatch() only launch small device ops; first() reads the device once. The
    per-phase flags are updated in place, so a CUDA graph that captured a watch() keeps feeding them
    when it is replayed.
    """

    def __init__(self):
        self._now = {}       # phase name -> 0-d bool tensor: a term was non-finite in this minibatch
        self._first = None   # 0-d int64 tensor: smallest code seen, or _NONE

    def watch(self, phase, terms):
        """Note whether every element of the tensors `terms` is finite, for phase `phase`."""
        oks = [torch.isfinite(t.detach()).all() for t in terms]
        ok = oks[0] if len(oks) == 1 else torch.stack(oks).all()
        flag = self._now.get(phase)
        if flag is None:
            if len(self._now) == _MAX_PHASES:
                raise ValueError(f'NonFiniteWatch supports at most {_MAX_PHASES} phase names')
            flag = self._now[phase] = torch.zeros([], dtype=torch.bool, device=ok.device)
        flag.logical_or_(~ok)

    def end_minibatch(self, batch_idx):
        """Fold this minibatch's flags into the first-seen record (device ops only) and clear them."""
        if not self._now:
            return
        flags = list(self._now.values())
        if self._first is None:
            self._first = torch.full([], _NONE, dtype=torch.int64, device=flags[0].device)
        codes = torch.arange(len(flags), device=flags[0].device) + int(batch_idx) * _MAX_PHASES
        candidates = torch.where(torch.stack(flags), codes, _NONE)
        torch.minimum(self._first, candidates.min(), out=self._first)
        torch._foreach_zero_(flags)

    def first(self, batch_idx, reduce_min=None):
        """(phase, batch_idx) of the first non-finite term since the last call, or None; reads the device once.

        Flags not yet folded count for minibatch `batch_idx`. reduce_min: called with the 0-d int64
        code tensor to take the minimum over processes in place (all ranks must call it), or None.
        """
        names = list(self._now)
        self.end_minibatch(batch_idx)
        if self._first is None:
            if reduce_min is None:
                return None
            self._first = torch.full([], _NONE, dtype=torch.int64)
        code = self._first.clone()
        self._first.fill_(_NONE)
        if reduce_min is not None:
            reduce_min(code)
        code = int(code)
        if code == _NONE:
            return None
        position = code % _MAX_PHASES
        return (names[position] if position < len(names) else f'#{position}'), code // _MAX_PHASES
