"""Wall time of one two-task run on `syn`: inline (one process) vs `workers` local submitit workers, one thread each.

`python benchmarks/bench_sweep.py [--workers 2] [--tasks 1 2 3] [--width 0.25] [--max-train 256] [--epochs 2]`
Each executor runs the same configuration into its own fresh out_dir (nothing cached); the rows are checked equal
(same keys, same numbers) and the wall times, units/hour and the speed-up are printed. On a machine with GPUs the
local workers are spread over them round-robin.
"""
import argparse, os, tempfile, time
os.environ.setdefault('OMP_NUM_THREADS', '1'); os.environ.setdefault('MKL_NUM_THREADS', '1')
from fktnb.sweep import execute, sweep_configs
from fktnb.runs import results, plan


def timed(executor, workers, args):
    out = tempfile.mkdtemp(prefix=f'bench-sweep-{executor}-')
    cfgs = sweep_configs(['two_task'], ['syn'], ['resnet18'], preset='smoke', out_dir=out, tasks=args.tasks,
                         width=args.width, max_train=args.max_train, epochs=args.epochs, threads=1)
    t0 = time.time()
    s = execute(cfgs, executor=executor, workers=workers, threads=1, progress=False, log=lambda m: None, poll_s=0.5)
    wall = time.time() - t0
    assert s['done'] == s['units'] == s['ran'], s
    return wall, s['units'], len(plan(cfgs[0])), results(cfgs[0])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--workers', type=int, default=2)
    p.add_argument('--tasks', type=int, nargs='+', default=[1, 2, 3])
    p.add_argument('--width', type=float, default=0.25)
    p.add_argument('--max-train', type=int, default=256)
    p.add_argument('--epochs', type=int, default=2)
    a = p.parse_args()
    print(f'two_task on syn, tasks {a.tasks}, width {a.width}, max_train {a.max_train}, {a.epochs} epochs; '
          f'{os.cpu_count()} CPU cores; one torch thread per process')
    t_in, n, jobs, r_in = timed('inline', 1, a)
    t_lo, _, _, r_lo = timed('local', a.workers, a)
    same = list(r_in.key) == list(r_lo.key) and r_in.acc.tolist() == r_lo.acc.tolist()
    print(f'{n} units in {jobs} jobs; rows identical: {same}')
    print(f'inline            : {t_in:7.1f} s  ({3600 * n / t_in:7.0f} units/h)')
    print(f'local, {a.workers} workers : {t_lo:7.1f} s  ({3600 * n / t_lo:7.0f} units/h)  speed-up x{t_in / t_lo:.2f}')


if __name__ == '__main__':
    main()
