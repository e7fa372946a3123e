"""Cost of the usefulness measures (issue 5): scoring ALL earlier subnetworks (one streaming pass over the new task's
data + A and P of every candidate) against one training epoch on the same data, in the same run.

    python benchmarks/bench_measures.py                      # CPU: ResNet-18 width 1/8, 5 earlier tasks, 5,000 images
    python benchmarks/bench_measures.py --width 1 --device cuda

Target: scoring costs at most one training epoch (ratio <= 1).
"""
import argparse, time

import torch

from fktnb.data import ArrayDataset
from fktnb.measures import collect_stats, activation_score, connectivity
from fktnb.models import resnet18
from fktnb.train import fit


def sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--width', type=float, default=1 / 8)
    ap.add_argument('--earlier', type=int, default=4,
                    help='earlier (frozen) subnetworks; at width 1/8 a 5th keeps no filter of its own in 8-filter layers')
    ap.add_argument('--n', type=int, default=5000, help='images of the new task')
    ap.add_argument('--classes', type=int, default=10)
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--repeats', type=int, default=2)
    a = ap.parse_args()
    dev = torch.device(a.device)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (a.n, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, a.classes, (a.n,), generator=g)
    ds = ArrayDataset(images, labels, mean=(0.5,) * 3, std=(0.25,) * 3, n_classes=a.classes)

    net = resnet18(in_size=32, width=a.width, seed=0).to(dev)
    for t in range(1, a.earlier + 1):        # earlier subnetworks: masks are what matter here, not their training
        net.add_task(n_classes=a.classes, share={t - 1} if t % 2 == 0 else set())
        net.prune(0.65)
        net.freeze()
    net.add_task(n_classes=a.classes)        # the new task t
    cands = sorted(net.frozen_tasks)

    def score():
        st = collect_stats(net, ds, device=dev)
        out = {t: (activation_score(net, t, st), connectivity(net, t, st)[0]) for t in cands}
        sync(dev)
        return st, out

    score()                                   # warm-up (caches the dataset on the device, allocator, kernels)
    ts, tc = [], []
    for _ in range(a.repeats):
        t0 = time.perf_counter(); st = collect_stats(net, ds, device=dev); sync(dev)
        t1 = time.perf_counter(); _, out = score()
        ts.append(time.perf_counter() - t1); tc.append(t1 - t0)
    t_score, t_collect = min(ts), min(tc)

    fit(net, ds, epochs=1, lr=0.01, device=dev, progress=False)   # warm-up epoch
    te = []
    for _ in range(a.repeats):
        sync(dev); t0 = time.perf_counter()
        fit(net, ds, epochs=1, lr=0.01, device=dev, progress=False)
        sync(dev); te.append(time.perf_counter() - t0)
    t_epoch = min(te)

    n_pairs = sum(st.sizes[c] * st.sizes[p] for p, c in st.edges)
    print(f'device {dev} ({torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{torch.get_num_threads()} threads"}), '
          f'ResNet-18 width {a.width:g}, {a.n} images 32x32, {a.classes} classes, {len(cands)} earlier subnetworks, '
          f'{len(st.edges)} layer pairs, {n_pairs} filter pairs')
    for t, (A, P) in out.items():
        print(f'  S_{t}: shared {sorted(net.shared(t))}  A = {A:.4f}  P = {P:.4f}')
    print(f'one streaming pass (collect_stats):       {t_collect:8.3f} s')
    print(f'score all {len(cands)} subnetworks (pass + A, P): {t_score:8.3f} s')
    print(f'one training epoch (fit, epochs=1):       {t_epoch:8.3f} s')
    print(f'ratio scoring / epoch:                    {t_score / t_epoch:8.3f}   (target <= 1)')


if __name__ == '__main__':
    main()
