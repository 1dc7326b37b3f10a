"""Benchmark AdaptiveMix's training cost: sec/kimg with --adaptivemix=1 over the baseline, in one process."""
# Uses the harness shared with bench_mixdl (bench/_loop_harness.py): the loop's phase plan, lazy
# regularisation, Adam steps and augmentation on the same networks and data, in alternating timed
# blocks so that drift in machine load hits both losses equally. Only the loss differs, which is
# what the ratio is about.
#
#   CPU (32 px):  python bench/bench_adaptivemix.py --res=32 --batch=8 --channel-base=1024 --channel-max=64
#   GPU (256 px): python bench/bench_adaptivemix.py --res=256 --batch=16 --cfg-widths=paper256 --device=cuda

import argparse
import json
import os
import sys

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)

from _loop_harness import add_common_args, check_args, prepare_process, result_record, time_losses  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    add_common_args(parser, res=32, channel_base=1024, minibatches=16, warmup=2)
    parser.add_argument('--weight', type=float, default=1.0, help='--adaptivemix-weight')
    parser.add_argument('--sigma', type=float, default=0.05, help='--adaptivemix-sigma')
    args = parser.parse_args()
    check_args(parser, args)
    device = prepare_process(args)

    loss_kwargs = {
        'baseline': dict(class_name='training.loss.StyleGAN2Loss', r1_gamma=1.0),
        'adaptivemix': dict(class_name='stylegan2_ada_mixdl.adaptivemix.AdaptiveMixLoss', r1_gamma=1.0,
                            adaptivemix_weight=args.weight, adaptivemix_sigma=args.sigma),
    }
    sec_per_kimg = time_losses(loss_kwargs, args, device)
    ratio = sec_per_kimg['adaptivemix'] / sec_per_kimg['baseline']
    for arm, value in sec_per_kimg.items():
        print(f'{arm:<12s} {value:8.2f} sec/kimg')
    print(f'ratio adaptivemix / baseline: {ratio:.3f}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result_record(args, device, sec_per_kimg, ratio), f, indent=2)


if __name__ == '__main__':
    main()
