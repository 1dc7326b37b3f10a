"""Shared harness of the loss-cost benchmarks: the loop's per-minibatch work for several losses, timed in turn."""
# Every arm runs the loop's own schedule (phase plan, lazy regularisation, Adam steps,
# augmentation) on its own copy of the same networks and the same data, so only the loss differs.
# Timed blocks alternate between arms so that drift in machine load hits all of them equally.

import argparse
import copy
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dnnlib  # noqa: E402
from torch_utils import training_stats  # noqa: E402
from training import networks  # noqa: E402

# Lazy-regularisation intervals of the training loop (Greg every 4, Dreg every 16 minibatches).
REG_INTERVALS = {'G': 4, 'D': 16}
BLOCK_ALIGN = max(REG_INTERVALS.values())


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
    """Threads, seeds, stats and op switches as the training loop sets them; returns the device."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    training_stats.init_multiprocessing(rank=0, sync_device=None)
    # As in the training loop: R1 through the augment pipe needs the double-differentiable ops on every device.
    from torch_utils.ops import conv2d_gradfix, grid_sample_gradfix
    conv2d_gradfix.enabled = True
    grid_sample_gradfix.enabled = True
    torch.backends.cudnn.benchmark = device.type == 'cuda'
    return device


def effective_widths(args):
    """(channel_base, channel_max) actually used."""
    return (16384, 512) if args.cfg_widths == 'paper256' else (args.channel_base, args.channel_max)


def build_networks(args, device):
    channel_base, channel_max = effective_widths(args)
    num_fp16_res, conv_clamp = (4, 256) if args.cfg_widths == 'paper256' else (0, None)
    if device.type != 'cuda':
        num_fp16_res, conv_clamp = 0, None
    common = dict(c_dim=0, img_resolution=args.res, img_channels=3)
    G = networks.Generator(z_dim=args.z_dim, w_dim=args.z_dim, **common, mapping_kwargs=dict(num_layers=args.map),
                           synthesis_kwargs=dict(channel_base=channel_base, channel_max=channel_max,
                                                 num_fp16_res=num_fp16_res, conv_clamp=conv_clamp))
    D = networks.Discriminator(**common, channel_base=channel_base, channel_max=channel_max, num_fp16_res=num_fp16_res,
                               conv_clamp=conv_clamp, epilogue_kwargs=dict(mbstd_group_size=min(4, args.batch)))
    return G.train().requires_grad_(False).to(device), D.train().requires_grad_(False).to(device)


def build_augment_pipe(args, device):
    if args.augpipe == 'none':
        return None
    from training.augment import AugmentPipe, augpipe_specs
    pipe = AugmentPipe(**augpipe_specs[args.augpipe]).train().requires_grad_(False).to(device)
    pipe.p.copy_(torch.as_tensor(args.p))
    return pipe


class Trainer:
    """The loop's per-minibatch work for one loss: phases, requires_grad toggles, Adam steps."""

    def __init__(self, G, D, augment_pipe, loss_kwargs, device):
        self.G, self.D = G, D
        self.loss = dnnlib.util.construct_class_by_name(device=device, G_mapping=G.mapping, G_synthesis=G.synthesis,
                                                        D=D, augment_pipe=augment_pipe, **loss_kwargs)
        extras = list(self.loss.extra_modules().values())
        for module in extras:
            module.to(device).train().requires_grad_(False)
        trainables = {'G': [G], 'D': [D]}
        trainables[self.loss.extra_modules_train_with] += extras
        optimizers = {}
        for network in ('G', 'D'):
            ratio = REG_INTERVALS[network] / (REG_INTERVALS[network] + 1)
            params = [p for m in trainables[network] for p in m.parameters()]
            optimizers[network] = torch.optim.Adam(params, lr=0.0025 * ratio, betas=(0.0, 0.99 ** ratio), eps=1e-8)
        self.phases = [(spec, optimizers[spec.network], trainables[spec.network])
                       for spec in self.loss.phase_plan(REG_INTERVALS['G'], REG_INTERVALS['D'])]
        self.batch_idx = 0
        self.device = device

    def step(self, real_img):
        batch = real_img.shape[0]
        self.loss.begin_minibatch(self.batch_idx)
        for spec, opt, modules in self.phases:
            if self.batch_idx % spec.interval != 0:
                continue
            opt.zero_grad(set_to_none=True)
            for module in modules:
                module.requires_grad_(True)
            gen_z = torch.randn([batch, self.G.z_dim], device=self.device)
            gen_c = torch.zeros([batch, 0], device=self.device)
            self.loss.accumulate_gradients(spec.name, real_img, gen_c, gen_z, gen_c, gain=spec.interval)
            for module in modules:
                module.requires_grad_(False)
            opt.step()
        self.batch_idx += 1


def synchronise(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def time_losses(loss_kwargs_by_arm, args, device):
    """sec/kimg of each arm ({name: loss kwargs}), each training its own copy of one G/D pair on one batch of reals."""
    G, D = build_networks(args, device)
    augment_pipe = build_augment_pipe(args, device)
    # Each arm trains its own copy, so none sees another's weights drift.
    trainers = {arm: Trainer(copy.deepcopy(G), copy.deepcopy(D), augment_pipe, kwargs, device)
                for arm, kwargs in loss_kwargs_by_arm.items()}
    reals = torch.rand([args.batch, 3, args.res, args.res], device=device) * 2 - 1

    for trainer in trainers.values():
        for _ in range(args.warmup):
            trainer.step(reals)
    seconds = dict.fromkeys(trainers, 0.0)
    for _ in range(args.blocks):
        for arm, trainer in trainers.items():
            # Blocks start at a multiple of the R1 interval so every arm gets the same share of R1 / path length.
            trainer.batch_idx = -(-trainer.batch_idx // BLOCK_ALIGN) * BLOCK_ALIGN
            synchronise(device)
            started = time.perf_counter()
            for _ in range(args.minibatches):
                trainer.step(reals)
            synchronise(device)
            seconds[arm] += time.perf_counter() - started
    kimg = args.blocks * args.minibatches * args.batch / 1000
    return {arm: value / kimg for arm, value in seconds.items()}


def result_record(args, device, sec_per_kimg, ratio, **extra):
    """The JSON-able summary both benchmarks write with --json."""
    channel_base, channel_max = effective_widths(args)
    return dict(device=str(device), device_name=torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu',
                threads=torch.get_num_threads(), res=args.res, batch=args.batch, cfg_widths=args.cfg_widths,
                channel_base=channel_base, channel_max=channel_max, augpipe=args.augpipe, **extra,
                minibatches=args.blocks * args.minibatches, sec_per_kimg=sec_per_kimg, ratio=ratio,
                command=' '.join(sys.argv))
