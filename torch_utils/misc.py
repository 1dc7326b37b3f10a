"""Tensor and module helpers shared by networks, pickles and the training loop (constants, shape checks, DDP, copying)."""

import contextlib
import functools
import re
import warnings

import numpy as np
import torch

# ------------------------------------------------------------------------------------------------
# Cached constant tensors.

_constant_cache = {}


def constant(value, shape=None, dtype=None, device=None, memory_format=None):
    """A tensor holding `value` (broadcast to `shape`), built once per (value, shape, dtype, device, format).

    Networks call this inside forward(); caching avoids a host-to-device copy on every call.
    Callers must treat the result as read-only because it is shared.
    """
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if shape is not None:
        shape = tuple(shape)
    if dtype is None:
        dtype = torch.get_default_dtype()
    device = torch.device('cpu') if device is None else torch.device(device)
    if memory_format is None:
        memory_format = torch.contiguous_format

    key = (array.dtype.str, array.shape, array.tobytes(), shape, dtype, device, memory_format)
    cached = _constant_cache.get(key)
    if cached is None:
        # A constant first requested under inference_mode must still be usable by autograd later.
        with torch.inference_mode(False):
            cached = torch.as_tensor(array.copy(), dtype=dtype, device=device)
            if shape is not None:
                cached = cached.expand(shape)  # raises for incompatible shapes, like broadcasting
            cached = cached.contiguous(memory_format=memory_format)
        _constant_cache[key] = cached
    return cached


# ------------------------------------------------------------------------------------------------
# Thin compatibility wrappers.

if hasattr(torch, 'nan_to_num'):
    def nan_to_num(input, nan=0.0, posinf=None, neginf=None, *, out=None):
        """torch.nan_to_num (kept under this name because pickled code calls misc.nan_to_num)."""
        return torch.nan_to_num(input, nan=nan, posinf=posinf, neginf=neginf, out=out)
else:  # torch < 1.8
    def nan_to_num(input, nan=0.0, posinf=None, neginf=None, *, out=None):
        """Replace NaN by `nan` and infinities by the dtype's extremes (or the given values)."""
        assert isinstance(input, torch.Tensor)
        limits = torch.finfo(input.dtype)
        high = limits.max if posinf is None else posinf
        low = limits.min if neginf is None else neginf
        result = torch.where(torch.isnan(input), torch.full_like(input, nan), input).clamp(min=low, max=high)
        if out is not None:
            return out.copy_(result)
        return result

symbolic_assert = getattr(torch, '_assert', None) or getattr(torch, 'Assert')


@contextlib.contextmanager
def suppress_tracer_warnings():
    """Silence torch.jit.TracerWarning inside the block (shape checks are expected to be traced as constants)."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', category=torch.jit.TracerWarning)
        yield


# ------------------------------------------------------------------------------------------------
# Shape checks.


def assert_shape(tensor, ref_shape):
    """Assert that `tensor` has len(ref_shape) dims and matching sizes; None entries match anything.

    While tracing, a size that is a tensor becomes a symbolic assert in the graph instead.
    """
    if tensor.ndim != len(ref_shape):
        raise AssertionError(f'Wrong number of dimensions: got {tensor.ndim}, expected {len(ref_shape)} '
                             f'(shape {tuple(tensor.shape)} vs {tuple(ref_shape)})')
    for dim, (size, expected) in enumerate(zip(tensor.shape, ref_shape)):
        if expected is None:
            continue
        if isinstance(expected, torch.Tensor) or isinstance(size, torch.Tensor):
            with suppress_tracer_warnings():
                symbolic_assert(torch.equal(torch.as_tensor(size), torch.as_tensor(expected)),
                                f'Wrong size for dimension {dim}')
        elif size != expected:
            raise AssertionError(f'Wrong size for dimension {dim}: got {size}, expected {expected} '
                                 f'(shape {tuple(tensor.shape)})')


# ------------------------------------------------------------------------------------------------
# Profiling.


def profiled_function(fn):
    """Decorator: each call shows up as a range named after the function in the autograd profiler."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch.autograd.profiler.record_function(fn.__name__):
            return fn(*args, **kwargs)
    return wrapper


