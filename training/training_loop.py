"""The StyleGAN2-ADA training loop: lazy-regularised phases, G EMA, ADA, snapshots, exact resume and per-tick reporting.

training_loop() is a list of calls to the step functions defined here (set-up, resume, phases, one
minibatch, tick report, snapshot and state); tests and bench/ call the same steps one by one.
"""

import contextlib
import copy
import dataclasses
import glob
import hashlib
import itertools
import json
import os
import pickle
import re
import time
from typing import Optional

import numpy as np
import psutil
import torch

import dnnlib
from dnnlib.cli import about_path
from torch_utils import misc
from torch_utils import training_stats
from torch_utils.sync_free import to_device_async
from torch_utils.ops import conv2d_gradfix
from torch_utils.ops import grid_sample_gradfix
from training.image_grid import write_image_grid
from training.loss import lazy_regularisation_phases

#----------------------------------------------------------------------------

TRAINING_STATE_FORMAT = 'stylegan2-ada-mixdl/training-state/1'

# Upstream's snapshot keys, in upstream's order; a loss plug-in may add one key of its own.
SNAPSHOT_KEYS = ('training_set_kwargs', 'G', 'D', 'G_ema', 'augment_pipe')


class TrainingError(RuntimeError):
    """A problem the user can fix; the message is one line that says what and how."""


class TrainingDiverged(TrainingError):
    """A loss became NaN or infinite."""

#----------------------------------------------------------------------------
# Image grids.

GRID_SEEDS_FILE = 'grid-seeds.json'
CPU_GRID_MAX = (8, 4)  # largest default grid off CUDA: 32 fakes, so a CPU tick is not spent drawing pictures


