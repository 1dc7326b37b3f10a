"""Training-throughput targets on one GPU, before and after the speed features, plus the profile of the 256 px MixDL step, in one run."""
# Each row is `bench/bench_training.py --one=VARIANT` (the real training loop, fresh process, last
# of two timed ticks after a one-minibatch warm-up tick) with the speed features off ("before":
# --cuda-graphs=0) and on ("after": --cuda-graphs=1). The profile is bench/profile_step.py. Rows run
# in priority order and are skipped, with a note, once the time budget is spent.
#
#     python bench/gpu_targets.py --out=gpu_targets.md          # on a CUDA machine, about 8 minutes
#     python bench/gpu_targets.py --smoke                       # tiny CPU run that checks the script itself

import argparse
import json
import os
import platform
import subprocess
import sys
import time

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO_DIR, 'bench', 'bench_training.py')
PROFILE = os.path.join(REPO_DIR, 'bench', 'profile_step.py')

BEFORE = '--cuda-graphs=0'
AFTER = '--cuda-graphs=1'

# (key, train.py variant, minibatches per timed tick). The targets compare rows of this table.
ROWS = [
    ('fewshot64', '64 --cfg=fewshot', 48),
    ('fewshot256_mixdl', '256 --cfg=fewshot --mixdl=1', 32),
    ('fewshot256', '256 --cfg=fewshot', 32),
    ('paper256', '256 --cfg=paper256 --batch=64', 12),
    ('fewshot64_noaug', '64 --cfg=fewshot --aug=noaug', 48),
]
PROFILE_VARIANT = '256 --cfg=fewshot --mixdl=1'
SMOKE_NET = '--cbase=256 --cmax=32'
SMOKE_ROWS = {'fewshot64': '16 --cfg=fewshot', 'fewshot256_mixdl': '16 --cfg=fewshot --mixdl=1', 'fewshot256': '16 --cfg=fewshot',
              'paper256': '16 --cfg=paper256 --batch=8', 'fewshot64_noaug': '16 --cfg=fewshot --aug=noaug'}


def environment():
    """GPU, driver, torch, CUDA and cuDNN versions (or the CPU), as one line."""
    import torch
    if not torch.cuda.is_available():
        return f'CPU {platform.processor() or platform.machine()} ({os.cpu_count()} cores), torch {torch.__version__}'
    try:
        driver = subprocess.run(['nvidia-smi', '--query-gpu=driver_version', '--format=csv,noheader'], capture_output=True,
                                text=True, timeout=30).stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        driver = 'unknown'
    props = torch.cuda.get_device_properties(0)
    return (f'{props.name} ({props.total_memory / 2**30:.0f} GiB), driver {driver}, torch {torch.__version__}, '
            f'CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}')


def run_row(variant, steps, device, timeout):
    command = [sys.executable, BENCH, f'--device={device}', f'--steps={steps}', f'--one={variant}']
    started = time.time()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO_DIR)
    except subprocess.TimeoutExpired:
        return dict(error=f'timed out after {timeout:.0f} s')
    lines = [line for line in done.stdout.splitlines() if line.startswith('RESULT ')]
    if done.returncode != 0 or not lines:
        tail = (done.stdout + done.stderr).strip().splitlines()[-3:] or ['no output']
        return dict(error=' / '.join(tail))
    result = json.loads(lines[-1][len('RESULT '):])
    result['wall_sec'] = time.time() - started
    result['graph_lines'] = [line for line in done.stdout.splitlines() if line.startswith('CUDA graphs:')]
    return result


