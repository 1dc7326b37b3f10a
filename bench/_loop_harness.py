"""Shared harness of the loss-cost benchmarks: the loop's per-minibatch work for several losses, timed in turn."""
# Every arm runs the training loop's own step functions (phase plan, lazy regularisation, gradient
# averaging, Adam steps, G EMA, the NaN check, augmentation) on its own copy of the same networks and
# the same data, so only the loss differs. Timed blocks alternate between arms so that drift in
# machine load hits all of them equally.

import argparse
import copy
import inspect
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dnnlib  # noqa: E402
import train  # noqa: E402
from torch_utils import training_stats  # noqa: E402
from training import training_loop as loop  # noqa: E402

# The training loop's lazy-regularisation intervals (path length every 4 minibatches, R1 every 16).
_LOOP_DEFAULTS = inspect.signature(loop.training_loop).parameters
REG_INTERVALS = {'G': _LOOP_DEFAULTS['G_reg_interval'].default, 'D': _LOOP_DEFAULTS['D_reg_interval'].default}
BLOCK_ALIGN = max(REG_INTERVALS.values())
ADAM = dict(class_name='torch.optim.Adam', lr=0.0025, betas=[0, 0.99], eps=1e-8)


def add_common_args(parser: argparse.ArgumentParser, res: int, channel_base: int, minibatches: int, warmup: int):
    """Network, augmentation, timing and device options shared by the benchmarks; defaults differ per script."""
    parser.add_argument('--res', type=int, default=res, help='image resolution')
    parser.add_argument('--batch', type=int, default=8, help='batch size (one process)')
    parser.add_argument('--cfg-widths', choices=['custom', 'paper256'], default='custom',
                        help='paper256: channel_base 16384, max 512, fp16 top 4 res on GPU')
    parser.add_argument('--channel-base', type=int, default=channel_base, help='custom widths: channel_base')
    parser.add_argument('--channel-max', type=int, default=64, help='custom widths: channel_max')
    parser.add_argument('--z-dim', type=int, default=64, help='z and w width')
    parser.add_argument('--map', type=int, default=2, help='mapping layers')
    parser.add_argument('--augpipe', default='bgc', help="augment pipe spec, or 'none'")
    parser.add_argument('--p', type=float, default=0.2, help='augmentation probability')
    parser.add_argument('--minibatches', type=int, default=minibatches,
                        help=f'timed minibatches per block (multiple of {BLOCK_ALIGN})')
    parser.add_argument('--blocks', type=int, default=3, help='alternating timed blocks per loss')
    parser.add_argument('--warmup', type=int, default=warmup, help='untimed minibatches per loss first')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--json', default=None, help='also write the result to this JSON file')


def check_args(parser: argparse.ArgumentParser, args) -> None:
    if args.minibatches % BLOCK_ALIGN != 0:
        parser.error(f'--minibatches must be a multiple of {BLOCK_ALIGN} (the R1 interval), got {args.minibatches}')


def prepare_process(args) -> torch.device:
    """Threads, then the training loop's own process set-up (seeds, cuDNN, double-backward ops); returns the device."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = train.process_device(args.device, local_rank=0)
    loop.setup_process(random_seed=args.seed, cudnn_benchmark=device.type == 'cuda')
    training_stats.init_multiprocessing(rank=0, sync_device=None)
    return device


def effective_widths(args):
    """(channel_base, channel_max) actually used."""
    return (16384, 512) if args.cfg_widths == 'paper256' else (args.channel_base, args.channel_max)


def network_kwargs(args, device):
    """G_kwargs and D_kwargs as train.py writes them, with train.py's precision policy for the device."""
    channel_base, channel_max = effective_widths(args)
    precision = dict(num_fp16_res=4, conv_clamp=256) if args.cfg_widths == 'paper256' else dict(num_fp16_res=0, conv_clamp=None)
    widths = dict(channel_base=channel_base, channel_max=channel_max, **precision)
    G_kwargs = dnnlib.EasyDict(class_name='training.networks.Generator', z_dim=args.z_dim, w_dim=args.z_dim,
                               mapping_kwargs=dict(num_layers=args.map), synthesis_kwargs=dnnlib.EasyDict(widths))
    D_kwargs = dnnlib.EasyDict(class_name='training.networks.Discriminator', block_kwargs=dnnlib.EasyDict(), mapping_kwargs={},
                               epilogue_kwargs=dict(mbstd_group_size=min(4, args.batch)), **widths)
    train.apply_precision(G_kwargs, D_kwargs, device.type)
    return G_kwargs, D_kwargs


