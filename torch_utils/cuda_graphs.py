"""CUDA graphs for the training phases: capture a phase's forward and backward once, replay it every minibatch.

At small batches a StyleGAN2 step is bound by kernel launches, not arithmetic: one CUDA graph
launch replaces the hundreds of launches of a phase (forward, backward, and for Greg/Dreg the
double backward of path length and R1). `GraphedLoss` wraps the training loss; the loop calls it
exactly like the loss itself.

What is captured: `loss.accumulate_gradients(phase, ...)` for one batch_gpu chunk, i.e. every
kernel between the phase's inputs and the gradients it adds into `.grad`, including the
loss-statistics reports (accumulated on the device in place) and the NaN/inf watch. What is not:
the optimiser step, the gradient averaging and clean-up, the G EMA update, minibatch preparation
and ADA's p update, which run between replays as before.

A phase is replayed only when capturing it cannot change the result:
  - it reads no device value on the host (a capture cannot contain a synchronisation; ADA's
    geometric augmentations, for instance, size their padding from the drawn warp);
  - it draws no random numbers on the host (a graph would replay the numbers of the capture;
    device draws are fine, each replay continues the CUDA generator's stream as eager code does);
  - the loss is the StyleGAN2 loss or declares `cuda_graph_key(phase)`, a hashable value that
    changes whenever the work of the phase changes (e.g. every n-th minibatch is different).
Otherwise the phase runs uncaptured, after one line that says why.
"""

import contextlib
import random
import warnings

import numpy as np
import torch

from torch_utils import sync_free
from torch_utils import training_stats

#----------------------------------------------------------------------------

def _host_random_states(loss, device):
    streams = [value for value in vars(loss).values() if hasattr(value, 'get_state') and hasattr(value, 'generator')]
    states = [np.random.get_state()[1].copy(), random.getstate()] + [s.get_state() for s in streams]
    # On a CPU device torch's global generator is the device's; elsewhere a draw from it is a host draw.
    return states + ([torch.get_rng_state()] if torch.device(device).type != 'cpu' else [])


def _same_states(a, b):
    for x, y in zip(a, b):
        if isinstance(x, torch.Tensor):
            if not torch.equal(x, y):
                return False
        elif isinstance(x, np.ndarray):
            if not np.array_equal(x, y):
                return False
        elif x != y:
            return False
    return len(a) == len(b)


def capture_blockers(loss, run_phase, device):
    """Why `run_phase()` (one eager call of a phase on `device`) cannot be captured: one-line reasons, empty if it can.

    Runs the phase once, eagerly, counting host reads of device tensors and watching the host random streams
    (numpy's, Python's, any private stream the loss holds as an attribute, and torch's CPU one unless the device
    is the CPU).
    """
    reasons = []
    before = _host_random_states(loss, device)
    on_cuda = torch.device(device).type == 'cuda'
    with sync_free.count_device_reads() as counted, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        if on_cuda:
            torch.cuda.set_sync_debug_mode('warn')  # also flags synchronising ops that Python never sees (nonzero, ...)
        try:
            run_phase()
        finally:
            if on_cuda:
                torch.cuda.set_sync_debug_mode('default')
    syncs = [w for w in caught if 'synchroniz' in str(w.message)]
    if syncs and not counted.reads:
        reasons.append(f'it synchronises with the device ({len(syncs)} times, e.g. {str(syncs[0].message)[:80]})')
    if counted.reads:
        names = sorted(set(counted.reads))
        reasons.append(f'it reads device values on the host ({len(counted.reads)} reads: {", ".join(names)})')
    if not _same_states(before, _host_random_states(loss, device)):
        reasons.append('it draws random numbers on the host, which a replay would repeat')
    return reasons


class _Graph:
    def __init__(self):
        self.graph = torch.cuda.CUDAGraph()
        self.inputs = None  # static input tensors, refilled before each replay
        self.grads = None   # [(param, static grad)] the graph accumulates into


