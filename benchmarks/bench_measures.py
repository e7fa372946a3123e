"""Cost of the usefulness measures (issue 5): peak memory and time of scoring ALL earlier subnetworks (one pass over
the new task's data + A and P of every candidate), next to one training epoch on the same data.

    python benchmarks/bench_measures.py                                   # full width, 200 classes, both archs
    python benchmarks/bench_measures.py --arch vgg16 --n 512 --size 64    # one arch, Tiny-ImageNet-sized inputs
    python benchmarks/bench_measures.py --width 0.125 --classes 10 --n 5000 --arch resnet18   # the old CPU setting
    python benchmarks/bench_measures.py --device cuda

Each configuration runs in a FRESH subprocess, so its peak memory is that process's own: the peak resident set
size (`resource.getrusage(RUSAGE_SELF).ru_maxrss`, which counts torch's CPU tensors; tracemalloc would not).
It is printed next to the process's resident size after building the network and the data (before the pass), so
the difference is what scoring adds. On CUDA the GPU peak (`torch.cuda.max_memory_allocated`) is printed too.
The 'before' column is what the previous representation (per-class cross-product sums, one [C, Fc, Fp] float64
array per layer pair) held: C * sum(Fc * Fp) * 8 bytes, computed from the graph (its update briefly needed about
twice that). Target: scoring every candidate of a full-width VGG-16 on a 200-class task in < 4 GB; scoring costs
at most about one epoch.
"""
import argparse, json, os, resource, subprocess, sys, time

import torch


def rss_mb():
    "Current resident set size of this process (Linux /proc), MB."
    with open('/proc/self/statm') as f: return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2 ** 20


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # Linux: kB


def sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize()


def one_config(a):
    "Runs in the child: build, score every candidate, then time one training epoch; prints one JSON line."
    from fktnb.sources import ArrayDataset
    from fktnb.measures import collect_stats, activation_score, connectivity
    from fktnb.models import ARCHS
    from fktnb.train import fit
    dev = torch.device(a.device)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (a.n, 3, a.size, a.size), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, a.classes, (a.n,), generator=g)          # random labels over all classes
    first = lambda k: ArrayDataset(images[:k], labels[:k], mean=(0.5,) * 3, std=(0.25,) * 3, n_classes=a.classes)
    ds = first(a.n)
    net = ARCHS[a.arch](in_size=a.size, width=a.width, seed=0).to(dev)
    for s in range(1, a.earlier + 1):        # earlier subnetworks (slots): masks are what matter here, not training
        net.add_task(n_classes=10, share={s - 1} if s % 2 == 0 else set())
        net.prune(0.65)
        net.freeze()
    net.add_task(n_classes=a.classes)        # the new task (the next slot)
    cands = sorted(net.frozen_tasks)
    base_rss = rss_mb()
    if dev.type == 'cuda': torch.cuda.reset_peak_memory_stats(dev); base_gpu = torch.cuda.memory_allocated(dev)

    t0 = time.perf_counter()
    st = collect_stats(net, ds, device=dev)
    sync(dev); t1 = time.perf_counter()
    scores = {s: (activation_score(net, s, st), connectivity(net, s, st)[0]) for s in cands}
    sync(dev); t2 = time.perf_counter()
    pairs = sum(st.sizes[c] * st.sizes[p] for p, c in st.edges)
    before_gb = a.classes * pairs * 8 / 2 ** 30
    out = dict(arch=a.arch, width=a.width, n=a.n, size=a.size, classes=a.classes, earlier=len(cands),
               layer_pairs=len(net.graph), filter_pairs=pairs, total_filters=st.total_filters,
               stored_filters=int(len(st._kept_cols)), stats_mb=st.nbytes / 2 ** 20, before_gb=before_gb,
               base_rss_mb=base_rss, peak_rss_mb=peak_rss_mb(), t_pass=t1 - t0, t_scores=t2 - t1,
               scores={str(s): v for s, v in scores.items()}, device=str(dev), threads=torch.get_num_threads())
    if dev.type == 'cuda': out['gpu_peak_mb'] = (torch.cuda.max_memory_allocated(dev) - base_gpu) / 2 ** 20
    del st

    # one epoch over the same samples: a full epoch when it is short, else timed steps scaled to the epoch
    steps = -(-a.n // 64)
    timed = ds if a.epoch_steps <= 0 or steps <= a.epoch_steps else first(64 * a.epoch_steps)
    fit(net, first(64), epochs=1, lr=0.01, device=dev, progress=False)   # warm-up
    sync(dev); t0 = time.perf_counter()
    fit(net, timed, epochs=1, lr=0.01, device=dev, progress=False)
    sync(dev); te = time.perf_counter() - t0
    out['t_epoch'] = te * a.n / len(timed)
    out['epoch_estimated'] = len(timed) < a.n
    print('RESULT ' + json.dumps(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--arch', choices=['resnet18', 'vgg16', 'both'], default='both')
    ap.add_argument('--width', type=float, default=1.0)
    ap.add_argument('--earlier', type=int, default=3, help='earlier (frozen) subnetworks to score')
    ap.add_argument('--n', type=int, default=384, help='samples of the new task')
    ap.add_argument('--size', type=int, default=32, help='input size (Tiny ImageNet: 64)')
    ap.add_argument('--classes', type=int, default=200)
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--epoch-steps', type=int, default=0,
                    help='time only this many training batches and scale to the epoch (0: a full epoch)')
    ap.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child: return one_config(a)
    rows = []
    for arch in (['resnet18', 'vgg16'] if a.arch == 'both' else [a.arch]):
        cmd = [sys.executable, __file__, '--child', '--arch', arch] + [x for k, v in vars(a).items()
               if k not in ('arch', 'child') for x in (f'--{k.replace("_", "-")}', str(v))]
        p = subprocess.run(cmd, capture_output=True, text=True)
        line = [l for l in p.stdout.splitlines() if l.startswith('RESULT ')]
        if p.returncode or not line: sys.exit(f'{arch} failed:\n{p.stdout}\n{p.stderr}')
        rows.append(json.loads(line[0][7:]))
    r0 = rows[0]
    print(f"device {r0['device']} ({r0['threads']} threads), width {a.width:g}, {a.n} samples {a.size}x{a.size}, "
          f"{a.classes} classes (random labels), {r0['earlier']} earlier subnetworks scored; peak = ru_maxrss of a "
          f"fresh process per row; 'held' = stored activations + sums + cached class-averaged |r|")
    print(f"{'arch':9} {'pairs':>5} {'filter pairs':>12} {'before (GB)':>11} {'held (MB)':>9} {'RSS before pass':>15} "
          f"{'peak RSS':>9} {'pass':>7} {'A,P all':>7} {'epoch':>8}")
    for r in rows:
        gpu = f"  GPU peak {r['gpu_peak_mb']:.0f} MB" if 'gpu_peak_mb' in r else ''
        print(f"{r['arch']:9} {r['layer_pairs']:5d} {r['filter_pairs']:12,d} {r['before_gb']:11.2f} {r['stats_mb']:9.0f} "
              f"{r['base_rss_mb']:12.0f} MB {r['peak_rss_mb']:6.0f} MB {r['t_pass']:6.1f}s {r['t_scores']:6.1f}s "
              f"{r['t_epoch']:7.1f}s{'*' if r['epoch_estimated'] else ''}{gpu}")
    if any(r['epoch_estimated'] for r in rows): print('* epoch time estimated from timed training steps')


if __name__ == '__main__':
    main()
