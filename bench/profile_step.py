"""Profile of the training step: per phase, wall and device time, kernels, host-device syncs and FLOPs, for one train.py configuration."""
# The networks, loss, phases and minibatches come from train.py's own configuration and the
# training loop's own step functions (prepare_minibatch, train_minibatch, adjust_augment_p), so
# what is profiled is what users run. Three passes over the same minibatch schedule:
#   1. timing: wall-clock seconds per minibatch (device synchronised only at both ends);
#   2. torch.profiler: host and device time, kernel launches and synchronising CUDA calls per phase;
#   3. counting: FLOPs (torch.utils.flop_counter) and host reads of device tensors
#      (torch_utils.sync_free) per phase; these two add host overhead, so they are not timed.

import argparse
import collections
import contextlib
import inspect
import json
import math
import os
import shlex
import sys
import tempfile
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO_DIR, os.path.join(REPO_DIR, 'bench')]

import bench_training  # noqa: E402
import train  # noqa: E402
from torch_utils import sync_free  # noqa: E402
from torch_utils import training_stats  # noqa: E402
from training import training_loop as tl  # noqa: E402

# Dense peak throughput in TFLOP/s used for MFU, from NVIDIA's H100/H200 SXM datasheets: fp32 on
# CUDA cores, TF32 and bf16/fp16 on tensor cores (without sparsity). H100 and H200 share the compute.
PEAK_TFLOPS = {'H100': dict(fp32=67.0, tf32=494.7, bf16=989.4), 'H200': dict(fp32=67.0, tf32=494.7, bf16=989.4)}

# CUDA runtime calls after which the host has waited for the device.
SYNC_CALLS = ('cudaStreamSynchronize', 'cudaDeviceSynchronize', 'cudaEventSynchronize', 'cudaMemcpy')
OTHER = 'other'

#----------------------------------------------------------------------------

class Run:
    """One process's training set-up, built from a train.py command line by the loop's own steps."""

    def __init__(self, variant, device, data_root, extra_options=()):
        resolution, *options = shlex.split(variant)
        data = bench_training.make_synthetic_images(os.path.join(data_root, f'res{resolution}'), int(resolution))
        ctx = train.main.make_context('train.py', [f'--outdir={data_root}', f'--data={data}', f'--device={device}',
                                                  '--metrics=none', '--workers=1', *options, *extra_options])
        _, config, launch = train.build_training_config(dict(ctx.params), given=lambda name: train._given(ctx, name))
        defaults = {name: p.default for name, p in inspect.signature(tl.training_loop).parameters.items()}
        self.config = config = dnnlib_merge(defaults, config)
        from torch_utils import custom_ops
        custom_ops.set_preferred_impl(launch.ops)
        self.device = device = train.process_device(launch.device_type, local_rank=0)
        tl.setup_process(config.random_seed, 1, 0, config.cudnn_benchmark, config.allow_tf32)
        training_stats.init_multiprocessing(rank=0, sync_device=None)
        self.training_set, self.label_table = tl.open_training_set(config.training_set_kwargs, device)
        self.nets = tl.build_networks(tl.network_sizes(self.training_set), config.G_kwargs, config.D_kwargs, device,
                                      config.augment_kwargs, config.augment_p, config.ada_target)
        self.ada_stats = tl.ada_collector(self.nets.augment_pipe, config.ada_target)
        self.loss, self.extras = tl.build_loss(config.loss_kwargs, self.nets, device)
        self.optimizers, self.phases = tl.build_phases(self.loss, self.nets, self.extras, config.G_opt_kwargs,
                                                       config.D_opt_kwargs, config.G_reg_interval, config.D_reg_interval, device)
        self.batch_per_process = tl.split_batch(config.batch_size, config.batch_gpu, 1)
        self.batches = tl.data_iterator(self.training_set, config.data_loader_kwargs, self.batch_per_process,
                                        random_seed=config.random_seed)
        self.progress = tl.Progress()
        self.resolution = int(resolution)
        self.cycle = math.lcm(*[phase.interval for phase in self.phases])  # minibatches until the schedule repeats
        self._wrap_phases()

    def _wrap_phases(self):
        """Label each phase's share of the work (record_function for the profiler, a callback for the counters)."""
        self.phase_hook = None
        original = self.loss.accumulate_gradients

        def accumulate_gradients(phase, **kwargs):
            hook = self.phase_hook(phase) if self.phase_hook is not None else contextlib.nullcontext()
            with torch.autograd.profiler.record_function('phase:' + phase), hook:
                return original(phase=phase, **kwargs)
        self.loss.accumulate_gradients = accumulate_gradients

    def minibatch(self):
        """One minibatch as training_loop() runs it between ticks."""
        config = self.config
        minibatch = tl.prepare_minibatch(*next(self.batches), self.label_table, len(self.phases), self.nets.G.z_dim,
                                         config.batch_gpu, self.device)
        tl.train_minibatch(self.loss, self.phases, self.nets, minibatch, self.progress, config.batch_size, 1,
                           config.ema_kimg, config.ema_rampup)
        if self.ada_stats is not None and self.progress.batch_idx % config.ada_interval == 0:
            tl.adjust_augment_p(self.nets.augment_pipe, self.ada_stats, self.progress, config.ada_target,
                                config.ada_interval, config.ada_kimg, config.batch_size)

    def synchronise(self):
        if self.device.type == 'cuda':
            torch.cuda.synchronize(self.device)