# ------------------------------------------------------------------------------------------------
# Endless data sampling.


class InfiniteSampler(torch.utils.data.Sampler):
    """Never-ending stream of dataset indices, shuffled with a sliding window and split across ranks.

    The order is a seeded permutation walked cyclically; after each step the current slot is swapped
    with a random slot up to rint(len * window_size) positions back, so later epochs differ smoothly.
    Rank r of num_replicas takes every num_replicas-th step starting at r.
    """

    def __init__(self, dataset, rank=0, num_replicas=1, shuffle=True, seed=0, window_size=0.5):
        if len(dataset) < 1:
            raise ValueError('InfiniteSampler: the dataset is empty; check the dataset path')
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f'InfiniteSampler: need 0 <= rank < num_replicas, got rank={rank}, '
                             f'num_replicas={num_replicas}')
        if not 0 <= window_size <= 1:
            raise ValueError(f'InfiniteSampler: window_size must be in [0, 1], got {window_size}')
        super().__init__()
        self.dataset = dataset
        self.rank = rank
        self.num_replicas = num_replicas
        self.shuffle = shuffle
        self.seed = seed
        self.window_size = window_size

    def __iter__(self):
        order = np.arange(len(self.dataset))
        generator = None
        window = 0
        if self.shuffle:
            generator = np.random.RandomState(self.seed)
            generator.shuffle(order)
            window = int(np.rint(order.size * self.window_size))

        step = 0
        while True:
            slot = step % order.size
            if step % self.num_replicas == self.rank:
                yield int(order[slot])
            if window >= 2:
                other = (slot - generator.randint(window)) % order.size
                order[slot], order[other] = order[other], order[slot]
            step += 1


# ------------------------------------------------------------------------------------------------
# Parameters and buffers.


def params_and_buffers(module):
    """All parameters followed by all buffers, as a list."""
    assert isinstance(module, torch.nn.Module)
    return list(module.parameters()) + list(module.buffers())


def named_params_and_buffers(module):
    """(name, tensor) for all parameters followed by all buffers, as a list."""
    assert isinstance(module, torch.nn.Module)
    return list(module.named_parameters()) + list(module.named_buffers())


def copy_params_and_buffers(src_module, dst_module, require_all=False):
    """Copy every parameter/buffer of dst_module that src_module has under the same name.

    Nothing is copied unless all shared names agree in shape, so a failure leaves dst untouched.
    """
    assert isinstance(src_module, torch.nn.Module)
    assert isinstance(dst_module, torch.nn.Module)
    source = dict(named_params_and_buffers(src_module))
    pairs = []
    missing = []
    mismatched = []
    for name, target in named_params_and_buffers(dst_module):
        if name not in source:
            missing.append(name)
            continue
        if source[name].shape != target.shape:
            mismatched.append((name, tuple(source[name].shape), tuple(target.shape)))
            continue
        pairs.append((source[name], target))

    if require_all and missing:
        raise AssertionError(f'copy_params_and_buffers: {len(missing)} tensor(s) of {type(dst_module).__name__} '
                             f'are missing from the source {type(src_module).__name__}, first: {missing[0]!r}')
    if mismatched:
        name, src_shape, dst_shape = mismatched[0]
        more = f' (and {len(mismatched) - 1} more mismatched tensors)' if len(mismatched) > 1 else ''
        raise RuntimeError(f'copy_params_and_buffers: shape mismatch for {name!r}: source has {list(src_shape)}, '
                           f'destination has {list(dst_shape)}{more}. The source pickle was probably trained with '
                           f'a different --cfg or resolution; use the --cfg and dataset resolution that match it.')

    with torch.no_grad():
        for src_tensor, dst_tensor in pairs:
            dst_tensor.copy_(src_tensor.detach()).requires_grad_(dst_tensor.requires_grad)