def default_grid_size(resolution, image_count, device_type):
    """Default (gw, gh) of the reals/fakes grids.

    CUDA: upstream's 8K-wide screen (clip(7680 // res, 7, 32) x clip(4320 // res, 4, 32)), with rows
    dropped until the grid holds at most four cells per training image (at least 4 rows), so a
    few-shot set does not get 1024 fakes per snapshot. Other devices: the same, at most 8 x 4.
    """
    gw = int(np.clip(7680 // resolution, 7, 32))
    gh = int(np.clip(4320 // resolution, 4, 32))
    gh = min(gh, max(4, -(-4 * image_count // gw)))
    if device_type != 'cuda':
        gw, gh = min(gw, CPU_GRID_MAX[0]), min(gh, CPU_GRID_MAX[1])
    return gw, gh


def pick_grid_reals(training_set, random_seed=0, grid_size=None):
    """Pick the reals shown in reals.png; returns ((gw, gh), uint8 images [gw*gh, C, H, W], labels [gw*gh, c_dim]).

    grid_size: (gw, gh); None = upstream's size for the resolution (see default_grid_size).
    """
    rnd = np.random.RandomState(random_seed)
    _, height, width = training_set.image_shape
    if grid_size is None:
        grid_size = (int(np.clip(7680 // width, 7, 32)), int(np.clip(4320 // height, 4, 32)))
    gw, gh = grid_size
    count = len(training_set)

    if not training_set.has_labels:
        # Cycle through a shuffled order so small datasets still fill the grid.
        picks = np.resize(rnd.permutation(count), gw * gh)
    else:
        # One label per row, rows cycling over the distinct labels in sorted order.
        label_table = np.stack([training_set.get_label(i) for i in range(count)]).reshape(count, -1)
        _, group_of = np.unique(label_table, axis=0, return_inverse=True)
        group_of = group_of.reshape(-1)
        groups = [rnd.permutation(np.flatnonzero(group_of == g)) for g in range(group_of.max() + 1)]
        picks = np.concatenate([np.resize(groups[row % len(groups)], gw) for row in range(gh)])

    images, labels = zip(*[training_set[int(i)] for i in picks])
    return (gw, gh), np.stack(images), np.stack(labels)


@torch.no_grad()
def render_grid_fakes(G, grid_latents, grid_labels_dev):
    """Fakes in [-1, 1] as a float32 numpy array, with constant noise so grids are comparable over time."""
    chunks = [G(z=z, c=c, noise_mode='const').float().cpu() for z, c in zip(grid_latents, grid_labels_dev)]
    return torch.cat(chunks).numpy()

#----------------------------------------------------------------------------
# Files.

def kimg_label(cur_nimg, sub_kimg=False):
    """The kimg part of snapshot, state and grid names: upstream's '000012' for whole-kimg ticks, or the exact
    image count as '000012.345' when ticks are shorter than 1 kimg (two ticks could share a whole kimg)."""
    label = f'{cur_nimg // 1000:06d}'
    return f'{label}.{cur_nimg % 1000:03d}' if sub_kimg else label


def snapshot_name(cur_nimg, sub_kimg=False):
    return f'network-snapshot-{kimg_label(cur_nimg, sub_kimg)}.pkl'


def training_state_name(cur_nimg, sub_kimg=False):
    return f'training-state-{kimg_label(cur_nimg, sub_kimg)}.pt'


def file_sha256(path):
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def leftover_temporaries(folder):
    """Temporary files (.<name>.<random>.tmp) that a killed write left in `folder`; resume ignores them."""
    return sorted(glob.glob(os.path.join(glob.escape(folder), '.*.tmp')))


def _run_id(dirname):
    match = re.match(r'^(\d+)', dirname)
    return int(match.group(1)) if match else None


def find_latest_training_state(outdir):
    """Newest training-state-*.pt (with its snapshot pickle next to it) under outdir's run dirs, or None.

    Newest means: the run with the highest id, then the highest kimg inside it.
    """
    candidates = []
    for path in glob.glob(os.path.join(glob.escape(outdir), '*', 'training-state-*.pt')):
        run_id = _run_id(os.path.basename(os.path.dirname(path)))
        label = re.search(r'training-state-((\d+)(?:\.(\d{3}))?)\.pt$', path)
        if run_id is None or label is None:
            continue
        if os.path.isfile(os.path.join(os.path.dirname(path), f'network-snapshot-{label.group(1)}.pkl')):
            candidates.append((run_id, int(label.group(2)) * 1000 + int(label.group(3) or 0), path))
    return max(candidates)[2] if candidates else None


def load_training_state(path):
    """Read a training-state file; returns (state dict, path of the matching network snapshot)."""
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except FileNotFoundError:
        raise
    except EOFError:
        raise TrainingError(f'Cannot read training state {path}: the file is empty or cut short; resume from an earlier '
                            f'training-state file of the run') from None
    except pickle.UnpicklingError:
        raise TrainingError(f'Cannot read training state {path}: it holds more than tensors and plain data, so it was '
                            f'not written by train.py; pass a training-state-*.pt of a run') from None
    except (OSError, RuntimeError, ValueError) as err:
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise TrainingError(f'Cannot read training state {path} ({first_line}); resume from another training-state '
                            f'file of the run') from None
    if not isinstance(state, dict) or state.get('format') != TRAINING_STATE_FORMAT:
        raise TrainingError(f'{path} is not a training-state file written by this code (format {TRAINING_STATE_FORMAT})')
    snapshot = os.path.join(os.path.dirname(path), state['snapshot_pkl'])
    if not os.path.isfile(snapshot):
        raise TrainingError(f'{path} needs its network snapshot {snapshot}, which is missing')
    expected = state.get('snapshot_sha256')  # absent in states written before snapshots were hashed
    if expected is not None and file_sha256(snapshot) != expected:
        raise TrainingError(f'{path} (kimg {state["cur_nimg"] / 1000:.3f}) does not belong to {snapshot}: that pickle was '
                            f'replaced after the state was written; resume from another training-state file of the run')
    return state, snapshot

#----------------------------------------------------------------------------
# Random number generators (exact resume).

def _capture_rng(device):
    numpy_state = np.random.get_state()
    return {
        'torch': torch.get_rng_state(),
        'cuda': torch.cuda.get_rng_state(device) if device.type == 'cuda' else None,
        **({'mps': torch.mps.get_rng_state()} if device.type == 'mps' else {}),
        'numpy': {
            'keys': torch.from_numpy(numpy_state[1].astype(np.int64)),
            'pos': int(numpy_state[2]),
            'has_gauss': int(numpy_state[3]),
            'cached_gaussian': float(numpy_state[4]),
        },
    }


def _restore_rng(rng, device):
    torch.set_rng_state(rng['torch'])
    if device.type == 'cuda' and rng.get('cuda') is not None:
        torch.cuda.set_rng_state(rng['cuda'], device)
    if device.type == 'mps' and rng.get('mps') is not None:
        torch.mps.set_rng_state(rng['mps'])
    numpy_state = rng['numpy']
    np.random.set_state(('MT19937', numpy_state['keys'].numpy().astype(np.uint32), numpy_state['pos'],
                         numpy_state['has_gauss'], numpy_state['cached_gaussian']))


@contextlib.contextmanager
def _rng_untouched(device):
    # Tick maintenance (grids, metrics, plug-in images) must not shift the training RNG streams,
    # otherwise a resumed run would diverge from an uninterrupted one.
    saved = _capture_rng(device)
    try:
        yield saved
    finally:
        _restore_rng(saved, device)

#----------------------------------------------------------------------------
# Multi-process helpers. Gradients are averaged explicitly (as in StyleGAN3) rather than through
# DDP, which treats the loss's extra modules exactly like G and D.

def _broadcast_from_rank0(modules):
    with torch.no_grad():
        for module in modules:
            for tensor in misc.params_and_buffers(module):
                torch.distributed.broadcast(tensor, src=0)


def _average_and_clean_gradients(params, num_gpus):
    if num_gpus > 1 and params:
        flat = torch.cat([p.grad.flatten() if p.grad is not None else torch.zeros_like(p).flatten() for p in params])
        torch.distributed.all_reduce(flat)
        flat /= num_gpus
        torch.nan_to_num_(flat, nan=0, posinf=1e5, neginf=-1e5)
        for param, grad in zip(params, flat.split([p.numel() for p in params])):
            param.grad = grad.reshape(param.shape)
        return
    for param in params:
        if param.grad is not None:
            torch.nan_to_num_(param.grad, nan=0, posinf=1e5, neginf=-1e5)


def _gather_from_all(obj, num_gpus):
    if num_gpus == 1:
        return [obj]
    gathered = [None] * num_gpus
    torch.distributed.all_gather_object(gathered, obj)
    return gathered

#----------------------------------------------------------------------------
# Resume helpers.

def _shape_mismatch_hint(src, dst):
    src_kwargs = getattr(src, 'init_kwargs', None) or {}
    dst_kwargs = getattr(dst, 'init_kwargs', None) or {}
    hints = []
    for key in ('img_resolution', 'img_channels', 'c_dim', 'z_dim', 'w_dim'):
        if key in src_kwargs and key in dst_kwargs and src_kwargs[key] != dst_kwargs[key]:
            hints.append(f'{key} {src_kwargs[key]} in the pickle vs {dst_kwargs[key]} here')
    src_syn = src_kwargs.get('synthesis_kwargs', src_kwargs)
    dst_syn = dst_kwargs.get('synthesis_kwargs', dst_kwargs)
    for key in ('channel_base', 'channel_max'):
        if key in src_syn and key in dst_syn and src_syn[key] != dst_syn[key]:
            hints.append(f'{key} {src_syn[key]} in the pickle vs {dst_syn[key]} here')
    if any(h.startswith('channel_base') for h in hints):
        base = src_syn['channel_base']
        cfgs = {16384: 'paper256 (or auto below 512 px)', 32768: 'stylegan2, paper512, paper1024 or fewshot'}
        hints.append(f'use a --cfg with channel_base {base}: {cfgs.get(base, "--cbase=" + str(base))}')
    return '; '.join(hints)


def network_traits(module):
    """What a G or D must share with the network it resumes from: resolution, channels, label width, architecture."""
    architecture = next((m.architecture for m in module.modules() if isinstance(getattr(m, 'architecture', None), str)), None)
    return dict(resolution=getattr(module, 'img_resolution', None), channels=getattr(module, 'img_channels', None),
                labels=getattr(module, 'c_dim', None), architecture=architecture)


def check_resume_fits(saved, expected):
    """Raise TrainingError, before anything is copied, when the pickle's G or D differs from what is being trained
    in resolution, image channels, label width (c_dim) or architecture.

    saved: the unpickled snapshot dict. expected: {'G': traits, 'D': traits} as network_traits returns them
    (None for a trait not to check).
    """
    fixes = dict(
        resolution='resume from a snapshot trained at the resolution of --data, or rebuild the data at the pickle\'s '
                   'resolution with dataset_tool.py --resolution',
        channels='rebuild the data with the pickle\'s channels (dataset_tool.py --color=rgb or grayscale)',
        labels='match --cond (and the dataset.json labels) to the pickle',
        architecture='use the --cfg the pickle was trained with (cifar uses D architecture orig)')
    for key in ('G', 'D'):
        if not isinstance(saved.get(key), torch.nn.Module):
            raise TrainingError(f'--resume: the pickle has no network {key}; pass a network snapshot pickle')
        ours, theirs = expected[key], network_traits(saved[key])
        for trait, fix in fixes.items():
            if None not in (ours[trait], theirs[trait]) and ours[trait] != theirs[trait]:
                raise TrainingError(f'--resume: the pickle\'s {key} has {trait} {theirs[trait]}, the network being trained '
                                    f'has {ours[trait]}; {fix}')


def _copy_resumed_weights(src, dst, what, exact=False, say=print):
    """copy_params_and_buffers by name, with a one-line explanation when shapes differ. Tensors that exist on one
    side only are an error when `exact`, else named in a note (they keep their initialisation or are dropped)."""
    src_tensors = dict(misc.named_params_and_buffers(src))
    mismatched = [(name, tuple(src_tensors[name].shape), tuple(tensor.shape))
                  for name, tensor in misc.named_params_and_buffers(dst)
                  if name in src_tensors and src_tensors[name].shape != tensor.shape]
    if mismatched:
        name, src_shape, dst_shape = mismatched[0]
        hint = _shape_mismatch_hint(src, dst)
        raise TrainingError(f'--resume: {what}.{name} has shape {list(src_shape)} in the pickle but {list(dst_shape)} '
                            f'in the network being trained ({len(mismatched)} tensors differ)' + (f'; {hint}' if hint else ''))
    dst_names = [name for name, _ in misc.named_params_and_buffers(dst)]
    not_in_pickle = [name for name in dst_names if name not in src_tensors]
    not_used = [name for name in src_tensors if name not in set(dst_names)]
    if not_in_pickle or not_used:
        parts = []
        if not_in_pickle:
            parts.append(f'{len(not_in_pickle)} {what} tensor(s) not in the pickle keep their initialisation ({", ".join(not_in_pickle)})')
        if not_used:
            parts.append(f'{len(not_used)} tensor(s) of the pickle\'s {what} have no place here ({", ".join(not_used)})')
        if exact:
            raise TrainingError(f'--resume: the snapshot does not match the networks being trained: {"; ".join(parts)}; '
                                f'resume with the options the run was trained with')
        say(f'Note: --resume copied {what} partly: {"; ".join(parts)}.')
    misc.copy_params_and_buffers(src, dst, require_all=False)


def _load_extra_module_states(extras, saved, where):
    for name, module in extras.items():
        if name not in saved:
            print(f'Note: {where} has no state for loss module "{name}"; it starts from its initialisation.')
            continue
        module.load_state_dict({k: torch.as_tensor(v) for k, v in saved[name].items()})


def _module_state_cpu(module):
    return {name: tensor.detach().cpu().clone() for name, tensor in module.state_dict().items()}

#----------------------------------------------------------------------------
# Per-phase wall-clock timing: CUDA events on GPU (host time is meaningless there), perf_counter on CPU.

class _PhaseTimer:
    def __init__(self, device):
        self.use_events = torch.device(device).type == 'cuda'
        self.start = self.end = None

    def begin(self):
        if self.use_events:
            self.start = torch.cuda.Event(enable_timing=True)
            self.start.record(torch.cuda.current_stream())
        else:
            self.start = time.perf_counter()

    def finish(self):
        if self.use_events:
            self.end = torch.cuda.Event(enable_timing=True)
            self.end.record(torch.cuda.current_stream())
        else:
            self.end = time.perf_counter()

    def elapsed_ms(self):
        if self.start is None or self.end is None:
            return None
        if self.use_events:
            self.end.synchronize()
            return self.start.elapsed_time(self.end)
        return (self.end - self.start) * 1000


class _ResumableSampler(torch.utils.data.Sampler):
    """Skips the indices already consumed before a resume, so the data order continues exactly."""

    def __init__(self, base, skip):
        super().__init__()
        self.base = base
        self.skip = int(skip)

    def __iter__(self):
        return itertools.islice(iter(self.base), self.skip, None)

#----------------------------------------------------------------------------
# The steps of one training process, in the order training_loop() takes them. Tests and the
# benchmarks in bench/ call these same functions, so what they check and time is what users run.

@dataclasses.dataclass
class Progress:
    """Where training stands; a training-state file carries it across a resume."""
    cur_nimg: int = 0                   # images shown to D so far, all processes together
    cur_tick: int = 0                   # index of the tick in progress
    batch_idx: int = 0                  # index of the next minibatch (phases with interval k run when it is a multiple of k)
    ada_window: Optional[tuple] = None  # (count, mean) of sign(D(real)) gathered since p last moved


@dataclasses.dataclass
class Phase:
    """One phase of the schedule (Gmain, Greg, ...), bound to the optimiser that steps after it and the modules it trains."""
    name: str
    interval: int       # minibatches between runs; also the gain of its loss
    opt: torch.optim.Optimizer
    modules: list       # switched to requires_grad during the phase
    params: list        # whose gradients are averaged across processes before the step
    timer: _PhaseTimer


@dataclasses.dataclass
class Minibatch:
    """One process's share of a minibatch, each tensor split into batch_gpu-sized chunks."""
    real_img: tuple     # chunks of [batch_gpu, C, H, W] float32 in [-1, 1]
    real_c: tuple       # chunks of [batch_gpu, c_dim]
    gen_z: list         # per phase: chunks of [batch_gpu, z_dim]
    gen_c: list         # per phase: chunks of [batch_gpu, c_dim], drawn from the dataset's labels


def split_batch(batch_size, batch_gpu, num_gpus):
    """Images per process in one minibatch; each process goes through them batch_gpu at a time."""
    if batch_size % (batch_gpu * num_gpus) != 0:
        raise TrainingError(f'batch_size={batch_size} must be a multiple of batch_gpu*num_gpus={batch_gpu * num_gpus}')
    return batch_size // num_gpus


def setup_process(random_seed=0, num_gpus=1, rank=0, cudnn_benchmark=True, allow_tf32=False):
    """Seed this process (each rank differently) and set the torch switches training relies on."""
    process_seed = random_seed * num_gpus + rank
    np.random.seed(process_seed)
    torch.manual_seed(process_seed)
    torch.backends.cudnn.benchmark = cudnn_benchmark
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32
    # R1 and path length take second derivatives through convolutions and (with ADA) grid sampling.
    conv2d_gradfix.enabled = True
    grid_sample_gradfix.enabled = True


def open_training_set(training_set_kwargs, device):
    """The dataset, and its labels as one float32 table [N, c_dim] on `device` (generated images draw labels from it)."""
    training_set = dnnlib.util.construct_class_by_name(**training_set_kwargs)
    labels = [training_set.get_label(index) for index in range(len(training_set))]
    table = np.stack(labels).astype(np.float32).reshape(len(training_set), training_set.label_dim)
    return training_set, torch.from_numpy(table).to(device)


def network_sizes(training_set):
    """The constructor arguments G and D take from the data."""
    return dict(c_dim=training_set.label_dim, img_resolution=training_set.resolution, img_channels=training_set.num_channels)


def build_networks(sizes, G_kwargs, D_kwargs, device, augment_kwargs=None, augment_p=0, ada_target=None):
    """G, D, G_ema and augment_pipe (None when nothing is augmented) in an EasyDict, on `device`, gradients off."""
    def construct(kwargs, **extra):
        module = dnnlib.util.construct_class_by_name(**kwargs, **extra)
        return module.train().requires_grad_(False).to(device)

    nets = dnnlib.EasyDict(G=construct(G_kwargs, **sizes))
    nets.D = construct(D_kwargs, **sizes)
    nets.G_ema = copy.deepcopy(nets.G).eval()
    nets.augment_pipe = None
    if augment_kwargs is not None and (augment_p > 0 or ada_target is not None):
        nets.augment_pipe = construct(augment_kwargs)
        if hasattr(nets.augment_pipe, 'p'):
            nets.augment_pipe.p.copy_(torch.as_tensor(augment_p))
    return nets


def ada_collector(augment_pipe, ada_target):
    """The collector of sign(D(real)) that ADA steers p with; None when p is fixed."""
    if ada_target is None or augment_pipe is None or not hasattr(augment_pipe, 'p'):
        return None
    # keep_previous=False: an update with no new values must not count the old window again.
    return training_stats.Collector(regex='Loss/signs/real', keep_previous=False)


def build_loss(loss_kwargs, nets, device):
    """The loss named by loss_kwargs.class_name and its extra trainable modules ({name: module}, on `device`)."""
    loss = dnnlib.util.construct_class_by_name(device=device, G_mapping=nets.G.mapping, G_synthesis=nets.G.synthesis,
                                               D=nets.D, augment_pipe=nets.augment_pipe, **loss_kwargs)
    extras = dict(loss.extra_modules())
    for module in extras.values():
        module.to(device).train().requires_grad_(False)
    if extras and not loss.snapshot_key:
        raise TrainingError(f'{type(loss).__name__} has extra modules but no snapshot_key to save them under')
    return loss, extras


def resume_networks(resume_state, resume_pkl, nets, loss, extras, is_main=True, say=print):
    """Load the networks to resume from: a training-state file's snapshot (every process; returns the state for
    the rest of the resume), or a pickle's weights only (rank 0, the others get them by broadcast; returns None)."""
    if resume_state is not None:
        state, snapshot_pkl = load_training_state(resume_state)
        say(f'Resuming exactly from "{resume_state}" (kimg {state["cur_nimg"] / 1000:.1f}, tick {state["cur_tick"]})')
        leftovers = leftover_temporaries(os.path.dirname(resume_state))
        if leftovers:
            say(f'Note: {len(leftovers)} temporary file(s) from an interrupted write are ignored and can be deleted: '
                f'{", ".join(os.path.basename(path) for path in leftovers)}')
        load_snapshot_weights(snapshot_pkl, nets, loss, extras, exact=True, say=say)
        return state
    if resume_pkl is not None:
        say(f'Resuming networks from "{resume_pkl}"')
        if is_main:
            load_snapshot_weights(resume_pkl, nets, loss, extras, exact=False, say=say)
    return None


def read_snapshot(source):
    """Unpickle a network snapshot (path or URL) with legacy.load_network_pkl; an unreadable, truncated or foreign
    pickle is a one-line TrainingError naming it (a missing file stays an OSError)."""
    import legacy  # needed only here
    with dnnlib.util.open_url(source) as f:
        try:
            return legacy.load_network_pkl(f)
        except ValueError as err:  # NetworkPickleError, a TensorFlow-era pickle, a pickle that holds no networks
            raise TrainingError(f'--resume: {source}: {" ".join(str(err).split())}') from None


def load_snapshot_weights(source, nets, loss, extras, exact, say=print):
    """Copy G, D, G_ema and the loss's extra modules from a snapshot pickle (path or URL); `exact` also copies the
    augment pipe, and refuses tensors present on one side only. Resolution, channels, labels and architecture are
    checked first (check_resume_fits)."""
    saved = read_snapshot(source)
    check_resume_fits(saved, {key: network_traits(nets[key]) for key in ('G', 'D')})
    for key in ('G', 'D', 'G_ema'):
        _copy_resumed_weights(saved[key], nets[key], key, exact=exact, say=say)
    if exact and nets.augment_pipe is not None and saved.get('augment_pipe') is not None:
        misc.copy_params_and_buffers(saved['augment_pipe'], nets.augment_pipe, require_all=False)
    if extras and loss.snapshot_key in saved:
        _load_extra_module_states(extras, saved[loss.snapshot_key], source)


def broadcast_networks(nets, extras, num_gpus):
    """Give every process rank 0's weights (after a resume, which only rank 0 may have loaded)."""
    if num_gpus > 1:
        modules = [nets[key] for key in ('G', 'D', 'G_ema', 'augment_pipe') if nets[key] is not None]
        _broadcast_from_rank0(modules + list(extras.values()))


def print_network_summaries(nets, batch_gpu, device):
    """Print G's and D's layer tables from one forward pass (G in eval mode, so its w_avg does not move)."""
    c = torch.zeros([batch_gpu, nets.G.c_dim], device=device)
    nets.G.eval()
    fakes = misc.print_module_summary(nets.G, [torch.zeros([batch_gpu, nets.G.z_dim], device=device), c])
    nets.G.train()
    misc.print_module_summary(nets.D, [fakes, c])


def build_phases(loss, nets, extras, G_opt_kwargs, D_opt_kwargs, G_reg_interval, D_reg_interval, device):
    """The G and D optimisers and the lazy-regularisation phases bound to them; returns ({'G': opt, 'D': opt}, [Phase])."""
    plan = lazy_regularisation_phases(G_reg_interval, D_reg_interval)
    if loss.extra_modules_train_with not in ('G', 'D'):
        raise TrainingError(f'extra_modules_train_with must be "G" or "D", not {loss.extra_modules_train_with!r}')
    trained = dict(G=[nets.G], D=[nets.D])
    trained[loss.extra_modules_train_with].extend(extras.values())
    optimizers = {}
    for network, opt_kwargs, reg_interval in (('G', G_opt_kwargs, G_reg_interval), ('D', D_opt_kwargs, D_reg_interval)):
        opt_kwargs = dnnlib.EasyDict(copy.deepcopy(opt_kwargs))
        if 'betas' in opt_kwargs:
            opt_kwargs.betas = [float(beta) for beta in opt_kwargs.betas]  # torch.optim wants both floats
        if reg_interval is not None and reg_interval > 1:
            # Lazy regularisation (StyleGAN2 paper, section 3.1): the regulariser runs every R-th
            # minibatch with gain R, so lr and the betas are rescaled by R / (R + 1) to keep the schedule.
            ratio = reg_interval / (reg_interval + 1)
            opt_kwargs.lr *= ratio
            opt_kwargs.betas = [beta ** ratio for beta in opt_kwargs.betas]
        optimizers[network] = dnnlib.util.construct_class_by_name(_parameters_of(trained[network]), **opt_kwargs)
    phases = [Phase(name=spec.name, interval=int(spec.interval), opt=optimizers[spec.network], modules=trained[spec.network],
                    params=_parameters_of(trained[spec.network]), timer=_PhaseTimer(device)) for spec in plan]
    return optimizers, phases


def _parameters_of(modules):
    return [param for module in modules for param in module.parameters()]


def restore_training_state(state, source, optimizers, augment_pipe, loss, extras, rank):
    """Put optimisers, p, the loss's state and extra modules back as `state` (from `source`) holds them; returns the
    Progress (a fresh one when state is None). The RNG streams come back separately, last (restore_rng_streams).
    """
    if state is None:
        return Progress()
    try:
        for network, opt in optimizers.items():
            opt.load_state_dict(state['optimizers'][network])
        if augment_pipe is not None and hasattr(augment_pipe, 'p') and state.get('augment_p') is not None:
            augment_pipe.p.copy_(torch.as_tensor(state['augment_p']))
        per_rank = state['loss_state']
        loss.load_state_dict(per_rank[rank] if rank < len(per_rank) else per_rank[0])
        if extras:
            _load_extra_module_states(extras, state.get('extra_modules', {}), source)
    except (ValueError, RuntimeError, KeyError, TypeError) as err:
        # The optimisers or the loss were built differently (e.g. a plug-in switched on or off since).
        current = f'{type(loss).__module__}.{type(loss).__qualname__}'
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise TrainingError(f'--resume: {source} does not fit this run (saved with loss {state.get("loss_class")}, this run '
                            f'uses {current}: {first_line}); resume with the options the run was trained with') from None
    window = state.get('ada_window')
    return Progress(cur_nimg=int(state['cur_nimg']), cur_tick=int(state['cur_tick']), batch_idx=int(state['batch_idx']),
                    ada_window=None if window is None else tuple(window))


def check_resumed_run(state, progress, num_gpus, batch_size, total_kimg, say=print):
    """Stop when a resumed run has nothing left to train; say when the data order cannot continue exactly."""
    if state is None:
        return
    if (state['num_gpus'], state['batch_size']) != (num_gpus, batch_size):
        say(f'Note: the saved run used {state["num_gpus"]} processes and batch {state["batch_size"]}; '
            f'this one uses {num_gpus} and {batch_size}, so the data order will not continue exactly.')
    if progress.cur_nimg >= total_kimg * 1000:
        raise TrainingError(f'Resumed run is already at {progress.cur_nimg / 1000:.1f} kimg >= --kimg={total_kimg}; '
                            f'raise --kimg to continue training')


def restore_rng_streams(state, rank, device):
    """Continue this process's random streams where the saved run left them (no-op without a state)."""
    if state is not None:
        per_rank = state['rng']
        _restore_rng(per_rank[rank] if rank < len(per_rank) else per_rank[0], device)


def data_iterator(training_set, data_loader_kwargs, batch_per_process, rank=0, num_gpus=1, random_seed=0, skip_batches=0):
    """Endless (uint8 images, labels) batches of this process's share, starting after `skip_batches` minibatches."""
    sampler = misc.InfiniteSampler(dataset=training_set, rank=rank, num_replicas=num_gpus, seed=random_seed)
    sampler = _ResumableSampler(sampler, skip=skip_batches * batch_per_process)
    loader = torch.utils.data.DataLoader(dataset=training_set, sampler=sampler, batch_size=batch_per_process, **data_loader_kwargs)
    return iter(loader)


def grid_seeds(random_seed, count):
    """Seeds of the fakes grid's cells, row by row: random_seed * 10000 + [0, count)."""
    return [random_seed * 10000 + cell for cell in range(count)]


def seed_latents(seeds, z_dim):
    """z [len(seeds), z_dim] float32, one row per seed, as generate.py makes them: RandomState(seed).randn(z_dim)."""
    return torch.from_numpy(np.stack([np.random.RandomState(seed).randn(z_dim) for seed in seeds])).to(torch.float32)


def write_grid_seeds(path, size, seeds, labels):
    """Record which seed (and class) each fakes-grid cell shows, with the generate.py command that redraws one."""
    gw, _ = size
    one_hot = labels.shape[1] > 0 and bool(np.all((labels == 0) | (labels == 1)) and np.all(labels.sum(axis=1) == 1))
    cells = []
    for index, seed in enumerate(seeds):
        cell = dict(x=index % gw, y=index // gw, seed=seed)
        if labels.shape[1] > 0:
            cell['class' if one_hot else 'label'] = int(labels[index].argmax()) if one_hot else labels[index].tolist()
        cells.append(cell)
    command = 'python generate.py --network=<network-snapshot.pkl> --seeds=<seed> --trunc=1 --noise-mode=const'
    record = dict(grid_size=list(size), z='numpy.random.RandomState(seed).randn(z_dim) per cell',
                  truncation_psi=1, noise_mode='const', regenerate=command + (' --class=<class>' if one_hot else ''),
                  cells=cells)
    dnnlib.util.write_atomically(path, lambda f: f.write(json.dumps(record, indent=1) + '\n'), mode='wt')


def start_image_grid(run_dir, training_set, G_ema, batch_gpu, random_seed, device, grid_size=None):
    """Write reals.png, fakes_init.png and grid-seeds.json; returns the grid (size, latents, labels) that every
    later fakes grid reuses. grid_size: (gw, gh); None = upstream's size for the resolution."""
    size, reals, labels = pick_grid_reals(training_set, random_seed=random_seed, grid_size=grid_size)
    write_image_grid(reals, os.path.join(run_dir, 'reals.png'), drange=[0, 255], grid_size=size)
    # Cell latents follow generate.py's seed convention, so `generate.py --seeds=<cell seed>` redraws a cell from
    # any snapshot, and the grid shows the same z in every run with this --seed and after a resume.
    labels = labels.astype(np.float32).reshape(len(reals), training_set.label_dim)
    seeds = grid_seeds(random_seed, len(reals))
    write_grid_seeds(os.path.join(run_dir, GRID_SEEDS_FILE), size, seeds, labels)
    latents = seed_latents(seeds, G_ema.z_dim)
    labels = torch.from_numpy(labels)
    chunk = max(batch_gpu, 8)
    grid = dnnlib.EasyDict(size=size, latents=latents.to(device).split(chunk), labels=labels.to(device).split(chunk))
    write_fakes_grid(grid, G_ema, os.path.join(run_dir, 'fakes_init.png'))
    return grid


def write_fakes_grid(grid, G_ema, path):
    """Render the grid's latents with G_ema (constant noise) into one PNG."""
    write_image_grid(render_grid_fakes(G_ema, grid.latents, grid.labels), path, drange=[-1, 1], grid_size=grid.size)


def prepare_minibatch(images, labels, label_table, num_phases, z_dim, batch_gpu, device):
    """Reals from the loader (uint8) mapped to [-1, 1], and fresh latents and labels for each phase, all in chunks."""
    with torch.autograd.profiler.record_function('data_fetch'):
        count = images.shape[0]
        c_dim = label_table.shape[1]
        # Host-to-device copies from pinned memory, so the host never waits for the GPU here.
        real_img = (to_device_async(images, device).to(torch.float32) / 127.5 - 1).split(batch_gpu)
        real_c = to_device_async(labels, device).to(torch.float32).reshape(count, c_dim).split(batch_gpu)
        gen_z = torch.randn([num_phases, count, z_dim], device=device)
        drawn = to_device_async(torch.from_numpy(np.random.randint(len(label_table), size=num_phases * count)), device)
        gen_c = label_table[drawn].reshape(num_phases, count, c_dim)
    return Minibatch(real_img=real_img, real_c=real_c, gen_z=[z.split(batch_gpu) for z in gen_z],
                     gen_c=[c.split(batch_gpu) for c in gen_c])


def run_phases(loss, phases, minibatch, batch_idx, num_gpus):
    """Every phase due at `batch_idx`: accumulate the loss's gradients chunk by chunk, average them over processes, step."""
    loss.begin_minibatch(batch_idx)
    for phase, phase_z, phase_c in zip(phases, minibatch.gen_z, minibatch.gen_c):
        if batch_idx % phase.interval != 0:
            continue
        phase.timer.begin()
        phase.opt.zero_grad(set_to_none=True)
        for module in phase.modules:
            module.requires_grad_(True)
        # Dividing the gain by the number of chunks makes --batch-gpu pure gradient accumulation.
        gain = phase.interval / len(minibatch.real_img)
        for round_img, round_c, round_z, round_gen_c in zip(minibatch.real_img, minibatch.real_c, phase_z, phase_c):
            loss.accumulate_gradients(phase=phase.name, real_img=round_img, real_c=round_c, gen_z=round_z,
                                      gen_c=round_gen_c, gain=gain)
        for module in phase.modules:
            module.requires_grad_(False)
        with torch.autograd.profiler.record_function(phase.name + '_opt'):
            _average_and_clean_gradients(phase.params, num_gpus)
            phase.opt.step()
        phase.timer.finish()


def update_G_ema(G_ema, G, cur_nimg, batch_size, ema_kimg, ema_rampup):
    """Move G_ema towards G with a half-life of ema_kimg (at most cur_nimg * ema_rampup images when ramping up); copy buffers."""
    with torch.autograd.profiler.record_function('Gema'):
        half_life = ema_kimg * 1000 if ema_rampup is None else min(ema_kimg * 1000, cur_nimg * ema_rampup)
        keep = 0.5 ** (batch_size / max(half_life, 1e-8))
        with torch.no_grad():
            for averaged, current in zip(G_ema.parameters(), G.parameters()):
                averaged.lerp_(current, 1 - keep)
            for averaged, current in zip(G_ema.buffers(), G.buffers()):
                averaged.copy_(current)


def train_minibatch(loss, phases, nets, minibatch, progress, batch_size, num_gpus, ema_kimg, ema_rampup):
    """One minibatch: the loss's phases, the G EMA update, and the counters moved on."""
    run_phases(loss, phases, minibatch, progress.batch_idx, num_gpus)
    loss.end_minibatch()
    update_G_ema(nets.G_ema, nets.G, progress.cur_nimg, batch_size, ema_kimg, ema_rampup)
    progress.cur_nimg += batch_size
    progress.batch_idx += 1


def stop_if_diverged(loss, phases, kimg, num_gpus, device, last_snapshot, batch_size=0):
    """Raise TrainingDiverged, on every process alike, when any process saw a NaN/inf loss since the last call.

    Called once per tick (the check reads the device). kimg: where the loss's current minibatch
    (loss.batch_idx) started; the message names the kimg of the first bad minibatch, batch_size images per minibatch.
    """
    def reduce_min(code):
        on_device = code.to(device)
        torch.distributed.all_reduce(on_device, op=torch.distributed.ReduceOp.MIN)
        code.copy_(on_device)
    found = loss.first_nonfinite(reduce_min if num_gpus > 1 else None)
    if found is not None:
        bad_phase, bad_idx = found
        kimg -= (loss.batch_idx - bad_idx) * batch_size / 1000
        kept = f'last good snapshot: {last_snapshot}' if last_snapshot else 'no snapshot was written yet'
        raise TrainingDiverged(f'Loss became NaN/inf in phase {bad_phase} at kimg {kimg:.3f}; training stopped ({kept}). '
                               f'{divergence_hint(loss)}')


def divergence_hint(loss):
    """What a user can change after a NaN/inf loss, naming only train.py options that exist (with the plug-in's weights)."""
    options = getattr(type(loss), 'options', None)
    settings = getattr(options, 'settings', ())
    weights = [s.flag for s in settings if s.type is float and ('weight' in s.kwarg or s.kwarg.startswith('lambda'))]
    plugin = f', smaller {" / ".join(weights)}' if weights else ''
    return f'Try a larger --gamma, a larger --batch{plugin}, or --fp32 (on CUDA), then resume from the last good snapshot.'


def gather_ada_signs(ada_stats, window):
    """The carried (count, mean) window of sign(D(real)) with everything reported since the last call folded in."""
    ada_stats.update()
    return _merge_window(window, ada_stats.num('Loss/signs/real'), ada_stats.mean('Loss/signs/real'))


def adjust_augment_p(augment_pipe, ada_stats, progress, ada_target, ada_interval, ada_kimg, batch_size):
    """ADA's feedback (Karras et al. 2020, section 3): move p by sign(E[sign(D(real))] - target) at a rate of 1 per ada_kimg."""
    window = gather_ada_signs(ada_stats, progress.ada_window)
    if window is not None:
        step = np.sign(window[1] - ada_target) * (batch_size * ada_interval) / (ada_kimg * 1000)
        augment_pipe.p.copy_((augment_pipe.p + step).clamp(min=0))
    progress.ada_window = None


def augment_probability(augment_pipe):
    """The pipe's current p as a float; 0 without a pipe or for a pipe without p (DiffAugment)."""
    return float(augment_pipe.p.cpu()) if augment_pipe is not None and hasattr(augment_pipe, 'p') else 0.0


@dataclasses.dataclass
class TickClock:
    """Wall-clock times (time.time()) the tick report needs."""
    start: float                  # training started
    tick_start: float             # this tick's first minibatch started
    tick_first_nimg: int          # cur_nimg when this tick started
    tick_end: float = 0.0         # this tick's last minibatch finished
    maintenance_sec: float = 0.0  # spent on the previous tick's report, snapshots and metrics

    @classmethod
    def starting_now(cls):
        now = time.time()
        return cls(start=now, tick_start=now, tick_first_nimg=0, tick_end=now)

    def next_tick(self, cur_nimg):
        self.tick_first_nimg = cur_nimg
        self.tick_start = time.time()
        self.maintenance_sec = self.tick_start - self.tick_end


def report_tick(progress, phases, augment_pipe, clock, total_kimg, tick_stats, device):
    """Report the tick's progress, timing and memory to training_stats, reduce every stat once, and return
    (the tick's stats {name: mean/std/num}, its tick line)."""
    for phase in phases:
        elapsed = phase.timer.elapsed_ms()
        if elapsed is not None:
            training_stats.report0('Timing/' + phase.name, elapsed)
    total_sec = clock.tick_end - clock.start
    tick_sec = clock.tick_end - clock.tick_start
    sec_per_kimg = tick_sec / max((progress.cur_nimg - clock.tick_first_nimg) / 1000, 1e-8)
    cpu_mem_gb = psutil.Process(os.getpid()).memory_info().rss / 2**30
    gpu_mem_gb = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == 'cuda' else 0.0
    p = augment_probability(augment_pipe)
    values = {
        'Progress/tick': progress.cur_tick, 'Progress/kimg': progress.cur_nimg / 1000, 'Progress/augment': p,
        'Timing/total_sec': total_sec, 'Timing/sec_per_tick': tick_sec, 'Timing/sec_per_kimg': sec_per_kimg,
        'Timing/maintenance_sec': clock.maintenance_sec, 'Timing/total_hours': total_sec / 3600,
        'Timing/total_days': total_sec / 86400, 'Resources/cpu_mem_gb': cpu_mem_gb, 'Resources/peak_gpu_mem_gb': gpu_mem_gb,
    }
    if device.type == 'cuda':
        values['Resources/peak_gpu_mem_reserved_gb'] = torch.cuda.max_memory_reserved(device) / 2**30
        torch.cuda.reset_peak_memory_stats(device)
    for name, value in values.items():
        training_stats.report0(name, value)
    tick_stats.update()
    eta_sec = max(total_kimg * 1000 - progress.cur_nimg, 0) / 1000 * sec_per_kimg
    losses = [tick_stats[name] if tick_stats.num(name) else None for name in ('Loss/G/loss', 'Loss/D/loss')]
    line = format_tick_line(progress.cur_tick, progress.cur_nimg, total_sec, tick_sec, sec_per_kimg, eta_sec,
                            clock.maintenance_sec, cpu_mem_gb, gpu_mem_gb, p, *losses)
    return tick_stats.as_dict(), line


def snapshot_networks(nets, loss, extras, training_set_kwargs, num_gpus):
    """The network-snapshot pickle's contents: SNAPSHOT_KEYS in order (eval-mode CPU copies), then the loss's
    extra modules' state_dicts under its snapshot_key."""
    contents = {'training_set_kwargs': dict(training_set_kwargs)}
    for key in SNAPSHOT_KEYS[1:]:
        module = nets[key]
        if module is not None and num_gpus > 1:
            # The processes must agree on every weight; running averages (w_avg) are exempt.
            misc.check_ddp_consistency(module, ignore_regex=r'.*\.[^.]+_(avg|ema)')
        contents[key] = None if module is None else copy.deepcopy(module).cpu().eval().requires_grad_(False)
    if extras:
        contents[loss.snapshot_key] = {name: _module_state_cpu(module) for name, module in extras.items()}
    return contents


def save_snapshot(run_dir, snapshot, progress, optimizers, augment_pipe, ada_stats, loss, rng, num_gpus, batch_size, is_main,
                  sub_kimg=False):
    """Write network-snapshot-<kimg>.pkl and training-state-<kimg>.pt (rank 0 writes; every rank must call this,
    since the RNG and loss states are gathered from all of them). Returns the pickle's path.

    sub_kimg: name the files by exact image count (kimg_label), for ticks shorter than 1 kimg. The state
    records the pickle's SHA-256, so a resume can tell when the pickle beside it is not the one it was saved with.
    """
    if ada_stats is not None:
        # Carry the signs gathered since p last moved, so a resume continues the same update.
        progress.ada_window = gather_ada_signs(ada_stats, progress.ada_window)
    all_rng = _gather_from_all(rng, num_gpus)
    all_loss_states = _gather_from_all(loss.state_dict(), num_gpus)
    snapshot_pkl = os.path.join(run_dir, snapshot_name(progress.cur_nimg, sub_kimg))
    if not is_main:
        return snapshot_pkl
    snapshot_bytes = pickle.dumps(snapshot)
    state = dict(
        format=TRAINING_STATE_FORMAT,
        snapshot_pkl=os.path.basename(snapshot_pkl),
        snapshot_sha256=hashlib.sha256(snapshot_bytes).hexdigest(),
        cur_nimg=progress.cur_nimg,
        cur_tick=progress.cur_tick + 1,  # a resume starts with the next tick
        batch_idx=progress.batch_idx,
        num_gpus=num_gpus,
        batch_size=batch_size,
        optimizers={network: opt.state_dict() for network, opt in optimizers.items()},
        augment_p=None if augment_pipe is None else augment_probability(augment_pipe),
        ada_window=None if progress.ada_window is None else list(progress.ada_window),
        loss_class=f'{type(loss).__module__}.{type(loss).__qualname__}',
        loss_state=all_loss_states,
        extra_modules=snapshot.get(loss.snapshot_key, {}),
        rng=all_rng,
    )
    state_pt = os.path.join(run_dir, training_state_name(progress.cur_nimg, sub_kimg))
    # Pickle first: a kill between the two writes leaves a pickle without a state, which resume skips.
    with about_path(snapshot_pkl):
        dnnlib.util.write_atomically(snapshot_pkl, lambda f: f.write(snapshot_bytes))
    with about_path(state_pt):
        dnnlib.util.write_atomically(state_pt, lambda f: torch.save(state, f))
    return snapshot_pkl


def evaluate_metrics(metrics, snapshot, snapshot_pkl, training_set_kwargs, run_dir, num_gpus, rank, device):
    """Compute each metric on the snapshot's G_ema (all processes take part); rank 0 appends metric-<name>.jsonl. Returns {name: value}."""
    from metrics import metric_main  # heavy import, only when metrics are requested
    values = {}
    for metric in metrics:
        result = metric_main.calc_metric(metric=metric, G=snapshot['G_ema'], dataset_kwargs=training_set_kwargs,
                                         num_gpus=num_gpus, rank=rank, device=device)
        if rank == 0:
            metric_main.report_metric(result, run_dir=run_dir, snapshot_pkl=snapshot_pkl)
        values.update(result.results)
    return values


class StatsWriter:
    """The per-tick stats files of rank 0: stats.jsonl, and TensorBoard events when tensorboard is installed."""

    def __init__(self, run_dir, say=print):
        self.jsonl = open(os.path.join(run_dir, 'stats.jsonl'), 'at')
        self.tensorboard = None
        try:
            import torch.utils.tensorboard as tensorboard
            self.tensorboard = tensorboard.SummaryWriter(run_dir)
        except ImportError:
            say('TensorBoard is not installed; skipping events files (pip install tensorboard to get them).')

    def write(self, stats, metric_values, cur_nimg, start_time):
        """One jsonl record (the tick's stats plus a timestamp); TensorBoard scalars at step kimg."""
        timestamp = time.time()
        self.jsonl.write(json.dumps({**stats, 'timestamp': timestamp}) + '\n')
        self.jsonl.flush()
        if self.tensorboard is not None:
            scalars = [(name, value.mean) for name, value in stats.items()]
            scalars += [(f'Metrics/{name}', value) for name, value in metric_values.items()]
            for name, value in scalars:
                self.tensorboard.add_scalar(name, value, global_step=cur_nimg // 1000, walltime=timestamp - start_time)
            self.tensorboard.flush()

    def close(self):
        self.jsonl.close()
        if self.tensorboard is not None:
            self.tensorboard.close()

#----------------------------------------------------------------------------

def needs_sub_kimg_names(kimg_per_tick, image_snapshot_ticks, network_snapshot_ticks, total_kimg):
    """True when snapshots or grids less than 1 kimg apart (or a run ending mid-kimg) could share a whole-kimg
    name; their names then carry the exact image count (kimg_label), and other runs keep upstream's names."""
    intervals = [ticks * kimg_per_tick for ticks in (image_snapshot_ticks, network_snapshot_ticks) if ticks is not None]
    return any(interval < 1 for interval in intervals) or total_kimg != int(total_kimg)


def graphed_loss(loss, nets, extras, device, say):
    """The loss the minibatches call with --cuda-graphs: the same loss, replaying each phase it can capture."""
    from torch_utils.cuda_graphs import GraphedLoss
    return GraphedLoss(loss, [nets.G, nets.D, *extras.values()], device, say=say)


def write_snapshot_images(grid, G_ema, loss, run_dir, label):
    """fakes<label>.png, then the plug-in's own images named with the same label."""
    write_fakes_grid(grid, G_ema, os.path.join(run_dir, f'fakes{label}.png'))
    loss.write_snapshot_images(G_ema, run_dir, label)


def training_loop(
    run_dir                 = '.',      # Output directory (must exist).
    training_set_kwargs     = {},       # Options for the training set (class_name, path, ...).
    data_loader_kwargs      = {},       # Options for torch.utils.data.DataLoader.
    G_kwargs                = {},       # Options for the generator.
    D_kwargs                = {},       # Options for the discriminator.
    G_opt_kwargs            = {},       # Options for the generator optimiser.
    D_opt_kwargs            = {},       # Options for the discriminator optimiser.
    augment_kwargs          = None,     # Options for the augmentation pipeline; None = no augmentation.
    loss_kwargs             = {},       # Options for the loss (class_name picks a plug-in).
    metrics                 = [],       # Metric names evaluated at every network snapshot.
    random_seed             = 0,        # Global seed.
    num_gpus                = 1,        # Number of processes (GPUs, or CPU workers with gloo).
    rank                    = 0,        # Rank of this process, in [0, num_gpus).
    batch_size              = 4,        # Images per minibatch, over all processes.
    batch_gpu               = 4,        # Images per forward/backward pass in one process (accumulated).
    ema_kimg                = 10,       # Half-life of the G EMA, in kimg.
    ema_rampup              = None,     # EMA ramp-up: half-life at most cur_nimg * this; None = off.
    G_reg_interval          = 4,        # Path-length regularisation every this many minibatches; None = with main loss.
    D_reg_interval          = 16,       # R1 regularisation every this many minibatches; None = with main loss.
    augment_p               = 0,        # Initial augmentation probability.
    ada_target              = None,     # ADA target for E[sign(D(real))]; None = fixed p.
    ada_interval            = 4,        # Adjust p every this many minibatches.
    ada_kimg                = 500,      # kimg for p to move by 1.
    total_kimg              = 25000,    # Training length, in kimg.
    kimg_per_tick           = 4,        # Progress report interval, in kimg.
    image_snapshot_ticks    = 50,       # Fakes grid every this many ticks; None = never (and no reals/fakes_init).
    grid_size               = None,     # (columns, rows) of the reals/fakes grids; None = upstream's for the resolution.
    network_snapshot_ticks  = 50,       # Snapshot + training state every this many ticks; None = never.
    resume_pkl              = None,     # Start from the networks of this pickle (path or URL); kimg restarts at 0.
    resume_state            = None,     # Continue exactly from this training-state-*.pt; kimg continues.
    cudnn_benchmark         = True,     # torch.backends.cudnn.benchmark.
    allow_tf32              = False,    # TF32 for matmul and convolutions.
    abort_fn                = None,     # Callable: returns True to stop at the next tick.
    progress_fn             = None,     # Callable(cur_kimg, total_kimg) called each tick.
    device                  = 'cpu',    # torch.device or string, as train.py chose it (with the precision in G/D_kwargs).
    cuda_graphs             = False,    # Replay each phase as a CUDA graph where it can be captured (CUDA only).
):
    """Train G and D in this process (one of num_gpus); returns the path of the last network snapshot, or None."""
    # --- Set-up --------------------------------------------------------------------------------
    clock = TickClock.starting_now()
    device = torch.device(device)
    sub_kimg = needs_sub_kimg_names(kimg_per_tick, image_snapshot_ticks, network_snapshot_ticks, total_kimg)
    setup_process(random_seed, num_gpus, rank, cudnn_benchmark, allow_tf32)
    is_main = rank == 0
    say = print if is_main else (lambda *args, **kwargs: None)
    batch_per_process = split_batch(batch_size, batch_gpu, num_gpus)
    training_set, label_table = open_training_set(training_set_kwargs, device)
    say(f'Dataset: {len(training_set)} images of shape {training_set.image_shape}, labels {training_set.label_shape}')
    nets = build_networks(network_sizes(training_set), G_kwargs, D_kwargs, device, augment_kwargs, augment_p, ada_target)
    ada_stats = ada_collector(nets.augment_pipe, ada_target)
    loss, extras = build_loss(loss_kwargs, nets, device)

    # --- Resume: networks, then phases and the rest of the saved state -------------------------
    state = resume_networks(resume_state, resume_pkl, nets, loss, extras, is_main, say)
    broadcast_networks(nets, extras, num_gpus)
    if is_main:
        print_network_summaries(nets, batch_gpu, device)
    optimizers, phases = build_phases(loss, nets, extras, G_opt_kwargs, D_opt_kwargs, G_reg_interval, D_reg_interval, device)
    step_loss = graphed_loss(loss, nets, extras, device, say) if cuda_graphs else loss  # what minibatches call
    progress = restore_training_state(state, resume_state, optimizers, nets.augment_pipe, loss, extras, rank)
    check_resumed_run(state, progress, num_gpus, batch_size, total_kimg, say)
    training_iter = data_iterator(training_set, data_loader_kwargs, batch_per_process, rank, num_gpus, random_seed,
                                  skip_batches=progress.batch_idx)
    grid = (start_image_grid(run_dir, training_set, nets.G_ema, batch_gpu, random_seed, device, grid_size)
            if is_main and image_snapshot_ticks is not None else None)
    tick_stats = training_stats.Collector(regex='.*')
    stats_writer = StatsWriter(run_dir, say) if is_main else None
    metric_values, last_snapshot = {}, None
    say(f'Phases: {", ".join(f"{p.name}/{p.interval}" for p in phases)}; training until {total_kimg} kimg.')
    restore_rng_streams(state, rank, device)  # last, because set-up itself draws random numbers
    del state
    clock.next_tick(progress.cur_nimg)
    if progress_fn is not None:
        progress_fn(progress.cur_nimg // 1000, total_kimg)

    # --- Train: one minibatch per pass ---------------------------------------------------------
    while True:
        minibatch = prepare_minibatch(*next(training_iter), label_table, len(phases), nets.G.z_dim, batch_gpu, device)
        train_minibatch(step_loss, phases, nets, minibatch, progress, batch_size, num_gpus, ema_kimg, ema_rampup)
        if ada_stats is not None and progress.batch_idx % ada_interval == 0:
            adjust_augment_p(nets.augment_pipe, ada_stats, progress, ada_target, ada_interval, ada_kimg, batch_size)
        done = progress.cur_nimg >= total_kimg * 1000
        if not done and progress.cur_tick != 0 and progress.cur_nimg < clock.tick_first_nimg + kimg_per_tick * 1000:
            continue

        # --- Tick: report, images, snapshot and state, metrics (none of it moves the training RNGs)
        clock.tick_end = time.time()
        # The NaN/inf watch stays on the device during the tick; read it before anything is written.
        stop_if_diverged(loss, phases, (progress.cur_nimg - batch_size) / 1000, num_gpus, device, last_snapshot, batch_size)
        with _rng_untouched(device) as rng_at_tick:
            stats, line = report_tick(progress, phases, nets.augment_pipe, clock, total_kimg, tick_stats, device)
            say(line)
            if abort_fn is not None and not done and abort_fn():
                done = True
                say('abort_fn asked to stop; finishing this tick.')
            if grid is not None and (done or progress.cur_tick % image_snapshot_ticks == 0):
                write_snapshot_images(grid, nets.G_ema, loss, run_dir, kimg_label(progress.cur_nimg, sub_kimg))
            if network_snapshot_ticks is not None and (done or progress.cur_tick % network_snapshot_ticks == 0):
                snapshot = snapshot_networks(nets, loss, extras, training_set_kwargs, num_gpus)
                last_snapshot = save_snapshot(run_dir, snapshot, progress, optimizers, nets.augment_pipe, ada_stats, loss,
                                              rng_at_tick, num_gpus, batch_size, is_main, sub_kimg)
                if metrics:
                    metric_values.update(evaluate_metrics(metrics, snapshot, last_snapshot, training_set_kwargs, run_dir,
                                                          num_gpus, rank, device))
                del snapshot
            if stats_writer is not None:
                stats_writer.write(stats, metric_values, progress.cur_nimg, clock.start)
            if progress_fn is not None:
                progress_fn(progress.cur_nimg // 1000, total_kimg)
        progress.cur_tick += 1
        clock.next_tick(progress.cur_nimg)
        if done:
            break

    if stats_writer is not None:
        stats_writer.close()
    say(f'Finished at {progress.cur_nimg / 1000:.1f} kimg.')
    return last_snapshot


def _merge_window(window, count, mean):
    """Combine a carried (count, mean) with a new window's count and mean; None when both are empty."""
    count = int(count)
    if count == 0:
        return window
    if window is None or window[0] == 0:
        return (count, float(mean))
    total = window[0] + count
    return (total, (window[0] * window[1] + count * float(mean)) / total)


def format_tick_line(tick, cur_nimg, total_sec, tick_sec, sec_per_kimg, eta_sec, maintenance_sec,
                     cpu_mem_gb, gpu_mem_gb, augment_p, g_loss, d_loss):
    """One aligned status line; users and tools read `sec/kimg <value>` from it.

    g_loss / d_loss: None when the tick had no full-image loss (e.g. only MixDL patch minibatches); shown as '-'
    so that it cannot be mistaken for a diverged NaN loss.
    """
    fmt = dnnlib.util.format_time
    loss_text = lambda value: '-' if value is None else f'{value:.3f}'  # noqa: E731
    fields = [
        f'tick {tick:<5d}',
        f'kimg {cur_nimg / 1000:<8.1f}',
        f'time {fmt(total_sec):<12s}',
        f'sec/tick {tick_sec:<7.1f}',
        f'sec/kimg {sec_per_kimg:<7.2f}',
        f'ETA {fmt(eta_sec):<12s}',
        f'maintenance {maintenance_sec:<6.1f}',
        f'cpumem {cpu_mem_gb:<6.2f}',
        f'gpumem {gpu_mem_gb:<6.2f}',
        f'augment {augment_p:<7.3f}',
        f'G {loss_text(g_loss):<7s}',
        f'D {loss_text(d_loss):<7s}',
    ]
    return ' '.join(fields).rstrip()

#----------------------------------------------------------------------------