def run_profile(args, device, started):
    """The profile of the 256 px MixDL step (bench/profile_step.py) as report lines."""
    variant = f'{SMOKE_ROWS["fewshot256_mixdl"]} {SMOKE_NET}' if args.smoke else PROFILE_VARIANT
    lines = ['', f'Command: `python bench/profile_step.py "{variant}" --device={device}`', '']
    remaining = args.hard_limit - (time.time() - started)
    if time.time() - started > args.budget or remaining < 60:
        return lines + ['Profile skipped: time budget spent.']
    command = [sys.executable, PROFILE, variant, f'--device={device}']
    if args.smoke:
        command += ['--minibatches=2', '--warmup=1']
    try:
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO_DIR, timeout=min(remaining, 200))
        text = done.stdout.strip() if done.returncode == 0 else f'profile failed: {(done.stdout + done.stderr).strip()[-800:]}'
    except subprocess.TimeoutExpired:
        text = 'profile timed out'
    return lines + text.splitlines()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--out', default=None, help='also write the report (Markdown) to this file')
    parser.add_argument('--json', default=None, help='also write every measurement as JSON lines to this file')
    parser.add_argument('--budget', type=float, default=420, help='seconds; measurements that would start later are skipped')
    parser.add_argument('--hard-limit', type=float, default=530, help='seconds; running measurements are stopped here')
    parser.add_argument('--smoke', action='store_true', help='tiny 16 px networks on the CPU: checks the script, not the GPU')
    parser.add_argument('--no-profile', action='store_true', help='skip the profile of the 256 px MixDL step')
    parser.add_argument('--rows', default=None, help=f'comma-separated subset of: {", ".join(key for key, _, _ in ROWS)}')
    args = parser.parse_args(argv)
    started = time.time()
    device = 'cpu' if args.smoke else 'cuda'
    report, records, results = [], [], {}

    def emit(line=''):
        print(line, flush=True)
        report.append(line)

    for line in ['# Training-throughput targets', '', f'Machine: {environment()}', '',
                 f'Command: `python bench/gpu_targets.py{" --smoke" if args.smoke else ""}`; "before" adds {BEFORE}, "after" '
                 f'{AFTER if not args.smoke else "(nothing on the CPU: CUDA graphs need CUDA)"} to train.py\'s options.', '']:
        emit(line)
    emit('| row | train.py options | batch | before sec/kimg | after sec/kimg | before img/s | after img/s | speed-up |')
    emit('|---|---|---|---|---|---|---|---|')
    profile_lines = []
    wanted = None if args.rows is None else set(args.rows.split(','))
    for key, variant, steps in ROWS:
        if wanted is not None and key not in wanted:
            continue
        if key == 'paper256' and not args.no_profile:
            profile_lines = run_profile(args, device, started)
        if args.smoke:
            variant, steps = f'{SMOKE_ROWS[key]} {SMOKE_NET}', 2
        row = {}
        for arm, flag in (('before', BEFORE), ('after', AFTER)):
            elapsed = time.time() - started
            if elapsed > args.budget:
                row[arm] = dict(error=f'skipped: time budget of {args.budget:.0f} s spent')
                continue
            options = variant if args.smoke else f'{variant} {flag}'
            row[arm] = run_row(options, steps, device, timeout=max(args.hard_limit - elapsed, 30))
            records.append({**row[arm], 'row': key, 'arm': arm, 'options': options})
        results[key] = row
        cells = []
        for arm in ('before', 'after'):
            r = row[arm]
            cells.append((f'{r["sec_per_kimg"]:.2f}', f'{r["images_per_sec"]:.1f}') if 'error' not in r else (r['error'][:60], '-'))
        speedup = (f'{row["before"]["sec_per_kimg"] / row["after"]["sec_per_kimg"]:.2f}x'
                   if all('error' not in row[a] for a in row) else '-')
        batch = next((row[a]['batch'] for a in row if 'batch' in row[a]), '-')
        emit(f'| {key} | `{variant}` | {batch} | {cells[0][0]} | {cells[1][0]} | {cells[0][1]} | {cells[1][1]} | {speedup} |')
        for line in row.get('after', {}).get('graph_lines', []):
            emit(f'    {key} after: {line}')

    def value(key, arm):
        r = results.get(key, {}).get(arm, {})
        return r.get('sec_per_kimg')

    emit('')
    emit('| target | before | after | holds (after) |')
    emit('|---|---|---|---|')
    for arm_values, name, goal, check in [
        ([1000 / value('fewshot64', a) if value('fewshot64', a) else None for a in ('before', 'after')],
         '64 --cfg=fewshot batch 4: img/s, at least 4x before', 4, 'ratio'),
        ([1000 / value('fewshot256_mixdl', a) if value('fewshot256_mixdl', a) else None for a in ('before', 'after')],
         '256 --cfg=fewshot --mixdl=1 batch 4: img/s, at least 3x before', 3, 'ratio'),
        ([value('paper256', a) for a in ('before', 'after')], '256 --cfg=paper256 batch 64: sec/kimg, at most 10', 10, 'max'),
        ([value('fewshot256_mixdl', a) / value('fewshot256', a) if value('fewshot256_mixdl', a) and value('fewshot256', a) else None
          for a in ('before', 'after')], 'MixDL cost over the baseline (256 fewshot), at most 1.35', 1.35, 'max'),
    ]:
        before, after = arm_values
        if check == 'ratio':
            holds = None if None in (before, after) else after >= goal * before
        else:
            holds = None if after is None else after <= goal
        fmt = lambda v: '-' if v is None else f'{v:.2f}'  # noqa: E731
        emit(f'| {name} | {fmt(before)} | {fmt(after)} | {"-" if holds is None else ("yes" if holds else "no")} |')
    fewshot_mixdl_after = value('fewshot256_mixdl', 'after')
    if fewshot_mixdl_after:
        emit('')
        emit(f'MixDL 10-shot recipe (150k minibatches of 4 at 256 px): {fewshot_mixdl_after * 4 / 1000 * 1000:.1f} ms a minibatch, '
             f'{fewshot_mixdl_after * 4 * 150:.0f} s = {fewshot_mixdl_after * 4 * 150 / 3600:.1f} h (goal: 2 h, 48 ms a minibatch).')

    for line in profile_lines:
        emit(line)
    emit('')
    emit(f'Total {time.time() - started:.0f} s.')
    if args.out:
        with open(args.out, 'w') as f:
            f.write('\n'.join(report) + '\n')
    if args.json:
        with open(args.json, 'w') as f:
            for record in records:
                f.write(json.dumps(record) + '\n')


if __name__ == '__main__':
    main()
