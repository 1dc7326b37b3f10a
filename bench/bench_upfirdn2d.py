"""Benchmark the upfirdn2d CUDA kernels against the PyTorch reference on typical StyleGAN2-ADA shapes."""

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from torch_utils.ops import upfirdn2d  # noqa: E402

# Feature maps seen by G's skip upsampling and D's residual downsampling, batch 32.
RESAMPLE_SHAPES = [
    [32, 512, 8, 8], [32, 512, 16, 16], [32, 512, 32, 32], [32, 512, 64, 64],
    [32, 256, 128, 128], [32, 128, 256, 256],
]
# ADA's geometric augmentation resamples RGB batches (after reflect padding) with a 12-tap filter.
AUGMENT_SHAPES = [[32, 3, 96, 96], [32, 3, 288, 288], [32, 3, 544, 544]]


def time_ms(fn, repeats):
    """Median milliseconds of fn() over `repeats` runs, after warm-up, timed with CUDA events."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return float(np.median(times))


def make_case(op_name, shape, dtype, f, channels_last):
    x = torch.randn(shape, device='cuda', dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    if op_name == 'upsample2d':
        def run(inp, impl):
            return upfirdn2d.upsample2d(inp, f, impl=impl)
    elif op_name == 'downsample2d':
        def run(inp, impl):
            return upfirdn2d.downsample2d(inp, f, impl=impl)
    elif op_name == 'down-crop':  # augment.py's final step: flip_filter and a negative crop
        def run(inp, impl):
            return upfirdn2d.downsample2d(inp, f, padding=-8, flip_filter=True, impl=impl)
    else:
        raise ValueError(op_name)
    return x, run


def bench_row(op_name, shape, dtype, f, filter_name, channels_last, passes, repeats):
    x, run = make_case(op_name, shape, dtype, f, channels_last)
    rows = []
    for pass_name in passes:
        result = {}
        for impl in ('cuda', 'ref'):
            if pass_name == 'fwd':
                def step(impl=impl):
                    with torch.no_grad():
                        run(x, impl)
            else:
                leaf = x.detach().requires_grad_(True)
                grad = torch.ones_like(run(x, 'ref'))

                def step(impl=impl, leaf=leaf, grad=grad):
                    run(leaf, impl).backward(grad)
            try:
                result[impl] = time_ms(step, repeats)
            except torch.cuda.OutOfMemoryError:
                result[impl] = float('nan')
            torch.cuda.empty_cache()
        rows.append((op_name, filter_name, 'x'.join(map(str, shape)), str(dtype).replace('torch.', ''),
                     'CL' if channels_last else 'NCHW', pass_name, result['cuda'], result['ref']))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--repeats', type=int, default=20, help='timed runs per measurement (median reported)')
    parser.add_argument('--quick', action='store_true', help='only the smallest and largest shapes')
    parser.add_argument('--channels-last', action='store_true', help='also time channels_last inputs')
    args = parser.parse_args()

    if not torch.cuda.is_available():
        print('bench_upfirdn2d: no CUDA device is visible, so there is nothing to compare; '
              'run this on a machine with an NVIDIA GPU and a CUDA build of PyTorch.')
        return 0

    upfirdn2d._load_plugin()  # build first so its time is not part of any measurement
    print(f'device: {torch.cuda.get_device_name()}, torch {torch.__version__}, median of {args.repeats} runs')
    f4 = upfirdn2d.setup_filter([1, 3, 3, 1], device='cuda')
    # A 12-tap low-pass like ADA's Hz_geom (sym6); the exact taps do not matter for speed.
    f12 = upfirdn2d.setup_filter(np.hanning(14)[1:-1], device='cuda')
    assert f12.ndim == 1

    resample_shapes = [RESAMPLE_SHAPES[0], RESAMPLE_SHAPES[-1]] if args.quick else RESAMPLE_SHAPES
    augment_shapes = [AUGMENT_SHAPES[0], AUGMENT_SHAPES[-1]] if args.quick else AUGMENT_SHAPES
    layouts = [False, True] if args.channels_last else [False]

    rows = []
    for dtype in (torch.float16, torch.float32):
        for channels_last in layouts:
            for shape in resample_shapes:
                for op_name in ('upsample2d', 'downsample2d'):
                    rows += bench_row(op_name, shape, dtype, f4, '4x4', channels_last, ('fwd', 'fwd+bwd'),
                                      args.repeats)
        for shape in augment_shapes:
            rows += bench_row('upsample2d', shape, dtype, f12, 'sep12', False, ('fwd', 'fwd+bwd'), args.repeats)
            rows += bench_row('down-crop', [shape[0], shape[1], shape[2] * 2, shape[3] * 2], dtype, f12, 'sep12',
                              False, ('fwd', 'fwd+bwd'), args.repeats)

    header = ('op', 'filter', 'shape', 'dtype', 'layout', 'pass', 'cuda ms', 'ref ms', 'speed-up')
    table = [header] + [r[:6] + (f'{r[6]:.3f}', f'{r[7]:.3f}', f'{r[7] / r[6]:.2f}x') for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for k, row in enumerate(table):
        print('  '.join(str(v).ljust(w) if i < 6 else str(v).rjust(w) for i, (v, w) in enumerate(zip(row, widths))))
        if k == 0:
            print('  '.join('-' * w for w in widths))
    return 0


if __name__ == '__main__':
    sys.exit(main())