def dnnlib_merge(defaults, config):
    import dnnlib
    merged = dnnlib.EasyDict({k: v for k, v in defaults.items() if v is not inspect.Parameter.empty})
    merged.update(config)
    return merged

#----------------------------------------------------------------------------

def time_minibatches(run, count):
    run.synchronise()
    started = time.perf_counter()
    for _ in range(count):
        run.minibatch()
    run.synchronise()
    return (time.perf_counter() - started) / count


def _phase_ranges(events):
    """[(start_us, end_us, label)] of the labelled ranges on the main thread, innermost labels last."""
    labels = {'data_fetch': 'data_fetch', 'Gema': 'Gema'}
    ranges = []
    for event in events:
        name = event.name
        if name.startswith('phase:'):
            ranges.append((event.time_range.start, event.time_range.end, name[len('phase:'):]))
        elif name.endswith('_opt') or name in labels:
            ranges.append((event.time_range.start, event.time_range.end, labels.get(name, name)))
    return sorted(ranges)


def _label_of(time_us, ranges):
    for start, end, label in ranges:
        if start <= time_us <= end:
            return label
    return OTHER


def profile_minibatches(run, count):
    """Per-phase host time, device time, kernels and synchronising calls over `count` minibatches, and the top kernels."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if run.device.type == 'cuda':
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    run.synchronise()
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(count):
            run.minibatch()
        run.synchronise()
    events = prof.events()
    ranges = _phase_ranges(events)
    table = collections.defaultdict(lambda: dict(host_ms=0.0, device_ms=0.0, kernels=0, syncs=0, scalar_reads=0))
    for start, end, label in ranges:
        table[label]['host_ms'] += (end - start) / 1000
    kernels = collections.Counter()
    kernel_ms = collections.Counter()
    top_ops = collections.Counter()
    for event in events:
        label = _label_of(event.time_range.start, ranges)
        if event.name in SYNC_CALLS:
            table[label]['syncs'] += 1
        if event.name == 'aten::_local_scalar_dense':  # .item(), bool(), float(), int() of a tensor
            table[label]['scalar_reads'] += 1
        for kernel in getattr(event, 'kernels', []) or []:
            table[label]['kernels'] += 1
            table[label]['device_ms'] += kernel.duration / 1000
            kernels[kernel.name] += 1
            kernel_ms[kernel.name] += kernel.duration / 1000
        if run.device.type != 'cuda' and event.name.startswith('aten::'):
            top_ops[event.name] += event.self_cpu_time_total / 1000
    if run.device.type == 'cuda' and not kernels:
        # Kernels not attached to their launching ops by this torch version: list them without a phase.
        for event in events:
            if event.device_type == torch.autograd.DeviceType.CUDA:
                kernels[event.name] += 1
                kernel_ms[event.name] += event.time_range.elapsed_us() / 1000
                table[OTHER]['kernels'] += 1
                table[OTHER]['device_ms'] += event.time_range.elapsed_us() / 1000
    # The host-time column counts nested labels twice (a phase's _opt range is outside its phase: range, so not here).
    return table, kernels, kernel_ms, top_ops


class FlopCount(TorchDispatchMode):
    """Adds up FLOPs of every aten op with a formula in torch.utils.flop_counter (2 per multiply-add), backward included.

    torch's FlopCounterMode does the same but also tracks modules with hooks that torch.autograd.grad
    (R1, path length) does not support.
    """

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def count_flops_and_reads(run, count):
    """FLOPs and host reads of device tensors per phase over `count` minibatches (FlopCount, sync_free guard)."""
    flops = collections.Counter()
    reads = collections.Counter()

    @contextlib.contextmanager
    def hook(phase):
        with FlopCount() as counter, sync_free.count_device_reads() as counted:
            yield
        flops[phase] += counter.total
        reads[phase] += len(counted.reads)
    run.phase_hook = hook
    try:
        with sync_free.count_device_reads(host_tensors=sync_free.optimizer_host_tensors(run.optimizers.values())) as outer:
            for _ in range(count):
                run.minibatch()
    finally:
        run.phase_hook = None
    reads[OTHER] = len(outer.reads) - sum(reads.values())
    return flops, reads

#----------------------------------------------------------------------------

def count_flops_on_meta(variant, extra_options=()):
    """FLOPs of each phase for one chunk, from shapes alone (networks on the meta device, no augmentation).

    Returns (G forward per image, D forward per image, batch, [(minibatch index, phase, interval, FLOPs)])
    for minibatches 0 and 1, so plug-ins that treat every n-th minibatch differently (MixDL) show both kinds.
    """
    with tempfile.TemporaryDirectory() as data_root:
        resolution, *options = shlex.split(variant)
        data = bench_training.make_synthetic_images(os.path.join(data_root, 'img'), int(resolution), count=4)
        ctx = train.main.make_context('train.py', [f'--outdir={data_root}', f'--data={data}', '--device=cpu', '--metrics=none',
                                                  '--workers=0', *options, '--aug=noaug', *extra_options])
        _, config, _ = train.build_training_config(dict(ctx.params), given=lambda name: train._given(ctx, name))
        config = dnnlib_merge({name: p.default for name, p in inspect.signature(tl.training_loop).parameters.items()}, config)
        training_set, _ = tl.open_training_set(config.training_set_kwargs, 'cpu')
    meta = torch.device('meta')
    nets = tl.build_networks(tl.network_sizes(training_set), config.G_kwargs, config.D_kwargs, meta)
    loss, extras = tl.build_loss(config.loss_kwargs, nets, meta)
    _, phases = tl.build_phases(loss, nets, extras, config.G_opt_kwargs, config.D_opt_kwargs, config.G_reg_interval,
                                config.D_reg_interval, meta)
    batch, res = config.batch_gpu, int(resolution)
    c = torch.zeros([batch, nets.G.c_dim], device=meta)
    z = torch.zeros([batch, nets.G.z_dim], device=meta)
    img = torch.zeros([batch, nets.G.img_channels, res, res], device=meta)
    with torch.no_grad(), FlopCount() as g_count:
        nets.G(z[:1], c[:1])
    with torch.no_grad(), FlopCount() as d_count:
        nets.D(img[:1], c[:1])
    rows = []
    for batch_idx in (0, 1):
        loss.begin_minibatch(batch_idx)
        for phase in phases:
            for module in phase.modules:
                module.requires_grad_(True)
            with FlopCount() as counter:
                loss.accumulate_gradients(phase=phase.name, real_img=img, real_c=c, gen_z=z, gen_c=c, gain=phase.interval)
            for module in phase.modules:
                module.requires_grad_(False)
            rows.append((batch_idx, phase.name, phase.interval, counter.total))
    return g_count.total, d_count.total, batch, rows


def format_meta_flops(variant, g_flops, d_flops, batch, rows):
    lines = [f'## FLOPs of `{variant}` (shapes only, no augmentation; 2 FLOPs per multiply-add)', '',
             f'G forward {g_flops / 1e9:.1f} GFLOP/image, D forward {d_flops / 1e9:.1f} GFLOP/image; chunks of {batch} images', '',
             '| minibatch | phase | every | TFLOP per run | TFLOP per minibatch, averaged |', '|---|---|---|---|---|']
    per_minibatch = collections.Counter()
    for batch_idx, phase, interval, flops in rows:
        per_minibatch[batch_idx] += flops / interval
        lines.append(f'| {batch_idx} | {phase} | {interval} | {flops / 1e12:.3f} | {flops / interval / 1e12:.3f} |')
    mean = sum(per_minibatch.values()) / len(per_minibatch)
    lines += ['', 'Per minibatch (regularisers at their average share): ' +
              ', '.join(f'minibatch {k}: {v / 1e12:.2f} TFLOP' for k, v in per_minibatch.items()) +
              f'; mean {mean / 1e12:.2f} TFLOP = {mean / batch / 1e12:.3f} TFLOP/image']
    return '\n'.join(lines)


def device_description(device):
    if device.type != 'cuda':
        return f'CPU ({torch.get_num_threads()} threads), torch {torch.__version__}'
    props = torch.cuda.get_device_properties(device)
    driver = 'unknown'
    try:
        import subprocess
        driver = subprocess.run(['nvidia-smi', '--query-gpu=driver_version', '--format=csv,noheader'], capture_output=True,
                                text=True, timeout=30).stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        pass
    return f'{props.name}, driver {driver}, torch {torch.__version__}, CUDA {torch.version.cuda}'


def default_peaks(device):
    if device.type != 'cuda':
        return None
    name = torch.cuda.get_device_name(device)
    for key, peaks in PEAK_TFLOPS.items():
        if key in name:
            return peaks
    return None


def profile(variant, device='auto', minibatches=None, warmup=None, peak_tflops=None, extra_options=(), top=12):
    """Build the run, warm up, then time, profile and count; returns a JSON-able report."""
    with tempfile.TemporaryDirectory() as data_root:
        run = Run(variant, device, data_root, extra_options)
        count = minibatches or run.cycle
        for _ in range(warmup if warmup is not None else run.cycle):
            run.minibatch()
        sec_per_minibatch = time_minibatches(run, count)
        table, kernels, kernel_ms, top_ops = profile_minibatches(run, count)
        flops, reads = count_flops_and_reads(run, count)
    images = count * run.config.batch_size
    total_flops = sum(flops.values())
    peaks = dict(peak_tflops) if peak_tflops else default_peaks(run.device)
    achieved = total_flops / count / sec_per_minibatch / 1e12
    report = dict(
        variant=variant, extra_options=list(extra_options), device=device_description(run.device), minibatches=count,
        batch=run.config.batch_size, sec_per_minibatch=sec_per_minibatch, images_per_sec=run.config.batch_size / sec_per_minibatch,
        sec_per_kimg=sec_per_minibatch / run.config.batch_size * 1000,
        flops_per_image=total_flops / images, flops_per_minibatch=total_flops / count, achieved_tflops=achieved,
        mfu={kind: achieved / peak for kind, peak in peaks.items()} if peaks else None, peak_tflops=peaks,
        phases={label: dict(values, flops=flops.get(label, 0) / count, device_reads=reads.get(label, 0) / count,
                            **{key: values[key] / count for key in ('host_ms', 'device_ms', 'kernels', 'syncs', 'scalar_reads')})
                for label, values in table.items()},
        top_kernels=[dict(name=name, calls=kernels[name] / count, ms=ms / count) for name, ms in kernel_ms.most_common(top)],
        top_cpu_ops=[dict(name=name, ms=ms / count) for name, ms in top_ops.most_common(top)],
    )
    for label in flops:
        report['phases'].setdefault(label, dict(host_ms=0, device_ms=0, kernels=0, syncs=0, scalar_reads=0,
                                                flops=flops[label] / count, device_reads=reads.get(label, 0) / count))
    return report


def format_report(report):
    lines = [f'## {report["variant"]} {" ".join(report["extra_options"])}'.rstrip(), '',
             f'{report["device"]}; {report["minibatches"]} minibatches of {report["batch"]} after warm-up',
             f'{report["sec_per_minibatch"] * 1000:.1f} ms/minibatch, {report["images_per_sec"]:.1f} img/s, '
             f'{report["sec_per_kimg"]:.2f} sec/kimg; {report["flops_per_image"] / 1e9:.2f} GFLOP/image '
             f'({report["flops_per_minibatch"] / 1e12:.3f} TFLOP/minibatch), achieved {report["achieved_tflops"]:.2f} TFLOP/s'
             + ('; MFU ' + ', '.join(f'{v * 100:.1f}% of {k} {report["peak_tflops"][k]:.0f}' for k, v in report['mfu'].items())
                if report['mfu'] else ''), '',
             '| phase | host ms | device ms | kernels | sync calls | scalar reads | device reads | GFLOP |',
             '|---|---|---|---|---|---|---|---|']
    for label, v in sorted(report['phases'].items(), key=lambda item: -item[1]['host_ms']):
        lines.append(f'| {label} | {v["host_ms"]:.2f} | {v["device_ms"]:.2f} | {v["kernels"]:.0f} | {v["syncs"]:.1f} | '
                     f'{v["scalar_reads"]:.1f} | {v["device_reads"]:.1f} | {v["flops"] / 1e9:.2f} |')
    lines.append('(per minibatch; host ms of nested labels are not added to their parents)')
    if report['top_kernels']:
        lines += ['', '| top kernels | calls | ms |', '|---|---|---|']
        lines += [f'| {k["name"][:90]} | {k["calls"]:.1f} | {k["ms"]:.3f} |' for k in report['top_kernels']]
    if report['top_cpu_ops']:
        lines += ['', '| top CPU ops (self time) | ms |', '|---|---|']
        lines += [f'| {k["name"]} | {k["ms"]:.2f} |' for k in report['top_cpu_ops']]
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('variant', help='"RES [train.py options]", e.g. "256 --cfg=fewshot --mixdl=1"')
    parser.add_argument('--device', default='auto', choices=['auto', 'cuda', 'cpu'])
    parser.add_argument('--minibatches', type=int, default=None, help='profiled minibatches [default: one lazy-regularisation cycle]')
    parser.add_argument('--warmup', type=int, default=None, help='untimed minibatches first [default: one cycle]')
    parser.add_argument('--peak', action='append', default=[], metavar='KIND=TFLOPS',
                        help='peak for MFU, repeatable (e.g. bf16=989.4) [default on H100/H200: fp32=67, tf32=494.7, bf16=989.4]')
    parser.add_argument('--option', action='append', default=[], help='extra train.py option, repeatable (e.g. --cuda-graphs=1)')
    parser.add_argument('--json', default=None, help='also append the report as one JSON line to this file')
    parser.add_argument('--meta-flops', action='store_true', help='only count FLOPs per phase from shapes (meta device, '
                        'any size on any machine); nothing is timed')
    args = parser.parse_args(argv)
    if args.meta_flops:
        print(format_meta_flops(args.variant, *count_flops_on_meta(args.variant, args.option)), flush=True)
        return
    peaks = {}
    for item in args.peak:
        kind, _, value = item.partition('=')
        peaks[kind] = float(value)
    report = profile(args.variant, args.device, args.minibatches, args.warmup, peaks or None, args.option)
    print(format_report(report), flush=True)
    if args.json:
        with open(args.json, 'a') as f:
            f.write(json.dumps(report) + '\n')


if __name__ == '__main__':
    main()
