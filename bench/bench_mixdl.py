"""Benchmark MixDL's training cost: sec/kimg with --mixdl=1 over --mixdl=0, measured in the same process."""
# Both losses run the training loop's own schedule (phase plan, lazy regularisation, Adam steps,
# augmentation) on the same networks and the same data, in alternating blocks so that drift in
# machine load hits both equally. Only the loss differs, which is what the ratio is about.
#
#   CPU (64 px):  python bench/bench_mixdl.py --res=64 --batch=8 --channel-base=2048 --channel-max=64
#   GPU (256 px): python bench/bench_mixdl.py --res=256 --batch=16 --cfg-widths=paper256 --device=cuda

import argparse
import copy
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dnnlib  # noqa: E402
from torch_utils import training_stats  # noqa: E402
from training import networks  # noqa: E402


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

    def __init__(self, G, D, augment_pipe, loss_kwargs, args, device):
        self.G, self.D = G, D
        self.loss = dnnlib.util.construct_class_by_name(device=device, G_mapping=G.mapping, G_synthesis=G.synthesis,
                                                        D=D, augment_pipe=augment_pipe, **loss_kwargs)
        extras = list(self.loss.extra_modules().values())
        for module in extras:
            module.to(device).train().requires_grad_(False)
        trainables = {'G': [G], 'D': [D]}
        trainables[self.loss.extra_modules_train_with] += extras
        self.phases = []
        reg = {'G': 4, 'D': 16}
        optimizers = {}
        for network in ('G', 'D'):
            ratio = reg[network] / (reg[network] + 1)
            params = [p for m in trainables[network] for p in m.parameters()]
            optimizers[network] = torch.optim.Adam(params, lr=0.0025 * ratio, betas=(0.0, 0.99 ** ratio), eps=1e-8)
        for spec in self.loss.phase_plan(reg['G'], reg['D']):
            self.phases.append((spec, optimizers[spec.network], trainables[spec.network]))
        self.batch_idx = 0
        self.device = device
        self.args = args

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
            self.loss.accumulate_gradients(spec.name, real_img, gen_c, gen_z, gen_c, sync=True, gain=spec.interval)
            for module in modules:
                module.requires_grad_(False)
            opt.step()
        self.batch_idx += 1


def synchronise(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--res', type=int, default=64, help='image resolution')
    parser.add_argument('--batch', type=int, default=8, help='batch size (one process)')
    parser.add_argument('--cfg-widths', choices=['custom', 'paper256'], default='custom',
                        help='paper256: channel_base 16384, max 512, fp16 top 4 res on GPU')
    parser.add_argument('--channel-base', type=int, default=2048, help='custom widths: channel_base')
    parser.add_argument('--channel-max', type=int, default=64, help='custom widths: channel_max')
    parser.add_argument('--z-dim', type=int, default=64, help='z and w width')
    parser.add_argument('--map', type=int, default=2, help='mapping layers')
    parser.add_argument('--augpipe', default='bgc', help="augment pipe spec, or 'none'")
    parser.add_argument('--p', type=float, default=0.2, help='augmentation probability')
    parser.add_argument('--interval', type=int, default=2, help='--mixdl-interval')
    parser.add_argument('--minibatches', type=int, default=32, help='timed minibatches per block (multiple of 16)')
    parser.add_argument('--blocks', type=int, default=3, help='alternating timed blocks per loss')
    parser.add_argument('--warmup', type=int, default=4, help='untimed minibatches per loss first')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--json', default=None, help='also write the result to this JSON file')
    args = parser.parse_args()

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

    G, D = build_networks(args, device)
    augment_pipe = build_augment_pipe(args, device)
    base_kwargs = dict(class_name='training.loss.StyleGAN2Loss', r1_gamma=1.0)
    mixdl_kwargs = dict(base_kwargs, class_name='stylegan2_ada_mixdl.loss.MixDLLoss', mixdl_interval=args.interval)
    # Each loss trains its own copy, so neither sees the other's weights drift.
    trainers = {
        'mixdl=0': Trainer(copy.deepcopy(G), copy.deepcopy(D), augment_pipe, base_kwargs, args, device),
        'mixdl=1': Trainer(copy.deepcopy(G), copy.deepcopy(D), augment_pipe, mixdl_kwargs, args, device),
    }
    reals = torch.rand([args.batch, 3, args.res, args.res], device=device) * 2 - 1

    for trainer in trainers.values():
        for _ in range(args.warmup):
            trainer.step(reals)
    seconds = {name: 0.0 for name in trainers}
    for _ in range(args.blocks):
        for name, trainer in trainers.items():
            # Start each block at a multiple of 16 so both see the same R1 / path-length share.
            trainer.batch_idx = ((trainer.batch_idx + 15) // 16) * 16
            synchronise(device)
            start = time.perf_counter()
            for _ in range(args.minibatches):
                trainer.step(reals)
            synchronise(device)
            seconds[name] += time.perf_counter() - start
    kimg = args.blocks * args.minibatches * args.batch / 1000
    sec_per_kimg = {name: value / kimg for name, value in seconds.items()}
    ratio = sec_per_kimg['mixdl=1'] / sec_per_kimg['mixdl=0']
    result = dict(device=str(device), device_name=torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu',
                  threads=torch.get_num_threads(), res=args.res, batch=args.batch, cfg_widths=args.cfg_widths,
                  channel_base=effective_widths(args)[0], channel_max=effective_widths(args)[1], augpipe=args.augpipe,
                  interval=args.interval, minibatches=args.blocks * args.minibatches,
                  sec_per_kimg=sec_per_kimg, ratio=ratio, command=' '.join(sys.argv))
    for name, value in sec_per_kimg.items():
        print(f'{name}: {value:8.2f} sec/kimg')
    print(f'ratio mixdl=1 / mixdl=0: {ratio:.3f} (target <= 1.35 at interval 2)')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=2)


if __name__ == '__main__':
    main()