class GraphedLoss:
    """A training loss whose phases replay CUDA graphs; everything else is passed through to `loss`.

    modules: every module whose parameters a phase may train (G, D and the loss's extra modules).
    warmup: eager calls of a phase before it is captured (cuDNN autotuning, lazy allocations); their
        effects on gradients, buffers, loss state, statistics and random streams are undone.
    """

    def __init__(self, loss, modules, device, warmup=3, say=print):
        device = torch.device(device)
        if device.type != 'cuda':
            raise ValueError(f'CUDA graphs need a CUDA device, not {device}')
        self.__dict__.update(_loss=loss, _modules=list(modules), _device=device, _warmup=int(warmup), _say=say,
                             _graphs={}, _uncaptured=set())

    def __getattr__(self, name):
        return getattr(self._loss, name)

    def _key(self, phase, tensors, gain):
        key_fn = getattr(self._loss, 'cuda_graph_key', None)
        if key_fn is None:
            from training.loss import StyleGAN2Loss
            if type(self._loss).accumulate_gradients is not StyleGAN2Loss.accumulate_gradients:
                return None
            plugin_key = None
        else:
            plugin_key = key_fn(phase)
        return (phase, plugin_key, float(gain)) + tuple((tuple(t.shape), t.dtype) for t in tensors)

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain):
        tensors = (real_img, real_c, gen_z, gen_c)
        key = self._key(phase, tensors, gain)
        if key is None or key in self._uncaptured:
            if key is None and phase not in self._uncaptured:
                self._uncaptured.add(phase)
                self._say(f'CUDA graphs: {type(self._loss).__name__} declares no cuda_graph_key; phase {phase} runs uncaptured.')
            return self._loss.accumulate_gradients(phase, real_img, real_c, gen_z, gen_c, gain)
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._capture(key, phase, tensors, gain)
            if entry is None:
                return self._loss.accumulate_gradients(phase, real_img, real_c, gen_z, gen_c, gain)
        for static, value in zip(entry.inputs, tensors):
            static.copy_(value)
        self._attach_grads(entry)
        entry.graph.replay()
        return None

    @staticmethod
    def _attach_grads(entry):
        # The loop clears gradients (set_to_none) before a phase's first chunk; the graph keeps adding into its
        # own gradient tensors, so hand those back, zeroed for a first chunk and as they are for the next ones.
        fresh = []
        for param, grad in entry.grads:
            if param.grad is None:
                fresh.append(grad)
            elif param.grad is not grad:
                grad.copy_(param.grad)
            param.grad = grad
        if fresh:
            torch._foreach_zero_(fresh)

    @contextlib.contextmanager
    def _undone(self, params):
        """Run a block, then put gradients, module buffers, loss state, reported statistics and RNGs back."""
        grads = [None if p.grad is None else p.grad.clone() for p in params]
        buffers = [(b, b.clone()) for m in self._modules for b in m.buffers()]
        loss_state = self._loss.state_dict()
        device_tensors = [(t, t.clone()) for t in vars(self._loss).values() if isinstance(t, torch.Tensor)]
        stats = training_stats.pending_state()
        cpu_rng, cuda_rng = torch.get_rng_state(), torch.cuda.get_rng_state(self._device)
        np_rng, py_rng = np.random.get_state(), random.getstate()
        try:
            yield
        finally:
            torch.cuda.synchronize(self._device)
            for p, g in zip(params, grads):
                if g is None:
                    p.grad = None
                else:
                    p.grad.copy_(g) if p.grad is not None else setattr(p, 'grad', g)
            for buffer, saved in buffers:
                buffer.copy_(saved)
            self._loss.load_state_dict(loss_state)
            for tensor, saved in device_tensors:
                tensor.copy_(saved)
            training_stats.restore_pending(stats)
            torch.set_rng_state(cpu_rng)
            torch.cuda.set_rng_state(cuda_rng, self._device)
            np.random.set_state(np_rng)
            random.setstate(py_rng)

    def _capture(self, key, phase, tensors, gain):
        loss = self._loss
        params = [p for m in self._modules for p in m.parameters() if p.requires_grad]
        inputs = [t.detach().clone() for t in tensors]
        call = lambda: loss.accumulate_gradients(phase, *inputs, gain)  # noqa: E731
        stream = torch.cuda.Stream(self._device)
        stream.wait_stream(torch.cuda.current_stream(self._device))
        with self._undone(params):
            with torch.cuda.stream(stream):
                reasons = capture_blockers(loss, call, self._device)
                for _ in range(self._warmup - 1):
                    call()
            torch.cuda.current_stream(self._device).wait_stream(stream)
            reached = [p for p in params if p.grad is not None]
        if reasons:
            self._uncaptured.add(key)
            self._say(f'CUDA graphs: phase {phase} runs uncaptured: {"; ".join(reasons)}.')
            return None
        entry = _Graph()
        entry.inputs = inputs
        # Parameters the phase never reaches keep grad None (so Adam skips them, as without graphs).
        entry.grads = [(p, torch.zeros_like(p)) for p in reached]
        try:
            with self._undone(params):
                self._attach_grads(entry)
                # A private memory pool per graph: phases replay in varying orders (Greg every 4th minibatch, ...).
                with torch.cuda.graph(entry.graph):
                    call()
        except RuntimeError as err:
            self._uncaptured.add(key)
            self._say(f'CUDA graphs: phase {phase} runs uncaptured: the capture failed ({str(err).splitlines()[0][:120]}).')
            return None
        self._graphs[key] = entry
        self._say(f'CUDA graphs: captured phase {phase} (chunk of {tensors[0].shape[0]} images, {len(reached)} trained tensors).')
        return entry

#----------------------------------------------------------------------------
