"""Train a StyleGAN2-ADA model (with optional few-shot loss plug-ins): turns options into a config and launches the training loop."""

import json
import math
import os
import re
import sys
import tempfile
from typing import NamedTuple, Optional

import click
import torch

import dnnlib
import dnnlib.cli
import stylegan2_ada_mixdl
from stylegan2_ada_mixdl import demo_data
from training import plugins as training_plugins
from training import training_loop as training_loop_module

REPO_DIR = os.path.dirname(os.path.abspath(__file__))

#----------------------------------------------------------------------------
# Presets.

class BaseConfig(NamedTuple):
    """One --cfg preset: StyleGAN2-ADA's table, plus fewshot (the MixDL authors' sizes). None in auto = derived."""
    ref_gpus: Optional[int]      # GPUs the batch was tuned for; fewer GPUs accumulate gradients
    kimg: int                    # training length
    batch: Optional[int]         # images per minibatch, all GPUs together
    mbstd_group: Optional[int]   # minibatch-stddev group size
    fmaps: Optional[float]       # channel_base = fmaps * 32768
    lr: Optional[float]          # Adam learning rate for G and D
    gamma: Optional[float]       # R1 weight
    ema_kimg: Optional[float]    # G EMA half-life
    ema_rampup: Optional[float]  # EMA ramp-up factor, None = off
    map_layers: int              # mapping network depth


BASE_CONFIGS = {
    'auto':      BaseConfig(None, 25000,  None, None, None, None,   None, None, 0.05, 2),
    'stylegan2': BaseConfig(8,    25000,  32,   4,    1,    0.002,  10,   10,   None, 8),
    'paper256':  BaseConfig(8,    25000,  64,   8,    0.5,  0.0025, 1,    20,   None, 8),
    'paper512':  BaseConfig(8,    25000,  64,   8,    1,    0.0025, 0.5,  20,   None, 8),
    'paper1024': BaseConfig(8,    25000,  32,   4,    1,    0.002,  2,    10,   None, 8),
    'cifar':     BaseConfig(2,    100000, 64,   32,   1,    0.0025, 0.01, 500,  0.05, 2),
    # The MixDL authors' schedule and sizes: one GPU, batch 4, lr 0.002, gamma 10, full widths, EMA
    # decay 0.5^(32/10000) per minibatch of 4 (a 1.25 kimg half-life), 150k minibatches = 600 kimg.
    # Unlike the authors' setup it keeps ADA and fp16 on CUDA; docs/MIXDL.md lists the options that match theirs.
    'fewshot':   BaseConfig(1,    600,    4,    4,    1,    0.002,  10,   1.25, None, 8),
}


