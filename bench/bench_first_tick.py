"""Time a training run's start-up and first ticks, and the part of that time spent rendering image grids."""
# Runs train.py in this process with the options given after `--`, wraps the loop's grid steps
# (start_image_grid writes reals.png and fakes_init.png, write_fakes_grid a fakes<kimg>.png) with
# timers, and stops when tick --ticks is over, including its grid, snapshot and state, i.e. when
# the next tick's first minibatch is about to be prepared. Tick 0 is one minibatch, so the default
# measures start-up plus what the first tick writes. Usage, from a checkout:
#
#   python bench/bench_first_tick.py -- --outdir=/tmp/first-tick
#   python bench/bench_first_tick.py --repo=/path/to/other/checkout -- --outdir=/tmp/first-tick
#
# --repo times another checkout's train.py with this script (for before/after comparisons). Wall
# and CPU seconds are both printed: on a shared machine the CPU seconds of a one-thread run
# (OMP_NUM_THREADS=1) are the better estimate of the wall time on an idle one.

import argparse
import os
import sys
import time


class _Stop(Exception):
    pass


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--repo', default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        help='checkout whose train.py runs  [default: this one]')
    parser.add_argument('--ticks', type=int, default=0, help='stop once this tick and its snapshot are done  [default: 0]')
    args, train_args = parser.parse_known_args()
    train_args = [arg for arg in train_args if arg != '--']
    sys.path.insert(0, os.path.abspath(args.repo))
    import train  # noqa: E402
    from training import training_loop as loop  # noqa: E402

    timing = dict(start=None, grid_sec=0.0, grid_cpu=0.0, grids=0, depth=0, reported=-1)

    def timed_grid(fn):
        def wrapper(*a, **kw):
            timing['depth'] += 1
            begin, begin_cpu = time.perf_counter(), time.process_time()
            try:
                return fn(*a, **kw)
            finally:
                timing['depth'] -= 1
                if timing['depth'] == 0:  # start_image_grid calls write_fakes_grid: count the outer call only
                    timing['grid_sec'] += time.perf_counter() - begin
                    timing['grid_cpu'] += time.process_time() - begin_cpu
                    timing['grids'] += 1
        return wrapper

    loop.start_image_grid = timed_grid(loop.start_image_grid)
    loop.write_fakes_grid = timed_grid(loop.write_fakes_grid)

    original_loop, original_report, original_prepare = loop.training_loop, loop.report_tick, loop.prepare_minibatch

    def timed_loop(*a, **kw):
        timing['start'], timing['cpu_start'] = time.perf_counter(), time.process_time()
        return original_loop(*a, **kw)

    def report_and_count(progress, *a, **kw):
        result = original_report(progress, *a, **kw)
        timing['reported'] = progress.cur_tick
        return result

    def prepare_or_stop(*a, **kw):
        if timing['reported'] >= args.ticks:  # the tick and everything it writes are done
            timing['end'] = time.perf_counter() - timing['start']
            timing['cpu_end'] = time.process_time() - timing['cpu_start']
            raise _Stop()
        return original_prepare(*a, **kw)

    loop.training_loop, loop.report_tick, loop.prepare_minibatch = timed_loop, report_and_count, prepare_or_stop
    try:
        train.main.main(args=train_args, standalone_mode=False)
    except _Stop:
        pass
    if 'end' not in timing:
        sys.exit('the run ended before the requested tick; lower --ticks or raise --kimg')
    total = timing['end']
    cpu = timing['cpu_end']
    print(f'Start-up to the end of tick {args.ticks}: {total:.1f} s wall, {cpu:.1f} s CPU (this process); '
          f'{timing["grids"]} image grid steps: {timing["grid_sec"]:.1f} s wall ({100 * timing["grid_sec"] / total:.0f}%), '
          f'{timing["grid_cpu"]:.1f} s CPU ({100 * timing["grid_cpu"] / max(cpu, 1e-9):.0f}%).')


if __name__ == '__main__':
    main()
