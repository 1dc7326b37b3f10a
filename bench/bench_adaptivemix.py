"""Benchmark AdaptiveMix's training cost: sec/kimg with --adaptivemix=1 over the baseline, in one process."""
# Reuses bench_mixdl's harness (the loop's phase plan, lazy regularisation, Adam steps and
# augmentation on the same networks and data), alternating timed blocks so that drift in machine
# load hits both losses equally. Only the loss differs, which is what the ratio is about.
#
#   CPU (32 px):  python bench/bench_adaptivemix.py --res=32 --batch=8 --channel-base=1024 --channel-max=64
#   GPU (256 px): python bench/bench_adaptivemix.py --res=256 --batch=16 --cfg-widths=paper256 --device=cuda

import argparse
import copy
import json
import os
import sys
import time

import numpy as np
import torch

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(BENCH_DIR))
sys.path.insert(0, BENCH_DIR)

from bench_mixdl import Trainer, build_augment_pipe, build_networks, effective_widths, synchronise  # noqa: E402
from torch_utils import training_stats  # noqa: E402

ARMS = ('baseline', 'adaptivemix')


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--res', type=int, default=32, help='image resolution')
    parser.add_argument('--batch', type=int, default=8, help='batch size (one process)')
    parser.add_argument('--cfg-widths', choices=['custom', 'paper256'], default='custom',
                        help='paper256: channel_base 16384, max 512, fp16 top 4 res on GPU')
    parser.add_argument('--channel-base', type=int, default=1024, help='custom widths: channel_base')
    parser.add_argument('--channel-max', type=int, default=64, help='custom widths: channel_max')
    parser.add_argument('--z-dim', type=int, default=64, help='z and w width')
    parser.add_argument('--map', type=int, default=2, help='mapping layers')
    parser.add_argument('--augpipe', default='bgc', help="augment pipe spec, or 'none'")
    parser.add_argument('--p', type=float, default=0.2, help='augmentation probability')
    parser.add_argument('--weight', type=float, default=1.0, help='--adaptivemix-weight')
    parser.add_argument('--sigma', type=float, default=0.05, help='--adaptivemix-sigma')
    parser.add_argument('--minibatches', type=int, default=16, help='timed minibatches per block (multiple of 16)')
    parser.add_argument('--blocks', type=int, default=3, help='alternating timed blocks per loss')
    parser.add_argument('--warmup', type=int, default=2, help='untimed minibatches per loss first')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--threads', type=int, default=None, help='torch CPU threads')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--json', default=None, help='also write the result to this JSON file')
    args = parser.parse_args()
    if args.minibatches % 16 != 0:
        parser.error(f'--minibatches must be a multiple of 16 (the R1 interval), got {args.minibatches}')
    return args


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    training_stats.init_multiprocessing(rank=0, sync_device=None)
    # As in the training loop: R1 through the augment pipe needs the double-differentiable ops.
    from torch_utils.ops import conv2d_gradfix, grid_sample_gradfix
    conv2d_gradfix.enabled = True
    grid_sample_gradfix.enabled = True
    torch.backends.cudnn.benchmark = device.type == 'cuda'

    G, D = build_networks(args, device)
    augment_pipe = build_augment_pipe(args, device)
    loss_kwargs = {
        'baseline': dict(class_name='training.loss.StyleGAN2Loss', r1_gamma=1.0),
        'adaptivemix': dict(class_name='stylegan2_ada_mixdl.adaptivemix.AdaptiveMixLoss', r1_gamma=1.0,
                            adaptivemix_weight=args.weight, adaptivemix_sigma=args.sigma),
    }
    # Each arm trains its own copy, so neither sees the other's weights drift.
    trainers = {arm: Trainer(copy.deepcopy(G), copy.deepcopy(D), augment_pipe, loss_kwargs[arm], args, device)
                for arm in ARMS}
    reals = torch.rand([args.batch, 3, args.res, args.res], device=device) * 2 - 1

    for trainer in trainers.values():
        for _ in range(args.warmup):
            trainer.step(reals)
    seconds = dict.fromkeys(ARMS, 0.0)
    for _ in range(args.blocks):
        for arm, trainer in trainers.items():
            # Blocks start at a multiple of 16 so both arms get the same share of R1 / path length.
            trainer.batch_idx = -(-trainer.batch_idx // 16) * 16
            synchronise(device)
            started = time.perf_counter()
            for _ in range(args.minibatches):
                trainer.step(reals)
            synchronise(device)
            seconds[arm] += time.perf_counter() - started

    kimg = args.blocks * args.minibatches * args.batch / 1000
    sec_per_kimg = {arm: value / kimg for arm, value in seconds.items()}
    ratio = sec_per_kimg['adaptivemix'] / sec_per_kimg['baseline']
    channel_base, channel_max = effective_widths(args)
    result = dict(device=str(device), device_name=torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu',
                  threads=torch.get_num_threads(), res=args.res, batch=args.batch, cfg_widths=args.cfg_widths,
                  channel_base=channel_base, channel_max=channel_max, augpipe=args.augpipe,
                  minibatches=args.blocks * args.minibatches, sec_per_kimg=sec_per_kimg, ratio=ratio,
                  command=' '.join(sys.argv))
    for arm, value in sec_per_kimg.items():
        print(f'{arm:<12s} {value:8.2f} sec/kimg')
    print(f'ratio adaptivemix / baseline: {ratio:.3f}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=2)


if __name__ == '__main__':
    main()