def _auto_config(resolution, gpus):
    """The 'auto' rules: batch, widths, lr, gamma and EMA derived from resolution and GPU count."""
    batch = max(min(gpus * min(4096 // resolution, 32), 64), gpus)
    return BASE_CONFIGS['auto']._replace(
        ref_gpus=gpus, batch=batch, mbstd_group=min(batch // gpus, 4),
        fmaps=1 if resolution >= 512 else 0.5, lr=0.002 if resolution >= 1024 else 0.0025,
        gamma=0.0002 * resolution ** 2 / batch, ema_kimg=batch * 10 / 32)


AUGPIPE_NAMES = ['blit', 'geom', 'color', 'filter', 'noise', 'cutout', 'bg', 'bgc', 'bgcf', 'bgcfn', 'bgcfnc']

RESUME_SHORTCUTS = {
    'ffhq256':     'https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/transfer-learning-source-nets/ffhq-res256-mirror-paper256-noaug.pkl',
    'ffhq512':     'https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/transfer-learning-source-nets/ffhq-res512-mirror-stylegan2-noaug.pkl',
    'ffhq1024':    'https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/transfer-learning-source-nets/ffhq-res1024-mirror-stylegan2-noaug.pkl',
    'celebahq256': 'https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/transfer-learning-source-nets/celebahq-res256-mirror-paper256-kimg100000-ada-target0.5.pkl',
    'lsundog256':  'https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/transfer-learning-source-nets/lsundog-res256-paper256-kimg100000-noaug.pkl',
}

# Without --data we train on a bundled set (data/demo/ in a checkout): 32 px on CPU, 64 px on CUDA.
DEMO_DATA = {'cpu': os.path.join('data', 'demo', 'emoji16-32.zip'), 'cuda': os.path.join('data', 'demo', 'emoji16-64.zip')}
# Demo settings per device kind, applied only to options the user did not give (docs/TRAINING.md
# explains the sizes: on 2 CPU cores the fakes should look like the emoji after about ten minutes).
DEMO_SETTINGS = {
    'cpu':  dict(cfg='fewshot', kimg=15, batch=8, cbase=1024, cmax=128, gamma=1, aug='noaug', tick=1, snap=5),
    'cuda': dict(cfg='fewshot', kimg=10, tick=1, snap=5),
}

# Loss plug-ins that add options to this command: the list of dotted class names kept in the
# package of few-shot methods (docs/PLUGINS.md). Each declares its options as data (`options`).
LOSS_PLUGINS = stylegan2_ada_mixdl.LOSS_PLUGINS

#----------------------------------------------------------------------------

class _Finite:
    """Mixin for click's float types: NaN and +-inf are refused (click's own float types accept them), then an
    optional `check(value)` (a plug-in option's own rule) runs; each failure names the option."""

    def __init__(self, *args, check=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.check = check

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f'{value!r} is not a finite number; give an ordinary number such as 1 or 0.5', param, ctx)
        if self.check is not None:
            try:
                number = self.check(number)
            except training_plugins.PluginConfigError as err:
                self.fail(str(err), param, ctx)
        return number


class FiniteFloat(_Finite, click.types.FloatParamType):
    """A float option that must be finite."""


class FiniteFloatRange(_Finite, click.FloatRange):
    """A bounded float option that must be finite (--help shows the bound as click.FloatRange does)."""


def _metric_list(ctx, param, value):
    """click callback: 'a,b' -> ['a', 'b']; 'none' or '' -> []."""
    del ctx, param
    if isinstance(value, (list, tuple)):
        return list(value)
    names = [item.strip() for item in (value or '').split(',')]
    return [name for name in names if name and name.lower() != 'none']


GRID_MAX_SIDE = 64


def _grid_option(ctx, param, value):
    """click callback: 'WxH' -> (W, H) cells of the reals/fakes grids; None stays None (chosen later)."""
    del ctx
    if value is None or isinstance(value, tuple):
        return value
    parts = value.lower().split('x')
    if len(parts) != 2 or not all(part.strip().isdigit() for part in parts):
        raise click.BadParameter(f'{value!r} is not WIDTHxHEIGHT; write e.g. --grid=8x4 (columns x rows)', param=param)
    size = tuple(int(part) for part in parts)
    if not all(1 <= side <= GRID_MAX_SIDE for side in size):
        raise click.BadParameter(f'{value!r}: columns and rows must be 1 to {GRID_MAX_SIDE}', param=param)
    return size


def _loss_plugin_classes():
    return training_plugins.load_plugins(LOSS_PLUGINS)


def _fail(message):
    raise click.UsageError(message)


def _default_workers():
    # Upstream's three loaders, but no more than the cores this process may use: beyond that torch
    # warns on every run and the loaders only steal time from training.
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return min(3, cores)


def _next_run_dir(outdir, desc):
    taken = [re.match(r'^(\d+)', name) for name in (os.listdir(outdir) if os.path.isdir(outdir) else [])]
    next_id = max((int(m.group(1)) for m in taken if m), default=-1) + 1
    return os.path.join(outdir, f'{next_id:05d}-{desc}')


def _torchrun_env():
    """(rank, world_size, local_rank) when launched by torchrun (or any env:// launcher), else None."""
    names = ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR')
    if not all(name in os.environ for name in names):
        return None
    return int(os.environ['RANK']), int(os.environ['WORLD_SIZE']), int(os.environ['LOCAL_RANK'])


def _given(ctx, name):
    """True when the user passed this option (rather than getting its default)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ('DEFAULT', 'DEFAULT_MAP')

#----------------------------------------------------------------------------
# Device and precision. Decided here and nowhere else: the training loop runs on the device, with
# the layer precisions and loader settings, that the config hands it.

CUDA_INSTALL_HINT = 'install a CUDA build of torch (https://pytorch.org/get-started/locally/)'


def probe_training_ops(device):
    """Run a tiny G, D and R1 step (fp32, reference ops, grid sampling) on `device`; raises what the device cannot do."""
    from torch_utils.ops import conv2d_gradfix, grid_sample_gradfix
    from training import networks
    saved = conv2d_gradfix.enabled, grid_sample_gradfix.enabled
    conv2d_gradfix.enabled = grid_sample_gradfix.enabled = True  # as in training: double backward through both
    try:
        sizes = dict(c_dim=0, img_resolution=8, img_channels=3)
        G = networks.Generator(z_dim=4, w_dim=4, mapping_kwargs=dict(num_layers=1),
                               synthesis_kwargs=dict(channel_base=32, channel_max=4), **sizes).to(device)
        D = networks.Discriminator(channel_base=32, channel_max=4, epilogue_kwargs=dict(mbstd_group_size=2), **sizes).to(device)
        c = torch.zeros([2, 0], device=device)
        fakes = G(torch.randn([2, 4], device=device), c)
        shifted = grid_sample_gradfix.grid_sample(fakes, torch.rand([2, 8, 8, 2], device=device) * 2 - 1)
        reals = shifted.detach().requires_grad_(True)
        (r1_grad,) = torch.autograd.grad(D(reals, c).sum(), reals, create_graph=True)
        (D(shifted, c).sum() + r1_grad.square().sum()).backward()
    finally:
        conv2d_gradfix.enabled, grid_sample_gradfix.enabled = saved


def mps_problem():
    """None when training can run on Apple's MPS device, else a phrase saying why not."""
    mps = getattr(torch.backends, 'mps', None)
    if mps is None or not mps.is_built():
        return 'this PyTorch has no MPS support (MPS needs an Apple-silicon Mac with the macOS build of torch)'
    if not mps.is_available():
        return 'this PyTorch supports MPS, but the machine offers no MPS device (MPS needs macOS 12.3 or newer on Apple silicon)'
    try:
        probe_training_ops(torch.device('mps'))
    except (RuntimeError, NotImplementedError, TypeError) as err:
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        return f'a test training step in fp32 with the reference ops failed on MPS ({first_line})'
    return None


def choose_device_type(device, gpus_given=None):
    """'cuda', 'mps' or 'cpu' for --device; a one-line usage error when that device cannot train here.

    gpus_given: the --gpus value when the user typed it, else None. Asking for GPUs from a torch that
    sees none stops the run instead of quietly starting that many CPU processes.
    """
    has_cuda = torch.cuda.is_available()
    if device == 'cuda' and not has_cuda:
        _fail(f'--device=cuda, but PyTorch sees no CUDA device; {CUDA_INSTALL_HINT}, or use --device=cpu')
    if device == 'auto' and gpus_given is not None and not has_cuda:
        _fail(f'--gpus={gpus_given}, but PyTorch {torch.__version__} sees no CUDA device; {CUDA_INSTALL_HINT}, '
              f'or add --device=cpu to run {gpus_given} CPU process(es) on purpose')
    if device == 'mps':
        problem = mps_problem()
        if problem is not None:
            _fail(f'--device=mps: {problem}; use --device=cpu')
    if device == 'auto':
        return 'cuda' if has_cuda else 'cpu'
    return device


def process_device(device_type, local_rank):
    """The torch.device of one training process (its own GPU on CUDA), made current for CUDA calls."""
    device = torch.device('cuda', local_rank) if device_type == 'cuda' else torch.device(device_type)
    if device.type == 'cuda':
        torch.cuda.set_device(device)
    return device


def apply_precision(G_kwargs, D_kwargs, device_type, fp32=False):
    """Edit G/D kwargs in place: fp16 layers only on CUDA and without --fp32; --fp32 also drops the conv clamp."""
    synthesis = G_kwargs.setdefault('synthesis_kwargs', dnnlib.EasyDict())
    if fp32 or device_type != 'cuda':
        # Mixed precision is a CUDA feature; on CPU and MPS every layer runs in fp32.
        synthesis['num_fp16_res'] = D_kwargs['num_fp16_res'] = 0
    if fp32:
        synthesis['conv_clamp'] = D_kwargs['conv_clamp'] = None


def _precision_section(opts, cfg, device_type):
    """Layer precision and data-loader settings for the device: fp16 layers and pinned memory on CUDA only."""
    apply_precision(cfg.G_kwargs, cfg.D_kwargs, device_type, fp32=opts.fp32)
    synthesis = cfg.G_kwargs.synthesis_kwargs
    if opts.nhwc:
        synthesis.fp16_channels_last = cfg.D_kwargs.block_kwargs.fp16_channels_last = True
    cfg.data_loader_kwargs.pin_memory = device_type == 'cuda'
    if opts.workers == 0:
        del cfg.data_loader_kwargs['prefetch_factor']  # only meaningful with loader processes
    if opts.nobench:
        cfg.cudnn_benchmark = False
    if opts.allow_tf32:
        cfg.allow_tf32 = True
    if opts.cuda_graphs:
        if device_type != 'cuda':
            _fail(f'--cuda-graphs=1 needs a CUDA device (this run uses {device_type}); leave --cuda-graphs off')
        cfg.cuda_graphs = True
    cfg.device = device_type

#----------------------------------------------------------------------------
# Options -> config. Each section reads `opts`, fills `cfg` (the training_loop kwargs) and returns
# its part of the run-directory name, in upstream's order.

def _devices_section(opts, cfg, launch, given):
    launch.device_type = choose_device_type(opts.device, opts.gpus if given('gpus') else None)
    launch.torchrun = _torchrun_env()
    processes = opts.gpus
    if launch.torchrun is not None:
        world_size = launch.torchrun[1]
        if given('gpus') and processes != world_size:
            _fail(f'--gpus={processes} disagrees with torchrun WORLD_SIZE={world_size}; drop --gpus under torchrun')
        processes = world_size
    elif processes < 1 or processes & (processes - 1):
        _fail(f'--gpus={processes} is not a power of two; use 1, 2, 4 or 8')
    elif launch.device_type == 'cuda' and processes > torch.cuda.device_count():
        _fail(f'--gpus={processes}, but only {torch.cuda.device_count()} CUDA device(s) are visible')
    elif launch.device_type == 'mps' and processes != 1:
        _fail(f'--gpus={processes} with --device=mps: a Mac has one MPS device; use --gpus=1')
    if opts.ops == 'cuda' and launch.device_type != 'cuda':
        _fail(f'--ops=cuda needs a CUDA device; use --ops=auto or --ops=ref on {launch.device_type.upper()}')
    launch.ops = opts.ops
    cfg.num_gpus = processes


def _apply_demo_defaults(opts, launch, given):
    kind = 'cuda' if launch.device_type == 'cuda' else 'cpu'  # MPS: the small CPU demo
    demo_path = demo_data.demo_dataset_path(os.path.basename(DEMO_DATA[kind]))
    if demo_path is None:
        _fail(f'--data is missing and so is the bundled demo set {DEMO_DATA[kind]}; pass --data=<zip or folder>')
    opts.data = demo_path
    settings = DEMO_SETTINGS[kind]
    filled = []
    for key, value in settings.items():
        if not given(key):
            opts[key] = value
            filled.append(f'--{key}={value}')
    launch.demo_note = (f'No --data given: training on the bundled demo set {DEMO_DATA[kind]} with '
                        f'{" ".join(filled) or "your options"}; pass --data=<zip or folder> for your own images.')


def _dataset_section(opts, cfg, launch):
    cfg.training_set_kwargs = dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=opts.data,
                                              use_labels=True, max_size=None, xflip=False)
    cfg.data_loader_kwargs = dnnlib.EasyDict(pin_memory=True, num_workers=opts.workers, prefetch_factor=2)
    try:
        dataset = dnnlib.util.construct_class_by_name(**cfg.training_set_kwargs)
    except (OSError, ValueError) as err:
        _fail(f'--data: {err}')
    data = cfg.training_set_kwargs
    data.resolution = dataset.resolution
    data.use_labels = dataset.has_labels
    data.max_size = len(dataset)
    launch.data_channels, launch.data_label_dim = dataset.num_channels, dataset.label_dim
    parts = [dataset.name]

    if opts.cond:
        if not dataset.has_labels:
            _fail('--cond=True requires labels specified in dataset.json')
        parts.append('-cond')
    else:
        data.use_labels = False
    if opts.subset is not None:
        if not 1 <= opts.subset <= len(dataset):
            _fail(f'--subset={opts.subset} is out of range; the dataset has {len(dataset)} images')
        parts.append(f'-subset{opts.subset}')
        if opts.subset < len(dataset):
            data.max_size = opts.subset
            data.random_seed = opts.seed
    if opts.mirror:
        parts.append('-mirror')
    # fewshot trains with x-flips unless --mirror=0 says otherwise.
    data.xflip = bool(opts.mirror) if opts.mirror is not None else opts.cfg == 'fewshot'
    return ''.join(parts)


def _network_section(opts, cfg, given):
    gpus = cfg.num_gpus
    resolution = cfg.training_set_kwargs.resolution
    base = _auto_config(resolution, gpus) if opts.cfg == 'auto' else BASE_CONFIGS[opts.cfg]
    parts = [f'-{opts.cfg}' + (f'{gpus:d}' if opts.cfg == 'auto' else '')]

    channel_base = int(base.fmaps * 32768) if opts.cbase is None else opts.cbase
    channel_max = 512 if opts.cmax is None else opts.cmax
    if channel_base < 1 or channel_max < 1:
        _fail('--cbase and --cmax must be positive')
    precision = dict(num_fp16_res=4, conv_clamp=256)
    cfg.G_kwargs = dnnlib.EasyDict(class_name='training.networks.Generator', z_dim=512, w_dim=512,
                                   mapping_kwargs=dnnlib.EasyDict(num_layers=base.map_layers),
                                   synthesis_kwargs=dnnlib.EasyDict(channel_base=channel_base, channel_max=channel_max, **precision))
    cfg.D_kwargs = dnnlib.EasyDict(class_name='training.networks.Discriminator', block_kwargs=dnnlib.EasyDict(),
                                   mapping_kwargs=dnnlib.EasyDict(),
                                   epilogue_kwargs=dnnlib.EasyDict(mbstd_group_size=base.mbstd_group),
                                   channel_base=channel_base, channel_max=channel_max, **precision)
    for name in ('G_opt_kwargs', 'D_opt_kwargs'):
        cfg[name] = dnnlib.EasyDict(class_name='torch.optim.Adam', lr=base.lr, betas=[0, 0.99], eps=1e-8)
    cfg.loss_kwargs = dnnlib.EasyDict(class_name='training.loss.StyleGAN2Loss', r1_gamma=base.gamma)
    cfg.total_kimg = base.kimg
    cfg.batch_size = base.batch
    cfg.batch_gpu = base.batch // base.ref_gpus
    cfg.ema_kimg = base.ema_kimg
    cfg.ema_rampup = base.ema_rampup
    if opts.cfg == 'cifar':
        cfg.loss_kwargs.update(pl_weight=0, style_mixing_prob=0)
        cfg.D_kwargs.architecture = 'orig'

    if opts.gamma is not None:
        if opts.gamma < 0:
            _fail(f'--gamma={opts.gamma:g} is negative; R1 gamma must be 0 or more')
        parts.append(f'-gamma{opts.gamma:g}')
        cfg.loss_kwargs.r1_gamma = opts.gamma
    if opts.kimg is not None:
        if opts.kimg < 1:
            _fail(f'--kimg={opts.kimg} is too small; train for at least 1 kimg')
        parts.append(f'-kimg{opts.kimg:d}')
        cfg.total_kimg = opts.kimg
    if opts.batch is not None:
        if opts.batch < 1 or opts.batch % gpus:
            _fail(f'--batch={opts.batch} is not divisible by --gpus={gpus}; use a positive multiple of --gpus')
        parts.append(f'-batch{opts.batch}')
        cfg.batch_size = opts.batch
        cfg.batch_gpu = opts.batch // gpus
    if cfg.batch_size % gpus:
        _fail(f'--cfg={opts.cfg} has batch {cfg.batch_size}, which {gpus} processes cannot split; set --batch to a multiple of --gpus')
    per_process = cfg.batch_size // gpus
    # Upstream quirk fixed: a fixed cfg on more GPUs than ref_gpus gave zero accumulation rounds.
    cfg.batch_gpu = max(min(cfg.batch_gpu, per_process), 1)
    if opts.batch_gpu is not None:
        if opts.batch_gpu < 1 or per_process % opts.batch_gpu:
            _fail(f'--batch-gpu={opts.batch_gpu} must divide the per-process batch {per_process} (--batch / --gpus)')
        cfg.batch_gpu = opts.batch_gpu
    while per_process % cfg.batch_gpu:
        cfg.batch_gpu -= 1
    return ''.join(parts)


def _augmentation_section(opts, cfg):
    mode = opts.aug or 'ada'
    parts = [f'-{opts.aug}'] if opts.aug is not None else []
    if mode == 'ada':
        cfg.ada_target = 0.6
    elif mode == 'fixed' and opts.p is None:
        _fail('--aug=fixed needs --p=<probability>')
    elif mode == 'diffaug':
        cfg.augment_p = 1.0  # DiffAugment augments every image, as in its paper

    for name, applies_to, setting in (('p', 'fixed', 'augment_p'), ('target', 'ada', 'ada_target')):
        value = opts[name]
        if value is None:
            continue
        if mode != applies_to:
            _fail(f'--{name} only applies to --aug={applies_to}')
        if not 0 <= value <= 1:
            _fail(f'--{name}={value:g} is out of range; use a value in [0, 1]')
        parts.append(f'-{name}{value:g}')
        cfg[setting] = value
    if opts.augpipe is not None:
        if mode in ('noaug', 'diffaug'):
            _fail(f'--augpipe has no effect with --aug={mode}; drop it or use --aug=ada/fixed')
        parts.append(f'-{opts.augpipe}')
    if mode in ('ada', 'fixed'):
        from training import augment
        cfg.augment_kwargs = dnnlib.EasyDict(class_name='training.augment.AugmentPipe', **augment.augpipe_specs[opts.augpipe or 'bgc'])
    elif mode == 'diffaug':
        cfg.augment_kwargs = dnnlib.EasyDict(class_name='training.augment.DiffAugment', policy='color,translation,cutout')
    return ''.join(parts)


def _resume_section(opts, cfg):
    source = opts.resume
    if source is None:
        return ''
    if source == 'noresume':
        return '-noresume'
    if source == 'latest':
        state_path = training_loop_module.find_latest_training_state(opts.outdir)
        if state_path is None:
            _fail(f'--resume=latest found no training-state-*.pt (with its network snapshot) under {opts.outdir}; '
                  f'start without --resume or pass a snapshot pickle')
        cfg.resume_state = state_path
        return '-resumelatest'
    if source.endswith('.pt'):
        if not os.path.isfile(source):
            _fail(f'--resume={source}: no such training-state file')
        cfg.resume_state = source
        return '-resumecustom'
    if source in RESUME_SHORTCUTS:
        cfg.resume_pkl = RESUME_SHORTCUTS[source]
        suffix = f'-resume{source}'
    elif dnnlib.util.is_url(source) or os.path.isfile(source):
        cfg.resume_pkl = source
        suffix = '-resumecustom'
    else:
        _fail(f'--resume={source} is not a file, URL, "latest" or one of: {", ".join(RESUME_SHORTCUTS)}')
    # Network-only resume keeps upstream's transfer-learning settings: faster ADA, no EMA ramp-up.
    cfg.ada_kimg = 100
    cfg.ema_rampup = None
    return suffix


def _check_resume_inputs(cfg, launch):
    """Read what --resume names before any folder is made: a training state (with the check that the snapshot beside
    it is the one it was saved with) or a local pickle, which must fit the data's resolution and channels, the
    labels and the architectures of this config. A URL is fetched and checked when training starts."""
    try:
        if cfg.get('resume_state') is not None:
            _state, pkl = training_loop_module.load_training_state(cfg.resume_state)
        elif cfg.get('resume_pkl') is not None and not dnnlib.util.is_url(cfg.resume_pkl):
            pkl = cfg.resume_pkl
        else:
            return
        saved = training_loop_module.read_snapshot(pkl)
        data = cfg.training_set_kwargs
        common = dict(resolution=data.resolution, channels=launch.data_channels,
                      labels=launch.data_label_dim if data.use_labels else 0)
        expected = dict(G=dict(common, architecture=cfg.G_kwargs.synthesis_kwargs.get('architecture', 'skip')),
                        D=dict(common, architecture=cfg.D_kwargs.get('architecture', 'resnet')))
        training_loop_module.check_resume_fits(saved, expected)
    except training_loop_module.TrainingError as err:
        _fail(str(err))
    except OSError as err:
        _fail(f'--resume: {dnnlib.cli.describe_os_error(err)}')


# Options that a continued run (--resume=latest or a training-state .pt) cannot change: they decide the data, the
# networks' shapes or which modules and optimiser states exist. Plug-in switches and their non-float settings too.
FIXED_ON_RESUME = ('cfg', 'cbase', 'cmax', 'cond', 'subset', 'mirror', 'aug', 'augpipe')


def _fixed_on_resume():
    names = set(FIXED_ON_RESUME)
    for plugin in _loss_plugin_classes():
        names.add(plugin.options.switch)
        names.update(option.name for option in plugin.options.settings if option.type is not float)
    return names


def _plain(value):
    return json.loads(json.dumps(value))  # tuples -> lists, as training_options.json stores them


def _continue_run_options(opts, given):
    """For --resume=latest or a training-state .pt: the options the run was started with (from its own
    training_options.json), with the options given now laid over them. Refuses, before anything is written, options
    given now that would change what cannot change mid-run; names the others. Returns (opts, given)."""
    if opts.resume == 'latest':
        state_path = training_loop_module.find_latest_training_state(opts.outdir)
        if state_path is None:
            _fail(f'--resume=latest found no training-state-*.pt (with its network snapshot) under {opts.outdir}; '
                  f'start without --resume or pass a snapshot pickle')
    else:
        state_path = opts.resume
        if not os.path.isfile(state_path):
            _fail(f'--resume={state_path}: no such training-state file')
    run_dir = os.path.dirname(os.path.abspath(state_path))
    options_path = os.path.join(run_dir, 'training_options.json')
    try:
        with open(options_path, 'rt') as f:
            recorded = json.load(f).get('train_py_options')
    except FileNotFoundError:
        recorded = None
    except (OSError, ValueError, AttributeError) as err:
        _fail(f'--resume={opts.resume}: cannot read {options_path} ({err}); repair it from the run\'s log.txt, '
              f'or delete it to continue with the options given now')
    if not isinstance(recorded, dict):
        print(f'Note: {options_path} does not record train.py options; continuing {run_dir} with the options given now.')
        return opts, given
    then, then_given = recorded['values'], set(recorded['given'])
    fixed = _fixed_on_resume()
    refused, changed = [], []
    for name, value in opts.items():
        if name in ('resume', 'outdir') or name not in then or not given(name):
            continue
        now = os.path.abspath(value) if name == 'data' and value is not None else _plain(value)
        if now == then[name]:
            continue
        flag = '--' + name.replace('_', '-')
        (refused if name in fixed else changed).append(f'{flag}={now} (the run has {then[name]})')
    if refused:
        _fail(f'--resume={opts.resume} continues {run_dir}, whose {", ".join(refused)} cannot change mid-run; '
              f'drop {"this option" if len(refused) == 1 else "these options"}, or start a new run without --resume')
    merged = dnnlib.EasyDict(then)
    merged.update({name: value for name, value in opts.items() if given(name) or name not in then})
    merged.resume, merged.outdir = opts.resume, opts.outdir
    print(f'Continuing {run_dir} with the options it was started with'
          + (f'; changed now: {", ".join(changed)}' if changed else '') + '.')
    return merged, (lambda name: given(name) or name in then_given)


def build_training_config(opts, given=lambda name: False):
    """Turn parsed options into (desc, training_loop kwargs, launch settings). Raises click.UsageError.

    opts: dict of every option by parameter name (what click passes to `main`).
    given(name): whether the user set that option explicitly (the demo only fills in the rest).
    """
    opts = dnnlib.EasyDict(opts)
    cfg = dnnlib.EasyDict()
    launch = dnnlib.EasyDict()
    if opts.resume == 'latest' or (opts.resume or '').endswith('.pt'):
        opts, given = _continue_run_options(opts, given)

    _devices_section(opts, cfg, launch, given)
    if opts.data is None:
        _apply_demo_defaults(opts, launch, given)
    if opts.snap < 1:
        _fail(f'--snap={opts.snap} must be at least 1 tick')
    cfg.image_snapshot_ticks = cfg.network_snapshot_ticks = opts.snap
    metrics = [] if opts.cfg == 'fewshot' and not given('metrics') else opts.metrics
    if metrics:
        try:
            from metrics import metric_main
        except ImportError as err:
            _fail(f'--metrics needs the metrics package, which failed to import ({err}); use --metrics=none')
        unknown = [m for m in metrics if not metric_main.is_valid_metric(m)]
        if unknown:
            _fail(f'--metrics: unknown {", ".join(unknown)}; choose from {", ".join(metric_main.list_valid_metrics())} or none')
    cfg.metrics = metrics
    cfg.random_seed = opts.seed
    if opts.tick is not None:
        if opts.tick <= 0:
            _fail('--tick must be a positive number of kimg')
        cfg.kimg_per_tick = opts.tick
    if opts.workers is None:
        opts.workers = _default_workers()
    if opts.workers < 0:
        _fail('--workers must be 0 or more')

    desc = _dataset_section(opts, cfg, launch)
    data = cfg.training_set_kwargs
    cfg.grid_size = opts.grid or training_loop_module.default_grid_size(data.resolution, data.max_size, launch.device_type)
    desc += _network_section(opts, cfg, given)
    desc += _augmentation_section(opts, cfg)
    desc += _resume_section(opts, cfg)
    if opts.freezed is not None:
        if opts.freezed < 0:
            _fail(f'--freezed={opts.freezed} must be 0 or more layers')
        desc += f'-freezed{opts.freezed:d}'
        cfg.D_kwargs.block_kwargs.freeze_layers = opts.freezed
    for name in ('cbase', 'cmax'):
        if opts[name] is not None and given(name):
            desc += f'-{name}{opts[name]}'

    _precision_section(opts, cfg, launch.device_type)

    for plugin in _loss_plugin_classes():
        try:
            desc += plugin.options.configure(opts, cfg.loss_kwargs)
        except training_plugins.PluginConfigError as err:
            _fail(str(err))
    _check_resume_inputs(cfg, launch)
    # Recorded in training_options.json, so that --resume=latest can continue with the same options.
    launch.options = {name: os.path.abspath(value) if name == 'data' else _plain(value)
                      for name, value in opts.items() if name != 'outdir'}
    launch.given = sorted(name for name in opts if given(name))
    return desc, cfg, launch

#----------------------------------------------------------------------------
# Launch.

def _describe_ops(ops, device_type):
    if ops == 'ref':
        return 'Ops: pure-PyTorch reference implementation (--ops=ref).'
    if device_type != 'cuda':
        return f'Ops: pure-PyTorch reference implementation (running on {device_type.upper()}; the CUDA kernels need a GPU).'
    if ops == 'cuda':
        return 'Ops: CUDA kernels (--ops=cuda: a failed kernel build stops the run).'
    return ('Ops: CUDA kernels, built on first use (--ops=auto: if the build fails, one warning says why and the '
            'reference implementation runs instead).')


def _build_kernels_now():
    # --ops=cuda promises a loud failure: build both plugins before training starts.
    from torch_utils.ops import bias_act, upfirdn2d
    x = torch.zeros([1, 1, 8, 8], device='cuda')
    bias_act.bias_act(x, act='lrelu', impl='cuda')
    upfirdn2d.upsample2d(x, upfirdn2d.setup_filter([1, 3, 3, 1], device=x.device), impl='cuda')


def _training_process(rank, local_rank, config, launch, temp_dir):
    """Body of each training process (rank 0 also owns every file)."""
    from torch_utils import custom_ops, training_stats
    num_gpus = config.num_gpus
    logger = None
    if rank == 0:
        logger = dnnlib.util.Logger(file_name=os.path.join(config.run_dir, 'log.txt'), file_mode='a', should_flush=True)
    try:
        device = process_device(launch.device_type, local_rank)
        if device.type == 'cpu' and num_gpus > 1:
            # CPU processes share the cores; oversubscribed OpenMP threads slow small convs ~10x.
            processes_here = int(os.environ.get('LOCAL_WORLD_SIZE', num_gpus))
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // processes_here))
        if num_gpus > 1 and launch.torchrun is None:
            init_file = os.path.abspath(os.path.join(temp_dir, '.torch_distributed_init'))
            backend = 'nccl' if device.type == 'cuda' and os.name != 'nt' else 'gloo'
            init_method = f'file:///{init_file.replace(os.sep, "/")}' if os.name == 'nt' else f'file://{init_file}'
            torch.distributed.init_process_group(backend=backend, init_method=init_method, rank=rank, world_size=num_gpus)
        if num_gpus > 1:
            training_stats.init_multiprocessing(rank=rank, sync_device=device)
        if rank != 0:
            custom_ops.verbosity = 'none'
        custom_ops.set_preferred_impl(launch.ops)
        if launch.ops == 'cuda':
            try:
                _build_kernels_now()
            except custom_ops.PluginBuildError as err:
                first_line = str(err).strip().splitlines()[0]
                raise training_loop_module.TrainingError(f'--ops=cuda: the CUDA kernels did not build ({first_line}); '
                                                         f'use --ops=auto to fall back to the reference ops') from err
        loop_kwargs = dict(config)
        loop_kwargs['device'] = device
        training_loop_module.training_loop(rank=rank, **loop_kwargs)
        if num_gpus > 1:
            # Leave together: a rank that exits while a peer still talks to it can abort in gloo's threads.
            torch.distributed.barrier()
    finally:
        if num_gpus > 1 and torch.distributed.is_initialized():
            # An undestroyed process group tears down its worker threads during interpreter exit,
            # which aborts the process ("terminate called without an active exception").
            torch.distributed.destroy_process_group()
        if logger is not None:
            logger.close()


def _spawned_process(rank, config, launch, temp_dir):
    # Runs in a fresh process from torch.multiprocessing.spawn: turn user-fixable errors into one
    # line instead of a traceback from every rank.
    try:
        _training_process(rank, rank, config, launch, temp_dir)
    except training_loop_module.TrainingError as err:
        print(f'Error (rank {rank}): {err}', file=sys.stderr)
        sys.exit(1)
    except OSError as err:  # a full disk, a folder that became read-only, ...
        print(f'Error (rank {rank}): {dnnlib.cli.describe_os_error(err)}', file=sys.stderr)
        sys.exit(1)


def _verify_training_images(data_kwargs, rank, torchrun):
    """Decode every training image before the run directory exists: a file cut short after its header passes the
    header check when the dataset opens and would otherwise stop training at its first use. Rank 0 decodes; under
    torchrun the other processes hear the result."""
    problem = None
    if rank == 0:
        from training import dataset as dataset_module
        dataset = dnnlib.util.construct_class_by_name(**data_kwargs)
        try:
            dataset_module.verify_all_images(dataset, print_fn=print)
        except dataset_module.DatasetError as err:
            problem = f'--data: {err}'
        finally:
            dataset.close()
    if torchrun is not None:
        shared = [problem]
        torch.distributed.broadcast_object_list(shared, src=0)
        problem = shared[0]
    if problem is not None:
        raise click.ClickException(problem)


def _training_options_text(config, launch):
    """training_options.json: the training_loop config plus the train.py options (for --resume=latest), as strict
    JSON (a NaN or infinity is refused here rather than written as invalid JSON)."""
    record = dict(config, train_py_options=dict(values=launch.get('options', {}), given=launch.get('given', [])))
    try:
        return json.dumps(record, indent=2, allow_nan=False)
    except ValueError as err:
        raise click.ClickException(f'the training options hold a value JSON cannot store ({err}); '
                                   f'give finite numbers for every option') from None


def _require_metric_detectors(metrics):
    """Stop before anything is written when a requested metric cannot get its feature detector (offline machines)."""
    from metrics import metric_main, metric_utils
    try:
        metric_main.check_metrics_available(metrics)
    except metric_utils.DetectorUnavailableError as err:
        _fail(f'--metrics: {err}')


def where_to_look(run_dir):
    """The closing line of a run: its folder and its newest fakes grid."""
    grids = sorted(name for name in os.listdir(run_dir) if re.fullmatch(r'fakes\d+(\.\d{3})?\.png', name))
    if not grids:
        return f'Done. Results in {run_dir}.'
    return (f'Done. Results in {run_dir}; newest fakes grid: {os.path.join(run_dir, grids[-1])} '
            f'(reals.png beside it shows the training images).')


def launch_training(desc, config, launch, outdir, dry_run):
    """Pick the run dir, print the config, and run one process per device (or join torchrun's)."""
    torchrun = launch.torchrun
    rank = torchrun[0] if torchrun else 0
    if torchrun is not None:
        # Every torchrun process parsed the options; rank 0 alone picks the run dir.
        device = process_device(launch.device_type, torchrun[2])
        torch.distributed.init_process_group(backend='nccl' if device.type == 'cuda' else 'gloo', init_method='env://')
        chosen = [_next_run_dir(outdir, desc) if rank == 0 else None]
        torch.distributed.broadcast_object_list(chosen, src=0)
        config.run_dir = chosen[0]
    else:
        config.run_dir = _next_run_dir(outdir, desc)

    if rank == 0:
        data = config.training_set_kwargs
        if launch.get('demo_note'):
            print(launch.demo_note)
        print(json.dumps(config, indent=2))
        summary = [
            ('Run directory', config.run_dir),
            ('Dataset', data.path),
            ('Length', f'{config.total_kimg} kimg'),
            ('Processes', f'{config.num_gpus} ({"GPU" if launch.device_type == "cuda" else launch.device_type.upper()})'),
            ('Images', data.max_size),
            ('Resolution', data.resolution),
            ('Conditional', data.use_labels),
            ('X-flips', data.xflip),
            ('Image grids', f'{config.grid_size[0]}x{config.grid_size[1]} (grid-seeds.json lists their seeds)'),
        ]
        for label, value in summary:
            print(f'{label + ":":<16s}{value}')
        print(_describe_ops(launch.ops, launch.device_type))
    if dry_run:
        if rank == 0:
            print('--dry-run: nothing was written.')
        return None

    if config.metrics:
        _require_metric_detectors(config.metrics)
    _verify_training_images(config.training_set_kwargs, rank, torchrun)
    if rank == 0:
        options_text = _training_options_text(config, launch)
        options_path = os.path.join(config.run_dir, 'training_options.json')
        os.makedirs(config.run_dir, exist_ok=False)
        try:
            with dnnlib.cli.about_path(options_path):
                dnnlib.util.write_atomically(options_path, lambda f: f.write(options_text), mode='wt')
        except OSError:
            os.rmdir(config.run_dir)  # still empty: leave no run directory behind
            raise
    if torchrun is not None:
        torch.distributed.barrier()
        _training_process(rank, torchrun[2], config, launch, temp_dir=None)
        return config.run_dir

    with tempfile.TemporaryDirectory() as temp_dir:
        if config.num_gpus == 1:
            _training_process(0, 0, config, launch, temp_dir)
        else:
            import torch.multiprocessing as mp
            print(f'Starting {config.num_gpus} training processes...')
            try:
                mp.spawn(fn=_spawned_process, args=(config, launch, temp_dir), nprocs=config.num_gpus)
            except mp.ProcessExitedException as err:
                raise click.ClickException(f'training process {err.error_index} exited with code {err.exit_code}; '
                                           f'see the messages above and {config.run_dir}/log.txt') from None
    print(where_to_look(config.run_dir))
    return config.run_dir

#----------------------------------------------------------------------------

@click.command(context_settings=dict(max_content_width=120))
@click.pass_context
# Run and output.
@click.option('--outdir', help='Parent folder for run directories (NNNNN-<desc>)', required=True, metavar='DIR')
@click.option('--gpus', help='Processes to run: one per GPU (needs CUDA), or CPU processes with --device=cpu', type=int, default=1, show_default=True, metavar='INT')
@click.option('--snap', help='Write fakes grid, snapshot and training state every this many ticks', type=int, default=50, show_default=True, metavar='TICKS')
@click.option('--grid', help='Columns x rows of reals.png and the fakes grids  [default: from resolution and image '
              'count, at most 8x4 off CUDA]', callback=_grid_option, metavar='WxH')
@click.option('--metrics', help='Metrics at each snapshot, comma-separated, or none  [default: fid50k_full; none for --cfg=fewshot]',
              callback=_metric_list, default='fid50k_full', metavar='LIST')
@click.option('--detector-dir', help='Folder holding downloaded metric detector files, for offline machines  [default: $SG2MIXDL_DETECTOR_DIR, then the dnnlib cache]',
              metavar='DIR')
@click.option('--seed', help='Seed for everything random', type=int, default=0, show_default=True, metavar='INT')
@click.option('-n', '--dry-run', help='Show the resolved options and stop before writing anything', is_flag=True)
# Dataset.
@click.option('--data', help='Image folder or zip  [default: the bundled demo set]', metavar='PATH')
@click.option('--cond', help='Condition G and D on the labels in dataset.json  [default: false]', type=bool, metavar='BOOL')
@click.option('--subset', help='Use a seeded random subset of this many images  [default: all]', type=int, metavar='INT')
@click.option('--mirror', help='Add horizontally flipped copies  [default: false; true for --cfg=fewshot]', type=bool, metavar='BOOL')
# Base config.
@click.option('--cfg', help='Preset of sizes and hyper-parameters (see below)', type=click.Choice(list(BASE_CONFIGS)), default='auto', show_default=True)
@click.option('--gamma', help='R1 weight  [default: from --cfg]', type=FiniteFloat(), metavar='FLOAT')
@click.option('--kimg', help='Training length in thousands of images  [default: from --cfg]', type=int, metavar='INT')
@click.option('--batch', help='Images per minibatch, all processes together  [default: from --cfg]', type=int, metavar='INT')
@click.option('--batch-gpu', help='Images per pass in one process; less than batch/gpus accumulates gradients  [default: from --cfg]',
              type=int, metavar='INT')
@click.option('--cbase', help='Network width: channel_base  [default: from --cfg]', type=int, metavar='INT')
@click.option('--cmax', help='Network width: channel_max  [default: 512]', type=int, metavar='INT')
@click.option('--tick', help='kimg between progress lines  [default: 4]', type=FiniteFloat(), metavar='KIMG')
# Discriminator augmentation.
@click.option('--aug', help='Augmentation: adaptive (ada), none, fixed p, or DiffAugment  [default: ada]',
              type=click.Choice(['noaug', 'ada', 'fixed', 'diffaug']))
@click.option('--p', help='Probability for --aug=fixed', type=FiniteFloat(), metavar='FLOAT')
@click.option('--target', help='ADA target for the sign of D(real), --aug=ada only  [default: 0.6]', type=FiniteFloat(), metavar='FLOAT')
@click.option('--augpipe', help='Which ADA transformations to use  [default: bgc]', type=click.Choice(AUGPIPE_NAMES))
# Transfer learning and resume.
@click.option('--resume', help='Network pickle/URL/shortcut (weights only), training-state .pt or "latest" (exact)  [default: noresume]',
              metavar='PKL')
@click.option('--freezed', help='Keep the first N layers of D fixed  [default: 0]', type=int, metavar='INT')
# Speed.
@click.option('--fp32', help='Run every layer in fp32 (no fp16, no conv clamp)  [default: false]', type=bool, metavar='BOOL')
@click.option('--nhwc', help='Channels-last memory layout for the fp16 layers  [default: false]', type=bool, metavar='BOOL')
@click.option('--nobench', help='Turn off cuDNN autotuning  [default: false]', type=bool, metavar='BOOL')
@click.option('--allow-tf32', help='Let matmuls and convolutions use TF32  [default: false]', type=bool, metavar='BOOL')
@click.option('--cuda-graphs', help='Replay each training phase as a CUDA graph where it can be captured (CUDA only)  '
              '[default: false]', type=bool, metavar='BOOL')
@click.option('--workers', help='Data-loading worker processes (0 = load in the training process)  '
              '[default: 3, at most the usable cores]', type=int, metavar='INT')
@click.option('--device', help='Train on CUDA, Apple MPS (fp32) or CPU; auto takes CUDA when present', type=click.Choice(['auto', 'cuda', 'mps', 'cpu']),
              default='auto', show_default=True)
@click.option('--ops', help='Custom ops: auto (kernels, else pure PyTorch), cuda (kernels or fail), ref (pure PyTorch)',
              type=click.Choice(['auto', 'cuda', 'ref']), default='auto', show_default=True)
@dnnlib.cli.one_line_errors
def main(ctx, outdir, dry_run, **opts):
    """Train StyleGAN2-ADA, optionally with a few-shot loss plug-in such as MixDL.

    Each run goes to a new directory OUTDIR/NNNNN-<desc> holding training_options.json, log.txt,
    stats.jsonl, image grids, network-snapshot-<kimg>.pkl and training-state-<kimg>.pt.

    \b
    Examples:
      # A short run on the bundled demo set; nothing else needed.
      python train.py --outdir=runs
    \b
      # Your own data on one GPU with the automatic preset.
      python train.py --outdir=runs --data=mydata.zip --gpus=1
    \b
      # The MixDL authors' few-shot recipe (batch 4, 600 kimg, x-flips).
      python train.py --outdir=runs --data=fewshot.zip --cfg=fewshot
    \b
      # Carry on with the newest run under runs/, exactly where it stopped.
      python train.py --outdir=runs --data=mydata.zip --resume=latest
    \b
      # Transfer learning from NVIDIA's FFHQ 256 network.
      python train.py --outdir=runs --data=mydata.zip --cfg=paper256 --resume=ffhq256

    \b
    Presets (--cfg):
      auto       sizes, lr, gamma and EMA derived from resolution and GPU count
      stylegan2  StyleGAN2 config F (1024 px)
      paper256   the ADA paper's FFHQ / LSUN Cat setup (256 px)
      paper512   the ADA paper's BreCaHAD / AFHQ setup (512 px)
      paper1024  the ADA paper's MetFaces setup (1024 px)
      cifar      the ADA paper's CIFAR-10 setup (32 px)
      fewshot    the MixDL paper's few-shot recipe

    \b
    --resume shortcuts (weights only; kimg starts again at 0):
      ffhq256, ffhq512, ffhq1024, celebahq256, lsundog256
    """
    opts['outdir'] = outdir
    detector_dir = opts.pop('detector_dir')
    if detector_dir is not None:
        if not os.path.isdir(detector_dir):
            _fail(f'--detector-dir={detector_dir} is not a folder; point it at the folder holding the downloaded detector files')
        # Every metric lookup (here, in spawned training processes and at snapshots) reads this variable.
        os.environ['SG2MIXDL_DETECTOR_DIR'] = os.path.abspath(detector_dir)
    desc, config, launch = build_training_config(opts, given=lambda name: _given(ctx, name))
    try:
        launch_training(desc, config, launch, outdir, dry_run)
    except training_loop_module.TrainingError as err:
        raise click.ClickException(str(err)) from None


def _plugin_click_type(option):
    """The click parameter type that enforces a training.plugins.PluginOption's rule at parse time."""
    if option.choices is not None:
        return click.Choice(option.choices)
    if option.type is float:  # finite, then the plug-in's own check (its minimum and any rule it adds)
        if option.minimum is None:
            return FiniteFloat(check=option.check)
        return FiniteFloatRange(min=option.minimum, min_open=option.minimum_open, check=option.check)
    if option.minimum is not None:
        return click.IntRange(min=option.minimum, min_open=option.minimum_open)
    return option.type


def _plugin_click_options(options):
    """click options for one plug-in's PluginOptions table: its BOOL switch, then its settings."""
    params = [click.Option([options.switch_flag], help=options.switch_help, type=bool, default=False,
                           show_default=True, metavar='BOOL')]
    for option in options.settings:
        params.append(click.Option([option.flag], help=option.help, type=_plugin_click_type(option),
                                   default=option.default, show_default=True,
                                   **(dict(metavar='BOOL') if option.type is bool else {})))
    return params


def _register_plugin_options():
    for plugin in _loss_plugin_classes():
        main.params.extend(_plugin_click_options(plugin.options))


_register_plugin_options()

#----------------------------------------------------------------------------

if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter

#----------------------------------------------------------------------------