# ------------------------------------------------------------------------------------------------
# Distributed data parallel helpers.


@contextlib.contextmanager
def ddp_sync(module, sync):
    """Inside the block, a DistributedDataParallel module skips gradient all-reduce unless `sync` is True."""
    assert isinstance(module, torch.nn.Module)
    if sync or not isinstance(module, torch.nn.parallel.DistributedDataParallel):
        yield
    else:
        with module.no_sync():
            yield


def check_ddp_consistency(module, ignore_regex=None):
    """Assert that every parameter and buffer equals rank 0's copy (NaN compares equal to NaN).

    Names are matched as '<TypeName>.<param name>' with re.fullmatch against ignore_regex.
    """
    assert isinstance(module, torch.nn.Module)
    for name, tensor in named_params_and_buffers(module):
        full_name = f'{type(module).__name__}.{name}'
        if ignore_regex is not None and re.fullmatch(ignore_regex, full_name):
            continue
        local = tensor.detach()
        if local.is_floating_point():
            local = nan_to_num(local)
        reference = local.clone()
        torch.distributed.broadcast(tensor=reference, src=0)
        if not torch.equal(local, reference):
            raise AssertionError(f'check_ddp_consistency: {full_name} differs from rank 0')


# ------------------------------------------------------------------------------------------------
# Module summary table.


def _collect_tensors(value):
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _collect_tensors(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in _collect_tensors(item)]
    return []


def print_module_summary(module, inputs, max_nesting=3, skip_redundant=True):
    """Run module(*inputs) once and print per-submodule parameter/buffer counts and output shapes.

    Rows list submodules in the order their forward finished, down to `max_nesting` levels; deeper
    modules are folded into their ancestor. Returns the module's outputs.
    """
    assert isinstance(module, torch.nn.Module)
    assert not isinstance(module, torch.jit.ScriptModule)
    assert isinstance(inputs, (tuple, list))

    calls = []
    depth = [0]

    def enter(_mod, _args):
        depth[0] += 1

    def leave(mod, _args, outputs):
        depth[0] -= 1
        if depth[0] <= max_nesting:
            calls.append((mod, _collect_tensors(outputs)))

    handles = []
    for submodule in module.modules():
        handles.append(submodule.register_forward_pre_hook(enter))
        handles.append(submodule.register_forward_hook(leave))
    try:
        outputs = module(*inputs)
    finally:
        for handle in handles:
            handle.remove()

    # Count each tensor once, in the first (innermost) module that finished with it.
    seen = set()
    rows_data = []
    for mod, tensors in calls:
        new_params = [p for p in mod.parameters() if id(p) not in seen]
        new_buffers = [b for b in mod.buffers() if id(b) not in seen]
        seen.update(id(t) for t in new_params + new_buffers)
        if skip_redundant and not (new_params or new_buffers or tensors):
            continue
        rows_data.append((mod, sum(p.numel() for p in new_params), sum(b.numel() for b in new_buffers), tensors))

    names = {mod: name for name, mod in module.named_modules()}
    names[module] = '<top-level>'
    table = [[type(module).__name__, 'Parameters', 'Buffers', 'Output shape', 'Datatype'], ['---'] * 5]
    for mod, n_params, n_buffers, tensors in rows_data:
        name = names.get(mod, type(mod).__name__)
        first = [name, str(n_params) if n_params else '-', str(n_buffers) if n_buffers else '-']
        if not tensors:
            table.append(first + ['-', '-'])
        for index, tensor in enumerate(tensors):
            label = first if index == 0 else [f'{name}:{index}', '', '']
            table.append(label + [str(list(tensor.shape)), str(tensor.dtype).split('.')[-1]])
    table.append(['---'] * 5)
    table.append(['Total', str(sum(r[1] for r in rows_data)), str(sum(r[2] for r in rows_data)), '', ''])

    widths = [max(len(row[col]) for row in table) for col in range(5)]
    print()
    for row in table:
        print('  '.join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    print()
    return outputs