def build_networks(args, device):
    """The loop's networks (G, D, G_ema, augment_pipe at fixed p) for the benchmark's sizes."""
    G_kwargs, D_kwargs = network_kwargs(args, device)
    augment_kwargs = None
    if args.augpipe != 'none':
        from training.augment import augpipe_specs
        augment_kwargs = dict(class_name='training.augment.AugmentPipe', **augpipe_specs[args.augpipe])
    sizes = dict(c_dim=0, img_resolution=args.res, img_channels=3)
    return loop.build_networks(sizes, G_kwargs, D_kwargs, device, augment_kwargs=augment_kwargs, augment_p=args.p)


class Arm:
    """One loss trained by the loop's own steps: its phases and optimisers, minibatch preparation, phase
    stepping with gradient averaging, G EMA, and the NaN check once per timed block, on its own copy of the networks."""

    def __init__(self, nets, loss_kwargs, batch, device):
        self.nets = copy.deepcopy(nets)
        self.loss, extras = loop.build_loss(loss_kwargs, self.nets, device)
        _, self.phases = loop.build_phases(self.loss, self.nets, extras, ADAM, ADAM, REG_INTERVALS['G'], REG_INTERVALS['D'], device)
        self.progress = loop.Progress()
        self.batch = batch
        self.labels = torch.zeros([batch, 0])
        self.label_table = torch.zeros([batch, 0], device=device)
        self.device = device

    def step(self, reals):
        """One minibatch on uint8 reals [batch, C, H, W], as the loop runs it for one process."""
        minibatch = loop.prepare_minibatch(reals, self.labels, self.label_table, len(self.phases), self.nets.G.z_dim,
                                           self.batch, self.device)
        loop.train_minibatch(self.loss, self.phases, self.nets, minibatch, self.progress, self.batch, num_gpus=1,
                             ema_kimg=10, ema_rampup=None)

    def end_block(self):
        """The NaN/inf check the loop makes once per tick (it reads the device, so not after every minibatch)."""
        loop.stop_if_diverged(self.loss, self.phases, self.progress.cur_nimg / 1000, 1, self.device, None)


def synchronise(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_losses(loss_kwargs_by_arm, args, device):
    """sec/kimg of each arm ({name: loss kwargs}), each training its own copy of one G/D pair on one batch of reals."""
    nets = build_networks(args, device)
    # Each arm trains its own copy, so none sees another's weights drift.
    arms = {name: Arm(nets, kwargs, args.batch, device) for name, kwargs in loss_kwargs_by_arm.items()}
    reals = torch.randint(0, 256, [args.batch, 3, args.res, args.res], dtype=torch.uint8)

    for arm in arms.values():
        for _ in range(args.warmup):
            arm.step(reals)
        arm.end_block()
    seconds = dict.fromkeys(arms, 0.0)
    for _ in range(args.blocks):
        for name, arm in arms.items():
            # Blocks start at a multiple of the R1 interval so every arm gets the same share of R1 / path length.
            arm.progress.batch_idx = -(-arm.progress.batch_idx // BLOCK_ALIGN) * BLOCK_ALIGN
            synchronise(device)
            started = time.perf_counter()
            for _ in range(args.minibatches):
                arm.step(reals)
            arm.end_block()
            synchronise(device)
            seconds[name] += time.perf_counter() - started
    kimg = args.blocks * args.minibatches * args.batch / 1000
    return {name: value / kimg for name, value in seconds.items()}


def result_record(args, device, sec_per_kimg, ratio, **extra):
    """The JSON-able summary both benchmarks write with --json."""
    channel_base, channel_max = effective_widths(args)
    return dict(device=str(device), device_name=torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu',
                threads=torch.get_num_threads(), res=args.res, batch=args.batch, cfg_widths=args.cfg_widths,
                channel_base=channel_base, channel_max=channel_max, augpipe=args.augpipe, **extra,
                minibatches=args.blocks * args.minibatches, sec_per_kimg=sec_per_kimg, ratio=ratio,
                command=' '.join(sys.argv))
