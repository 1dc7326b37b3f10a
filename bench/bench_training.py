"""Training-speed benchmark: sec/kimg and peak memory of the real training loop for several train.py configurations."""

import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time

import click
import numpy as np
import PIL.Image

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_DIR not in sys.path:
    sys.path.insert(0, REPO_DIR)

DEFAULT_CPU_VARIANTS = ['32 --cfg=auto --batch=8', '64 --cfg=auto --batch=8']
DEFAULT_GPU_VARIANTS = ['256 --cfg=paper256', '64 --cfg=fewshot']


def make_synthetic_images(folder, resolution, count=32, seed=0):
    """Smooth random colour fields: enough for timing (the networks do not care what they see)."""
    rng = np.random.RandomState(seed)
    os.makedirs(folder, exist_ok=True)
    for i in range(count):
        coarse = rng.rand(4, 4, 3)
        image = np.kron(coarse, np.ones([resolution // 4, resolution // 4, 1]))
        PIL.Image.fromarray((image * 255).astype(np.uint8)).save(os.path.join(folder, f'{i:03d}.png'))
    return folder


def measure_variant(variant, device, steps, data_root):
    """Run one variant in this process; returns a dict of measurements."""
    import train
    from training import training_loop

    resolution, *options = shlex.split(variant)
    data = make_synthetic_images(os.path.join(data_root, f'res{resolution}'), int(resolution))
    with tempfile.TemporaryDirectory() as outdir:
        ctx = train.main.make_context('train.py', [f'--outdir={outdir}', f'--data={data}', f'--device={device}',
                                                  '--metrics=none', '--workers=1', *options])
        _, config, launch = train.build_training_config(dict(ctx.params), given=lambda name: train._given(ctx, name))
        # Tick 0 is the first minibatch (warm-up); ticks 1 and 2 are `steps` minibatches each, so the
        # measured tick includes its share of the lazy regularisation phases.
        tick_kimg = steps * config.batch_size / 1000
        config.update(run_dir=outdir, total_kimg=config.batch_size / 1000 + 2 * tick_kimg, kimg_per_tick=tick_kimg,
                      image_snapshot_ticks=None, network_snapshot_ticks=None, metrics=[])
        config.device = train.process_device(launch.device_type, local_rank=0)
        from torch_utils import custom_ops
        custom_ops.set_preferred_impl(launch.ops)
        started = time.time()
        training_loop.training_loop(rank=0, **config)
        wall = time.time() - started
        with open(os.path.join(outdir, 'stats.jsonl')) as f:
            ticks = [json.loads(line) for line in f]
    measured = ticks[-1]
    return dict(
        variant=variant,
        device=launch.device_type,
        resolution=int(resolution),
        batch=config.batch_size,
        steps=steps,
        sec_per_kimg=measured['Timing/sec_per_kimg']['mean'],
        images_per_sec=1000 / measured['Timing/sec_per_kimg']['mean'],
        peak_gpu_gb=max(t['Resources/peak_gpu_mem_gb']['mean'] for t in ticks[1:]),
        peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        wall_sec=wall,
    )


@click.command()
@click.option('--variant', 'variants', multiple=True, metavar='"RES [train.py options]"',
              help='One configuration to time, e.g. "256 --cfg=paper256" or "64 --cfg=fewshot --mixdl=1"; repeatable '
                   '[default: 32 and 64 px auto on CPU; 256 px paper256 and 64 px fewshot on GPU]')
@click.option('--device', type=click.Choice(['auto', 'cuda', 'mps', 'cpu']), default='auto', show_default=True)
@click.option('--steps', type=int, default=None, help='Minibatches per measured tick  [default: 4 on CPU, 48 on GPU]')
@click.option('--json-out', type=click.Path(dir_okay=False), default=None, help='Also write the results as JSON lines')
@click.option('--one', hidden=True, default=None)
def main(variants, device, steps, json_out, one):
    """Print sec/kimg and peak memory of the training loop for each variant, each in a fresh process."""
    import train
    device_type = train.choose_device_type(device)  # the same choice train.py makes
    steps = steps or (48 if device_type == 'cuda' else 4)
    if one is not None:
        with tempfile.TemporaryDirectory() as data_root:
            result = measure_variant(one, device, steps, data_root)
        print('RESULT ' + json.dumps(result))
        return

    variants = list(variants) or (DEFAULT_GPU_VARIANTS if device_type == 'cuda' else DEFAULT_CPU_VARIANTS)
    results = []
    for variant in variants:
        # A fresh process per variant keeps peak-memory figures and warm caches separate.
        command = [sys.executable, os.path.abspath(__file__), f'--device={device}', f'--steps={steps}', f'--one={variant}']
        done = subprocess.run(command, capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith('RESULT ')]
        if done.returncode != 0 or not lines:
            tail = (done.stdout + done.stderr).strip().splitlines()[-1:] or ['no output']
            print(f'{variant}: failed ({tail[0]})')
            continue
        results.append(json.loads(lines[-1][len('RESULT '):]))
        print(f'{variant}: {results[-1]["sec_per_kimg"]:.2f} sec/kimg', flush=True)

    header = f'{"variant":<36s} {"device":<6s} {"batch":>5s} {"sec/kimg":>9s} {"img/s":>7s} {"peak GPU GB":>11s} {"peak RSS GB":>11s}'
    print(header)
    print('-' * len(header))
    for r in results:
        print(f'{r["variant"]:<36s} {r["device"]:<6s} {r["batch"]:>5d} {r["sec_per_kimg"]:>9.2f} {r["images_per_sec"]:>7.1f} '
              f'{r["peak_gpu_gb"]:>11.2f} {r["peak_rss_gb"]:>11.2f}')
    if json_out:
        with open(json_out, 'w') as f:
            for r in results:
                f.write(json.dumps(r) + '\n')


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
