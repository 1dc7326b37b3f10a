"""Benchmark bias_act: CUDA kernel vs pure-PyTorch reference, forward and forward+backward, on StyleGAN shapes."""

import argparse
import os
import statistics
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from torch_utils.ops import bias_act as ba  # noqa: E402  (needs the repo root on sys.path first)

DEFAULT_SHAPES = ['32,512,8,8', '32,256,64,64', '32,128,256,256']


def time_ms(fn, warmup, repeats):
    """Median wall time of fn() in milliseconds, measured with CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    samples = []
    for _ in range(repeats):
        start = torch.cuda.Event(enable_timing=True)
        stop = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        samples.append(start.elapsed_time(stop))
    return statistics.median(samples)


def bench_case(shape, dtype, impl, channels_last, warmup, repeats):
    x = torch.randn(shape, device='cuda', dtype=dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_(True)
    b = torch.randn(shape[1], device='cuda', dtype=dtype, requires_grad=True)
    dy = torch.randn_like(x)
    kwargs = dict(act='lrelu', gain=2 ** 0.5, clamp=256.0, impl=impl)

    def forward():
        with torch.no_grad():
            ba.bias_act(x, b, **kwargs)

    def forward_backward():
        y = ba.bias_act(x, b, **kwargs)
        torch.autograd.grad(y, [x, b], grad_outputs=dy)

    return time_ms(forward, warmup, repeats), time_ms(forward_backward, warmup, repeats)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--shapes', nargs='+', default=DEFAULT_SHAPES, help='N,C,H,W shapes')
    parser.add_argument('--repeats', type=int, default=20)
    parser.add_argument('--warmup', type=int, default=5)
    parser.add_argument('--channels-last', action='store_true', help='also time channels_last inputs')
    args = parser.parse_args()

    if not torch.cuda.is_available():
        print('bench_bias_act: no CUDA device visible; this benchmark needs a GPU (nothing to do).')
        return 1

    print(f'device: {torch.cuda.get_device_name()}  torch {torch.__version__}  CUDA {torch.version.cuda}')
    print('act=lrelu gain=sqrt2 clamp=256, median of %d runs, times in ms' % args.repeats)
    header = f'{"shape":>18} {"dtype":>8} {"layout":>6} | {"fwd cuda":>9} {"fwd ref":>9} {"x":>5} | ' \
             f'{"f+b cuda":>9} {"f+b ref":>9} {"x":>5} | {"fwd GB/s":>8}'
    print(header)
    print('-' * len(header))
    layouts = [False, True] if args.channels_last else [False]
    for text in args.shapes:
        shape = [int(v) for v in text.split(',')]
        for dtype in (torch.float16, torch.float32):
            for channels_last in layouts:
                fwd_cuda, fb_cuda = bench_case(shape, dtype, 'cuda', channels_last, args.warmup, args.repeats)
                fwd_ref, fb_ref = bench_case(shape, dtype, 'ref', channels_last, args.warmup, args.repeats)
                numel = 1
                for v in shape:
                    numel *= v
                moved_gb = 2 * numel * torch.finfo(dtype).bits / 8 / 1e9  # one read + one write
                print(f'{"x".join(map(str, shape)):>18} {str(dtype)[6:]:>8} {"NHWC" if channels_last else "NCHW":>6} | '
                      f'{fwd_cuda:9.3f} {fwd_ref:9.3f} {fwd_ref / fwd_cuda:5.1f} | '
                      f'{fb_cuda:9.3f} {fb_ref:9.3f} {fb_ref / fb_cuda:5.1f} | {moved_gb / (fwd_cuda / 1e3):8.0f}')
                torch.cuda.empty_cache()
    return 0


if __name__ == '__main__':
    sys.exit(main())
