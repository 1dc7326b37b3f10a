"""Benchmark MixDL's training cost: sec/kimg with --mixdl=1 over --mixdl=0, measured in the same process."""
# Both losses run the training loop's own schedule (phase plan, lazy regularisation, Adam steps,
# augmentation) on the same networks and the same data, in alternating blocks so that drift in
# machine load hits both equally. Only the loss differs, which is what the ratio is about.
#
#   CPU (64 px):  python bench/bench_mixdl.py --res=64 --batch=8 --channel-base=2048 --channel-max=64
#   GPU (256 px): python bench/bench_mixdl.py --res=256 --batch=16 --cfg-widths=paper256 --device=cuda

import argparse
import json
import os
import sys

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)

from _loop_harness import add_common_args, check_args, prepare_process, result_record, time_losses  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    add_common_args(parser, res=64, channel_base=2048, minibatches=32, warmup=4)
    parser.add_argument('--interval', type=int, default=2, help='--mixdl-interval')
    args = parser.parse_args()
    check_args(parser, args)
    device = prepare_process(args)

    base_kwargs = dict(class_name='training.loss.StyleGAN2Loss', r1_gamma=1.0)
    mixdl_kwargs = dict(base_kwargs, class_name='stylegan2_ada_mixdl.mixdl.MixDLLoss', mixdl_interval=args.interval)
    sec_per_kimg = time_losses({'mixdl=0': base_kwargs, 'mixdl=1': mixdl_kwargs}, args, device)
    ratio = sec_per_kimg['mixdl=1'] / sec_per_kimg['mixdl=0']
    for name, value in sec_per_kimg.items():
        print(f'{name}: {value:8.2f} sec/kimg')
    print(f'ratio mixdl=1 / mixdl=0: {ratio:.3f} (target <= 1.35 at interval 2)')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result_record(args, device, sec_per_kimg, ratio, interval=args.interval), f, indent=2)


if __name__ == '__main__':
    main()
