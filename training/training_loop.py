"""The StyleGAN2-ADA training loop: lazy-regularised phases, G EMA, ADA, snapshots, exact resume and per-tick reporting."""

import contextlib
import copy
import glob
import itertools
import json
import os
import pickle
import re
import time

import numpy as np
import PIL.Image
import psutil
import torch

import dnnlib
from torch_utils import misc
from torch_utils import training_stats
from torch_utils.ops import conv2d_gradfix
from torch_utils.ops import grid_sample_gradfix
from training.image_grid import write_image_grid

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

def pick_grid_reals(training_set, random_seed=0):
    """Pick the reals shown in reals.png; returns ((gw, gh), uint8 images [gw*gh, C, H, W], labels [gw*gh, c_dim])."""
    rnd = np.random.RandomState(random_seed)
    _, height, width = training_set.image_shape
    gw = int(np.clip(7680 // width, 7, 32))
    gh = int(np.clip(4320 // height, 4, 32))
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

def snapshot_name(cur_nimg):
    return f'network-snapshot-{cur_nimg // 1000:06d}.pkl'


def training_state_name(cur_nimg):
    return f'training-state-{cur_nimg // 1000:06d}.pt'


def _write_atomically(path, write_fn):
    # A crash mid-write leaves the previous file (or nothing), never a truncated snapshot.
    temp_path = f'{path}.tmp{os.getpid()}'
    try:
        with open(temp_path, 'wb') as f:
            write_fn(f)
        os.replace(temp_path, path)
    finally:
        if os.path.exists(temp_path):
            os.remove(temp_path)


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
        kimg = re.search(r'training-state-(\d+)\.pt$', path)
        snapshot = os.path.join(os.path.dirname(path), f'network-snapshot-{kimg.group(1)}.pkl') if kimg else None
        if run_id is not None and kimg and os.path.isfile(snapshot):
            candidates.append((run_id, int(kimg.group(1)), path))
    return max(candidates)[2] if candidates else None


def load_training_state(path):
    """Read a training-state file; returns (state dict, path of the matching network snapshot)."""
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except (OSError, RuntimeError, pickle.UnpicklingError) as err:
        raise TrainingError(f'Cannot read training state {path}: {err}') from err
    if not isinstance(state, dict) or state.get('format') != TRAINING_STATE_FORMAT:
        raise TrainingError(f'{path} is not a training-state file written by this code (format {TRAINING_STATE_FORMAT})')
    snapshot = os.path.join(os.path.dirname(path), state['snapshot_pkl'])
    if not os.path.isfile(snapshot):
        raise TrainingError(f'{path} needs its network snapshot {snapshot}, which is missing')
    return state, snapshot

#----------------------------------------------------------------------------
# Random number generators (exact resume).

def _capture_rng(device):
    numpy_state = np.random.get_state()
    return {
        'torch': torch.get_rng_state(),
        'cuda': torch.cuda.get_rng_state(device) if device.type == 'cuda' else None,
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


def _copy_resumed_weights(src, dst, what):
    """copy_params_and_buffers by name, but with a one-line explanation when shapes differ."""
    src_tensors = dict(misc.named_params_and_buffers(src))
    mismatched = [(name, tuple(src_tensors[name].shape), tuple(tensor.shape))
                  for name, tensor in misc.named_params_and_buffers(dst)
                  if name in src_tensors and src_tensors[name].shape != tensor.shape]
    if mismatched:
        name, src_shape, dst_shape = mismatched[0]
        hint = _shape_mismatch_hint(src, dst)
        raise TrainingError(f'--resume: {what}.{name} has shape {list(src_shape)} in the pickle but {list(dst_shape)} '
                            f'in the network being trained ({len(mismatched)} tensors differ)' + (f'; {hint}' if hint else ''))
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
        self.use_events = device.type == 'cuda'
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
    network_snapshot_ticks  = 50,       # Snapshot + training state every this many ticks; None = never.
    resume_pkl              = None,     # Start from the networks of this pickle (path or URL); kimg restarts at 0.
    resume_state            = None,     # Continue exactly from this training-state-*.pt; kimg continues.
    cudnn_benchmark         = True,     # torch.backends.cudnn.benchmark.
    allow_tf32              = False,    # TF32 for matmul and convolutions.
    abort_fn                = None,     # Callable: returns True to stop at the next tick.
    progress_fn             = None,     # Callable(cur_kimg, total_kimg) called each tick.
    device                  = None,     # torch.device or string; None = cuda:rank when available, else CPU.
):
    # --- Device, seeds and global switches --------------------------------------------------
    start_time = time.time()
    if device is None:
        device = torch.device('cuda', rank) if torch.cuda.is_available() else torch.device('cpu')
    device = torch.device(device)
    if device.type == 'cuda':
        torch.cuda.set_device(device)
    np.random.seed(random_seed * num_gpus + rank)
    torch.manual_seed(random_seed * num_gpus + rank)
    torch.backends.cudnn.benchmark = cudnn_benchmark
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32
    conv2d_gradfix.enabled = True
    grid_sample_gradfix.enabled = True
    is_main = rank == 0
    say = print if is_main else (lambda *args, **kwargs: None)

    if batch_size % (batch_gpu * num_gpus) != 0:
        raise TrainingError(f'batch_size={batch_size} must be a multiple of batch_gpu*num_gpus={batch_gpu * num_gpus}')
    batch_per_process = batch_size // num_gpus
    num_rounds = batch_per_process // batch_gpu

    G_kwargs = copy.deepcopy(dnnlib.EasyDict(G_kwargs))
    D_kwargs = copy.deepcopy(dnnlib.EasyDict(D_kwargs))
    if device.type != 'cuda':
        # fp16 only pays off (and only works reliably) on CUDA.
        G_kwargs.setdefault('synthesis_kwargs', dnnlib.EasyDict())['num_fp16_res'] = 0
        D_kwargs['num_fp16_res'] = 0

    # --- Data -------------------------------------------------------------------------------
    training_set = dnnlib.util.construct_class_by_name(**training_set_kwargs)
    c_dim = training_set.label_dim
    # Labels for generated images are drawn from the dataset's label distribution; a table on the
    # device turns that into one indexing op per minibatch.
    label_table = np.stack([training_set.get_label(i) for i in range(len(training_set))]).astype(np.float32)
    label_table = torch.from_numpy(label_table.reshape(len(training_set), c_dim)).to(device)
    say(f'Dataset: {len(training_set)} images of shape {training_set.image_shape}, labels {training_set.label_shape}')

    # --- Networks ---------------------------------------------------------------------------
    common_kwargs = dict(c_dim=training_set.label_dim, img_resolution=training_set.resolution, img_channels=training_set.num_channels)
    G = dnnlib.util.construct_class_by_name(**G_kwargs, **common_kwargs).train().requires_grad_(False).to(device)
    D = dnnlib.util.construct_class_by_name(**D_kwargs, **common_kwargs).train().requires_grad_(False).to(device)
    G_ema = copy.deepcopy(G).eval()

    augment_pipe = None
    ada_stats = None
    if augment_kwargs is not None and (augment_p > 0 or ada_target is not None):
        augment_pipe = dnnlib.util.construct_class_by_name(**augment_kwargs).train().requires_grad_(False).to(device)
        if hasattr(augment_pipe, 'p'):
            augment_pipe.p.copy_(torch.as_tensor(augment_p))
            if ada_target is not None:
                # keep_previous=False: an update with no new values must not recount the old window.
                ada_stats = training_stats.Collector(regex='Loss/signs/real', keep_previous=False)

    loss = dnnlib.util.construct_class_by_name(device=device, G_mapping=G.mapping, G_synthesis=G.synthesis, D=D,
                                               augment_pipe=augment_pipe, **loss_kwargs)
    extras = dict(loss.extra_modules())
    for module in extras.values():
        module.to(device).train().requires_grad_(False)
    if extras and not loss.snapshot_key:
        raise TrainingError(f'{type(loss).__name__} has extra modules but no snapshot_key to save them under')

    # --- Resume: networks -------------------------------------------------------------------
    state = None
    if resume_state is not None:
        state, resume_pkl_for_state = load_training_state(resume_state)
        say(f'Resuming exactly from "{resume_state}" (kimg {state["cur_nimg"] / 1000:.1f}, tick {state["cur_tick"]})')
        resume_sources = [resume_pkl_for_state]
    elif resume_pkl is not None:
        say(f'Resuming networks from "{resume_pkl}"')
        resume_sources = [resume_pkl] if is_main else []
    else:
        resume_sources = []
    for source in resume_sources:
        import legacy  # networks-only dependency, imported when needed
        with dnnlib.util.open_url(source) as f:
            resume_data = legacy.load_network_pkl(f)
        for name, module in [('G', G), ('D', D), ('G_ema', G_ema)]:
            _copy_resumed_weights(resume_data[name], module, name)
        if state is not None and augment_pipe is not None and resume_data.get('augment_pipe') is not None:
            misc.copy_params_and_buffers(resume_data['augment_pipe'], augment_pipe, require_all=False)
        if extras and loss.snapshot_key in resume_data:
            _load_extra_module_states(extras, resume_data[loss.snapshot_key], source)
        del resume_data

    if num_gpus > 1:
        _broadcast_from_rank0([G, D, G_ema] + ([augment_pipe] if augment_pipe is not None else []) + list(extras.values()))

    if is_main:
        # Eval mode so the summary pass does not move G's w_avg (that would break exact resume).
        z = torch.zeros([batch_gpu, G.z_dim], device=device)
        c = torch.zeros([batch_gpu, c_dim], device=device)
        G.eval()
        img = misc.print_module_summary(G, [z, c])
        G.train()
        misc.print_module_summary(D, [img, c])

    # --- Optimisers and phases --------------------------------------------------------------
    plan = loss.phase_plan(G_reg_interval, D_reg_interval)
    if not plan:
        raise TrainingError(f'{type(loss).__name__}.phase_plan() returned no phases')
    trainables = {'G': [G], 'D': [D]}
    if loss.extra_modules_train_with not in trainables:
        raise TrainingError(f'extra_modules_train_with must be "G" or "D", not {loss.extra_modules_train_with!r}')
    trainables[loss.extra_modules_train_with] += list(extras.values())
    lazy_intervals = {'G': G_reg_interval, 'D': D_reg_interval}
    optimizers = {}
    for network, opt_kwargs in (('G', G_opt_kwargs), ('D', D_opt_kwargs)):
        opt_kwargs = dnnlib.EasyDict(copy.deepcopy(opt_kwargs))
        interval = lazy_intervals[network]
        if interval is not None and any(p.network == network and p.interval > 1 for p in plan):
            # Lazy regularisation: the regulariser runs every `interval` steps with gain `interval`,
            # so the optimiser's lr and momentum are rescaled to keep the same effective schedule.
            ratio = interval / (interval + 1)
            opt_kwargs.lr = opt_kwargs.lr * ratio
            opt_kwargs.betas = [beta ** ratio for beta in opt_kwargs.betas]
        params = [p for module in trainables[network] for p in module.parameters()]
        optimizers[network] = dnnlib.util.construct_class_by_name(params, **opt_kwargs)
    phases = []
    for spec in plan:
        if spec.network not in optimizers:
            raise TrainingError(f'Phase {spec.name} names network {spec.network!r}; use "G" or "D"')
        phases.append(dnnlib.EasyDict(name=spec.name, interval=int(spec.interval), opt=optimizers[spec.network],
                                      modules=trainables[spec.network],
                                      params=[p for m in trainables[spec.network] for p in m.parameters()],
                                      timer=_PhaseTimer(device)))

    # --- Resume: training state -------------------------------------------------------------
    cur_nimg = 0
    cur_tick = 0
    batch_idx = 0
    ada_window = None  # (count, mean) of sign(D(real)) carried over from before the last snapshot
    if state is not None:
        for network, opt in optimizers.items():
            opt.load_state_dict(state['optimizers'][network])
        cur_nimg = int(state['cur_nimg'])
        cur_tick = int(state['cur_tick'])
        batch_idx = int(state['batch_idx'])
        if augment_pipe is not None and state.get('augment_p') is not None and hasattr(augment_pipe, 'p'):
            augment_pipe.p.copy_(torch.as_tensor(state['augment_p']))
        if state.get('ada_window') is not None:
            ada_window = tuple(state['ada_window'])
        loss_states = state['loss_state']
        loss.load_state_dict(loss_states[rank] if rank < len(loss_states) else loss_states[0])
        if extras:
            _load_extra_module_states(extras, state.get('extra_modules', {}), resume_state)
        if state['num_gpus'] != num_gpus or state['batch_size'] != batch_size:
            say(f'Note: the saved run used {state["num_gpus"]} processes and batch {state["batch_size"]}; '
                f'this one uses {num_gpus} and {batch_size}, so the data order will not continue exactly.')
        if cur_nimg >= total_kimg * 1000:
            raise TrainingError(f'Resumed run is already at {cur_nimg / 1000:.1f} kimg >= --kimg={total_kimg}; raise --kimg to continue training')

    # --- Data loader (continues the index stream after a resume) -----------------------------
    data_loader_kwargs = dict(data_loader_kwargs)
    if device.type != 'cuda':
        data_loader_kwargs.pop('pin_memory', None)
    if not data_loader_kwargs.get('num_workers'):
        data_loader_kwargs.pop('prefetch_factor', None)
    sampler = misc.InfiniteSampler(dataset=training_set, rank=rank, num_replicas=num_gpus, seed=random_seed)
    sampler = _ResumableSampler(sampler, skip=batch_idx * batch_per_process)
    training_iter = iter(torch.utils.data.DataLoader(dataset=training_set, sampler=sampler,
                                                     batch_size=batch_per_process, **data_loader_kwargs))

    # --- Grids --------------------------------------------------------------------------------
    grid_size = grid_latents = grid_labels_dev = None
    if is_main and image_snapshot_ticks is not None:
        grid_size, grid_reals, grid_labels = pick_grid_reals(training_set, random_seed=random_seed)
        write_image_grid(grid_reals, os.path.join(run_dir, 'reals.png'), drange=[0, 255], grid_size=grid_size)
        # A private generator keeps the grid latents fixed across runs and resumes.
        z_generator = torch.Generator().manual_seed(random_seed)
        grid_batch = max(batch_gpu, 8)
        grid_latents = torch.randn([len(grid_reals), G.z_dim], generator=z_generator).to(device).split(grid_batch)
        grid_labels_dev = torch.from_numpy(grid_labels.astype(np.float32)).reshape(len(grid_reals), c_dim).to(device).split(grid_batch)
        write_image_grid(render_grid_fakes(G_ema, grid_latents, grid_labels_dev), os.path.join(run_dir, 'fakes_init.png'),
                        drange=[-1, 1], grid_size=grid_size)

    # --- Reporting ----------------------------------------------------------------------------
    tick_stats = training_stats.Collector(regex='.*')
    metric_values = dict()
    jsonl_file = None
    tb_writer = None
    if is_main:
        jsonl_file = open(os.path.join(run_dir, 'stats.jsonl'), 'at')
        try:
            import torch.utils.tensorboard as tensorboard
            tb_writer = tensorboard.SummaryWriter(run_dir)
        except ImportError:
            say('TensorBoard is not installed; skipping events files (pip install tensorboard to get them).')

    # --- Train --------------------------------------------------------------------------------
    say(f'Phases: {", ".join(f"{p.name}/{p.interval}" for p in phases)}; training until {total_kimg} kimg.')
    if state is not None:
        saved_rng = state['rng']
        _restore_rng(saved_rng[rank] if rank < len(saved_rng) else saved_rng[0], device)
    del state
    tick_first_nimg = cur_nimg
    tick_start_time = time.time()
    maintenance_sec = tick_start_time - start_time
    last_snapshot = None
    if progress_fn is not None:
        progress_fn(cur_nimg // 1000, total_kimg)

    while True:
        # Fetch one minibatch: reals from the loader, latents and labels for every phase.
        with torch.autograd.profiler.record_function('data_fetch'):
            real_img, real_c = next(training_iter)
            real_img = (real_img.to(device).to(torch.float32) / 127.5 - 1).split(batch_gpu)
            real_c = real_c.to(device).to(torch.float32).reshape(batch_per_process, c_dim).split(batch_gpu)
            latents_by_phase = torch.randn([len(phases), batch_per_process, G.z_dim], device=device)
            label_idx = torch.from_numpy(np.random.randint(len(training_set), size=len(phases) * batch_per_process)).to(device)
            labels_by_phase = label_table[label_idx].reshape(len(phases), batch_per_process, c_dim)

        loss.begin_minibatch(batch_idx)
        for phase, phase_z, phase_c in zip(phases, latents_by_phase, labels_by_phase):
            if batch_idx % phase.interval != 0:
                continue
            phase.timer.begin()
            phase.opt.zero_grad(set_to_none=True)
            for module in phase.modules:
                module.requires_grad_(True)
            # Dividing the gain by the number of rounds makes --batch-gpu pure gradient accumulation.
            gain = phase.interval / num_rounds
            for round_img, round_c, round_z, round_gen_c in zip(real_img, real_c, phase_z.split(batch_gpu),
                                                                phase_c.split(batch_gpu)):
                loss.accumulate_gradients(phase=phase.name, real_img=round_img, real_c=round_c, gen_z=round_z,
                                          gen_c=round_gen_c, gain=gain)
            for module in phase.modules:
                module.requires_grad_(False)
            with torch.autograd.profiler.record_function(phase.name + '_opt'):
                _average_and_clean_gradients(phase.params, num_gpus)
                phase.opt.step()
            phase.timer.finish()

        # G EMA: half-life of ema_kimg, optionally ramped up over the first images.
        with torch.autograd.profiler.record_function('Gema'):
            ema_nimg = ema_kimg * 1000
            if ema_rampup is not None:
                ema_nimg = min(ema_nimg, cur_nimg * ema_rampup)
            ema_keep = 0.5 ** (batch_size / max(ema_nimg, 1e-8))
            with torch.no_grad():
                for p_ema, p in zip(G_ema.parameters(), G.parameters()):
                    p_ema.lerp_(p, 1 - ema_keep)
                for b_ema, b in zip(G_ema.buffers(), G.buffers()):
                    b_ema.copy_(b)

        cur_nimg += batch_size
        batch_idx += 1

        # Stop on NaN/inf before anything else sees the poisoned weights.
        bad_phase = loss.first_nonfinite_phase()
        if num_gpus > 1:
            names = [p.name for p in phases]
            code = torch.tensor([names.index(bad_phase) + 1 if bad_phase in names else 0], device=device)
            torch.distributed.all_reduce(code, op=torch.distributed.ReduceOp.MAX)
            bad_phase = names[int(code) - 1] if int(code) > 0 else None
        if bad_phase is not None:
            kept = f'last good snapshot: {last_snapshot}' if last_snapshot else 'no snapshot was written yet'
            raise TrainingDiverged(f'Loss became NaN/inf in phase {bad_phase} at kimg {(cur_nimg - batch_size) / 1000:.3f}; '
                                   f'training stopped ({kept}). Try a lower learning rate, a larger --gamma or --fp32.')

        # ADA: nudge p towards the target sign of D(real).
        if ada_stats is not None and batch_idx % ada_interval == 0:
            ada_stats.update()
            ada_window = _merge_window(ada_window, ada_stats.num('Loss/signs/real'), ada_stats.mean('Loss/signs/real'))
            if ada_window is not None:
                step = np.sign(ada_window[1] - ada_target) * (batch_size * ada_interval) / (ada_kimg * 1000)
                augment_pipe.p.copy_((augment_pipe.p + step).clamp(min=0))
            ada_window = None

        # Tick bookkeeping.
        done = cur_nimg >= total_kimg * 1000
        if not done and cur_tick != 0 and cur_nimg < tick_first_nimg + kimg_per_tick * 1000:
            continue

        tick_end_time = time.time()
        with _rng_untouched(device) as rng_at_tick:
            # Everything below runs with the RNG state saved/restored, so it cannot change training.
            for phase in phases:
                elapsed = phase.timer.elapsed_ms()
                if elapsed is not None:
                    training_stats.report0('Timing/' + phase.name, elapsed)
            tick_sec = tick_end_time - tick_start_time
            tick_kimg = (cur_nimg - tick_first_nimg) / 1000
            sec_per_kimg = tick_sec / max(tick_kimg, 1e-8)
            cpu_mem_gb = psutil.Process(os.getpid()).memory_info().rss / 2**30
            gpu_mem_gb = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == 'cuda' else 0.0
            augment_value = float(augment_pipe.p.cpu()) if augment_pipe is not None and hasattr(augment_pipe, 'p') else 0.0
            training_stats.report0('Progress/tick', cur_tick)
            training_stats.report0('Progress/kimg', cur_nimg / 1000)
            training_stats.report0('Progress/augment', augment_value)
            training_stats.report0('Timing/total_sec', tick_end_time - start_time)
            training_stats.report0('Timing/sec_per_tick', tick_sec)
            training_stats.report0('Timing/sec_per_kimg', sec_per_kimg)
            training_stats.report0('Timing/maintenance_sec', maintenance_sec)
            training_stats.report0('Timing/total_hours', (tick_end_time - start_time) / 3600)
            training_stats.report0('Timing/total_days', (tick_end_time - start_time) / 86400)
            training_stats.report0('Resources/cpu_mem_gb', cpu_mem_gb)
            training_stats.report0('Resources/peak_gpu_mem_gb', gpu_mem_gb)
            if device.type == 'cuda':
                training_stats.report0('Resources/peak_gpu_mem_reserved_gb', torch.cuda.max_memory_reserved(device) / 2**30)
                torch.cuda.reset_peak_memory_stats(device)
            tick_stats.update()
            stats_dict = tick_stats.as_dict()

            eta_sec = max(total_kimg * 1000 - cur_nimg, 0) / 1000 * sec_per_kimg
            say(format_tick_line(cur_tick, cur_nimg, tick_end_time - start_time, tick_sec, sec_per_kimg, eta_sec,
                                 maintenance_sec, cpu_mem_gb, gpu_mem_gb, augment_value,
                                 *(tick_stats[name] if tick_stats.num(name) else None for name in ('Loss/G/loss', 'Loss/D/loss'))))

            if abort_fn is not None and not done and abort_fn():
                done = True
                say('abort_fn asked to stop; finishing this tick.')

            # Image snapshot.
            if is_main and image_snapshot_ticks is not None and (done or cur_tick % image_snapshot_ticks == 0):
                images = render_grid_fakes(G_ema, grid_latents, grid_labels_dev)
                write_image_grid(images, os.path.join(run_dir, f'fakes{cur_nimg // 1000:06d}.png'), drange=[-1, 1], grid_size=grid_size)
                loss.write_snapshot_images(G_ema, run_dir, cur_nimg)

            # Network snapshot and training state.
            snapshot = None
            snapshot_pkl = None
            if network_snapshot_ticks is not None and (done or cur_tick % network_snapshot_ticks == 0):
                snapshot = dict(training_set_kwargs=dict(training_set_kwargs))
                for name, module in [('G', G), ('D', D), ('G_ema', G_ema), ('augment_pipe', augment_pipe)]:
                    if module is not None:
                        if num_gpus > 1:
                            misc.check_ddp_consistency(module, ignore_regex=r'.*\.[^.]+_(avg|ema)')
                        module = copy.deepcopy(module).eval().requires_grad_(False).cpu()
                    snapshot[name] = module
                extras_cpu = {name: _module_state_cpu(m) for name, m in extras.items()}
                if extras:
                    snapshot[loss.snapshot_key] = extras_cpu

                # Fold the ADA statistics gathered so far into the carried window, so a resume
                # continues the same p update.
                if ada_stats is not None:
                    ada_stats.update()
                    ada_window = _merge_window(ada_window, ada_stats.num('Loss/signs/real'), ada_stats.mean('Loss/signs/real'))
                all_rng = _gather_from_all(rng_at_tick, num_gpus)
                all_loss_states = _gather_from_all(loss.state_dict(), num_gpus)
                snapshot_pkl = os.path.join(run_dir, snapshot_name(cur_nimg))
                if is_main:
                    training_state = {
                        'format': TRAINING_STATE_FORMAT,
                        'snapshot_pkl': os.path.basename(snapshot_pkl),
                        'cur_nimg': cur_nimg,
                        'cur_tick': cur_tick + 1,  # the tick that starts after this one
                        'batch_idx': batch_idx,
                        'num_gpus': num_gpus,
                        'batch_size': batch_size,
                        'optimizers': {network: opt.state_dict() for network, opt in optimizers.items()},
                        'augment_p': augment_value if augment_pipe is not None else None,
                        'ada_window': list(ada_window) if ada_window is not None else None,
                        'loss_class': f'{type(loss).__module__}.{type(loss).__qualname__}',
                        'loss_state': all_loss_states,
                        'extra_modules': extras_cpu,
                        'rng': all_rng,
                    }
                    _write_atomically(snapshot_pkl, lambda f: pickle.dump(snapshot, f))
                    _write_atomically(os.path.join(run_dir, training_state_name(cur_nimg)),
                                      lambda f: torch.save(training_state, f))
                last_snapshot = snapshot_pkl

            # Metrics.
            if snapshot is not None and len(metrics) > 0:
                from metrics import metric_main  # heavy import, only when metrics are requested
                for metric in metrics:
                    result = metric_main.calc_metric(metric=metric, G=snapshot['G_ema'], dataset_kwargs=training_set_kwargs,
                                                     num_gpus=num_gpus, rank=rank, device=device)
                    if is_main:
                        metric_main.report_metric(result, run_dir=run_dir, snapshot_pkl=snapshot_pkl)
                    metric_values.update(result.results)
            del snapshot

            # Stats files.
            timestamp = time.time()
            if jsonl_file is not None:
                record = {**stats_dict, 'timestamp': timestamp}
                jsonl_file.write(json.dumps(record) + '\n')
                jsonl_file.flush()
            if tb_writer is not None:
                step_kimg = cur_nimg // 1000
                scalars = [(name, value.mean) for name, value in stats_dict.items()]
                scalars += [(f'Metrics/{name}', value) for name, value in metric_values.items()]
                for name, value in scalars:
                    tb_writer.add_scalar(name, value, global_step=step_kimg, walltime=timestamp - start_time)
                tb_writer.flush()
            if progress_fn is not None:
                progress_fn(cur_nimg // 1000, total_kimg)

        cur_tick += 1
        tick_first_nimg = cur_nimg
        tick_start_time = time.time()
        maintenance_sec = tick_start_time - tick_end_time
        if done:
            break

    if jsonl_file is not None:
        jsonl_file.close()
    if tb_writer is not None:
        tb_writer.close()
    say(f'Finished at {cur_nimg / 1000:.1f} kimg.')
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
