"""Benchmark: `fit_group` of K learners against K separate `fit` calls (issue 14).

Each learner is in the realistic state of `bench_train_step.py` (slot 2 sharing slot 1, which was trained, pruned by
65% and frozen), deep-copied K times. Both sides train one epoch of the same data with the same settings (SGD,
momentum 0.9, Nesterov); `--seeds one` gives every learner the same batch order (the experiments' case: the group
passes each batch once), `--seeds each` one seed per learner (K different batch orders, stacked). Both sides are
timed in the same run, alternating; the fastest of `--rounds` rounds after a warm-up round is kept. Reported, per
image per learner: wall-clock ms and CPU ms of this process (all its threads; less disturbed than wall time when
other programs share the CPU), each with separate/group (> 1: the group is faster).

    python benchmarks/bench_fit_group.py [--steps 4] [--ks 1,3,5,15] [--widths 0.0625,0.125] [--arch resnet18,vgg16]
                                         [--seeds one|each] [--device cpu|cuda] [--threads N] [--amp bf16]
"""
import argparse, copy, time
import torch
from torch.utils.data import TensorDataset
from fktnb.models import resnet18, vgg16
from fktnb.train import fit, fit_group
from bench_train_step import masked_state


def timed(fn, device):
    "(wall seconds, CPU seconds of this process) of one call of fn() (device synchronised)."
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    sync(); w0, c0 = time.perf_counter(), time.process_time(); fn(); sync()
    return time.perf_counter() - w0, time.process_time() - c0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--steps', type=int, default=4, help='batches per epoch')
    ap.add_argument('--batch', type=int, default=64)
    ap.add_argument('--rounds', type=int, default=2)
    ap.add_argument('--ks', default='1,3,5,15')
    ap.add_argument('--widths', default='0.0625,0.125')
    ap.add_argument('--arch', default='resnet18,vgg16')
    ap.add_argument('--seeds', default='one', choices=['one', 'each'])
    ap.add_argument('--amp', default=None)
    ap.add_argument('--channels-last', action='store_true')
    ap.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    ap.add_argument('--threads', type=int, default=0)
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    torch.manual_seed(0)
    n = a.batch * a.steps
    ds = TensorDataset(torch.randn(n, 3, 32, 32), torch.randint(0, 10, (n,)))
    kw = dict(epochs=1, lr=0.1, batch_size=a.batch, device=dev, progress=False, amp=a.amp, channels_last=a.channels_last)
    print(f'device={dev} threads={torch.get_num_threads()} batch={a.batch} steps/epoch={a.steps} seeds={a.seeds} '
          f'amp={a.amp} channels_last={a.channels_last}, best of {a.rounds} rounds')
    print(f"{'arch':9s} {'width':>6s} {'K':>3s} | {'wall ms/img: group':>18s} {'separate':>9s} {'sep/grp':>7s} | "
          f"{'CPU ms/img: group':>18s} {'separate':>9s} {'sep/grp':>7s}")
    for name, make in [('resnet18', resnet18), ('vgg16', vgg16)]:
        if name not in a.arch.split(','): continue
        for width in map(float, a.widths.split(',')):
            base = masked_state(make, width, dev)
            for K in map(int, a.ks.split(',')):
                group, alone = [copy.deepcopy(base) for _ in range(K)], [copy.deepcopy(base) for _ in range(K)]
                seeds = [0] * K if a.seeds == 'one' else list(range(K))
                tg, ts = [], []
                for r in range(a.rounds + 1):      # round 0 warms up
                    tg.append(timed(lambda: fit_group(group, ds, seed=seeds, **kw), dev))
                    ts.append(timed(lambda: [fit(m, ds, seed=s, **kw) for m, s in zip(alone, seeds)], dev))
                row = []
                for i in (0, 1):                   # wall, CPU
                    g, s = min(t[i] for t in tg[1:]) / (K * n), min(t[i] for t in ts[1:]) / (K * n)
                    row.append(f'{g * 1e3:18.3f} {s * 1e3:9.3f} {s / g:7.2f}')
                print(f'{name:9s} {width:6.4g} {K:3d} | ' + ' | '.join(row), flush=True)


if __name__ == '__main__':
    main()
