"""Plot training curves (losses, augment p, each loss plug-in's terms, metrics vs kimg) of run directories to PNG files.

Usage: python -m metrics.plot RUN_DIR [RUN_DIR ...] --out DIR
"""

import argparse
import glob
import json
import os
import re
import sys

# The groups StyleGAN2Loss itself reports under Loss/<group>/...; any other group is a loss plug-in's
# namespace (MixDL reports Loss/mixdl/..., AdaptiveMix Loss/adaptivemix/...) and gets its own panel.
BASELINE_LOSS_GROUPS = ('G', 'D', 'scores', 'signs')


def plugin_namespace(name):
    """'mixdl' for 'Loss/mixdl/G_dist'; None for the baseline's stats and for everything outside Loss/."""
    parts = name.split('/')
    if len(parts) >= 3 and parts[0] == 'Loss' and parts[1] not in BASELINE_LOSS_GROUPS:
        return parts[1]
    return None


# Panels drawn from stats.jsonl besides the plug-in ones: output file stem -> predicate on the stat name.
STAT_PANELS = {
    'losses': lambda name: name.startswith('Loss/') and plugin_namespace(name) is None,
    'augment': lambda name: name == 'Progress/augment',
    'timing': lambda name: name in ('Timing/sec_per_kimg', 'Timing/sec_per_tick'),
}

_SNAPSHOT_KIMG = re.compile(r'network-snapshot-(\d+(?:\.\d{3})?)\.pkl$')  # sub-kimg runs add '.NNN' images


def _read_jsonl(path):
    records = []
    with open(path, 'r', encoding='utf-8') as f:
        for line_number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                # A run killed mid-write leaves a partial last line; the rest of the file is still useful.
                print(f'{path}:{line_number}: skipping a line that is not JSON', file=sys.stderr)
    return records


def load_stat_curves(run_dir):
    """{stat name: ([kimg], [mean])} from <run_dir>/stats.jsonl, x taken from Progress/kimg."""
    path = os.path.join(run_dir, 'stats.jsonl')
    curves = {}
    if not os.path.isfile(path):
        return curves
    for record in _read_jsonl(path):
        kimg = record.get('Progress/kimg', {}).get('mean')
        if kimg is None:
            continue
        for name, value in record.items():
            if isinstance(value, dict) and value.get('mean') is not None and value.get('num', 1) > 0:
                xs, ys = curves.setdefault(name, ([], []))
                xs.append(kimg)
                ys.append(value['mean'])
    return curves


def load_metric_curves(run_dir):
    """{result key: ([kimg], [value])} from <run_dir>/metric-*.jsonl; kimg comes from the snapshot file name."""
    curves = {}
    for path in sorted(glob.glob(os.path.join(run_dir, 'metric-*.jsonl'))):
        for record in _read_jsonl(path):
            match = _SNAPSHOT_KIMG.search(str(record.get('snapshot_pkl', '')))
            if match is None:
                continue
            for key, value in record.get('results', {}).items():
                if isinstance(value, (int, float)):
                    xs, ys = curves.setdefault(key, ([], []))
                    xs.append(float(match.group(1)))
                    ys.append(value)
    for key, (xs, ys) in curves.items():
        order = sorted(range(len(xs)), key=xs.__getitem__)
        curves[key] = ([xs[i] for i in order], [ys[i] for i in order])
    return curves


def plan_figures(run_dirs):
    """{png stem: {series label: (xs, ys)}} for every panel with data; labels carry the run name when there are several runs."""
    figures = {}
    for run_dir in run_dirs:
        run_name = os.path.basename(os.path.normpath(run_dir))
        prefix = f'{run_name}: ' if len(run_dirs) > 1 else ''
        stats = load_stat_curves(run_dir)
        for name, curve in stats.items():
            stems = [stem for stem, wanted in STAT_PANELS.items() if wanted(name)] + [plugin_namespace(name)]
            for stem in filter(None, stems):
                figures.setdefault(stem, {})[prefix + name] = curve
        for key, curve in load_metric_curves(run_dir).items():
            figures.setdefault(f'metric-{key}', {})[prefix + key] = curve
    return figures


def draw_figures(figures, out_dir):
    """Write one PNG per panel; returns the written paths."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for stem, series in sorted(figures.items()):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for label, (xs, ys) in sorted(series.items()):
            ax.plot(xs, ys, marker='o' if stem.startswith('metric-') else None, markersize=3, label=label)
        ax.set_xlabel('kimg')
        ax.set_title(stem)
        ax.grid(alpha=0.3)
        ax.legend(fontsize='small')
        fig.tight_layout()
        path = os.path.join(out_dir, f'{stem}.png')
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m metrics.plot', description=__doc__.splitlines()[0])
    parser.add_argument('run_dirs', nargs='+', metavar='RUN_DIR', help='training run directories')
    parser.add_argument('--out', required=True, metavar='DIR', help='folder for the PNG files')
    args = parser.parse_args(argv)
    missing = [d for d in args.run_dirs if not os.path.isdir(d)]
    if missing:
        print(f'error: not a directory: {", ".join(missing)}', file=sys.stderr)
        return 2
    try:
        import matplotlib  # noqa: F401  (only checking that the optional extra is installed)
    except ImportError:
        print('error: metrics.plot needs matplotlib; install it with `pip install matplotlib` (or `pip install .[plot]`)',
              file=sys.stderr)
        return 1
    figures = plan_figures(args.run_dirs)
    if not figures:
        print('error: no stats.jsonl or metric-*.jsonl records found in the given run directories', file=sys.stderr)
        return 1
    for path in draw_figures(figures, args.out):
        print(path)
    return 0


if __name__ == '__main__':
    sys.exit(main())
