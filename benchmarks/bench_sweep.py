"""Wall time of one two-task run on `syn`: inline (one process) vs `workers` local submitit workers, one thread each.

`python benchmarks/bench_sweep.py [--workers 2] [--tasks 1 2 3] [--width 0.25] [--syn-size 2000] [--max-train 1600] [--epochs 2]`
Each executor runs the same configuration into its own fresh out_dir (nothing cached); the rows are checked equal
(same keys, same numbers) and the wall times, units/hour and the speed-up are printed. On a machine with GPUs the
local workers are spread over them round-robin.
"""
import argparse, os, resource, tempfile, time
os.environ.setdefault('OMP_NUM_THREADS', '1'); os.environ.setdefault('MKL_NUM_THREADS', '1')
from fktnb.sweep import execute, sweep_configs
from fktnb.runs import results, plan


def timed(executor, workers, args):
    out = tempfile.mkdtemp(prefix=f'bench-sweep-{executor}-')
    cfgs = sweep_configs(['two_task'], ['syn'], ['resnet18'], preset='smoke', out_dir=out, tasks=args.tasks,
                         width=args.width, max_train=args.max_train, epochs=args.epochs, syn_size=args.syn_size,
                         threads=1)
    who = resource.RUSAGE_SELF if executor == 'inline' else resource.RUSAGE_CHILDREN   # workers: our children
    cpu = lambda: (lambda r: r.ru_utime + r.ru_stime)(resource.getrusage(who))
    t0, c0 = time.time(), cpu()
    s = execute(cfgs, executor=executor, workers=workers, threads=1, progress=False, log=lambda m: None, poll_s=0.5)
    wall, cpu_s = time.time() - t0, cpu() - c0
    assert s['done'] == s['units'] == s['ran'], s
    return wall, cpu_s, s['units'], len(plan(cfgs[0])), results(cfgs[0])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--workers', type=int, default=2)
    p.add_argument('--tasks', type=int, nargs='+', default=[1, 2, 3])
    p.add_argument('--width', type=float, default=0.25)
    p.add_argument('--syn-size', type=int, default=2000, help='images per syn task (train + val)')
    p.add_argument('--max-train', type=int, default=1600)
    p.add_argument('--epochs', type=int, default=2)
    a = p.parse_args()
    print(f'two_task on syn, tasks {a.tasks}, width {a.width}, syn_size {a.syn_size}, max_train {a.max_train}, '
          f'{a.epochs} epochs; '
          f'{os.cpu_count()} CPU cores; one torch thread per process')
    t_in, c_in, n, jobs, r_in = timed('inline', 1, a)
    t_lo, c_lo, _, _, r_lo = timed('local', a.workers, a)
    same = list(r_in.key) == list(r_lo.key) and r_in.acc.tolist() == r_lo.acc.tolist()
    print(f'{n} units in {jobs} jobs; rows identical: {same}')
    print(f'inline            : {t_in:7.1f} s wall, {c_in:7.1f} CPU-s  ({3600 * n / t_in:6.0f} units/h)')
    print(f'local, {a.workers} workers : {t_lo:7.1f} s wall, {c_lo:7.1f} CPU-s of the workers  ({3600 * n / t_lo:6.0f} units/h)'
          f'  speed-up x{t_in / t_lo:.2f}')
    print(f'load average now: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (other processes share them)')


if __name__ == '__main__':
    main()
