"""One GPU check that settles fktnb's speed defaults (issue 21): `fit` / `fit_group` throughput and MFU, peak memory,
and the wall time of one two-task unit, written to benchmarks/results/<device>.md and .json.

    PYTHONPATH=. python3 benchmarks/gpu_check.py                  # on a GPU machine: <= 8 minutes (--budget-s 420)
    PYTHONPATH=. python3 benchmarks/gpu_check.py --device cpu --quick --out /tmp/check   # the same code path, < 1 min

On a lent GPU machine (the `device` tool: the files come back from $OUT), with a limit that leaves time to rerun:
    PYTHONPATH=. timeout 500 python3 benchmarks/gpu_check.py --out "$OUT"
then copy $OUT/<device>.md and .json to benchmarks/results/ and commit them.

Needs torch (2.11 or later), torchvision, numpy and pandas only: no install step, none of fktnb's other dependencies
(fastcore, papermill, nbdev, submitit, matplotlib, seaborn, tqdm), no internet.

What it measures, in the order of what settles most per second of GPU time (every measurement is time-boxed and the
files are rewritten after each one, so a timeout still leaves everything measured so far):
1. Training throughput at 32 px, the bulk of the paper's images: ResNet-18 and VGG-16 at full width, batch 64, for
   `fit` and `fit_group` with K = 1, 5, 15 learners (each with its own batches, as a job's trials), in float32 (TF32
   convolutions, PyTorch's default) and bf16 autocast, with and without channels_last: the very step the training
   runs (`fktnb.train.time_training`), learners in slot 2 sharing a pruned, frozen slot 1.
2. The wall time of one full-width two-task unit (`alone`: train, prune, finetune, freeze, test) on a synthetic
   task of the paper's image count (PMNIST's 54,000 training images, 10,000 test), for a few epochs; extrapolated
   to the paper's 60 + 20 epochs from the measured seconds per epoch.
3. The same grid at 64 px (TIC's Tiny ImageNet task).
4. Compiled steps (`compile=True`: torch.compile, CUDA graphs) for the best eager variant of each architecture and
   trainer, while the budget lasts (a compile takes a minute or so); a second compiled run on new learners checks
   that the graphs are reused (its warm-up is short) rather than compiled again.
MFU = analytic training FLOPs per image (3 x the forward convolutions' and linear layers' multiply-adds x 2) x
images/s / the device's peak for the dtype (a table of NVIDIA data-sheet dense peaks by device name; "unknown
peak" otherwise). float32 rows use the TF32 peak: PyTorch runs convolutions in TF32 by default on Ampere and later.

`--quick` (for a CPU, tested in CI): the same code on a smaller grid (both trainers with K = 2 at 32 px, `fit` at
64 px), width 1/16, batch 8, two steps per measurement, the compiled variant with the `aot_eager` backend
(inductor's C++ build takes minutes on a small CPU), a 160-image unit.
"""
import argparse, functools, json, os, platform, re, sys, time, traceback
from pathlib import Path
import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))      # a bare checkout: fktnb from the repository
from fktnb.models import get_arch                                   # noqa: E402
from fktnb.train import learn_tasks, time_training                  # noqa: E402
from fktnb.datasets import ArrayDataset                             # noqa: E402

# Dense peak TFLOP/s from NVIDIA's data sheets (no sparsity), by a substring of torch.cuda.get_device_name.
# 'float32' is the TF32 tensor-core peak (convolutions run in TF32 by default), 'fp32' the plain CUDA-core one.
PEAKS = [('H200', dict(float32=494.7, bf16=989.4, fp32=66.9)),
         ('H100 PCIe', dict(float32=378.0, bf16=756.0, fp32=51.2)),
         ('H100', dict(float32=494.7, bf16=989.4, fp32=66.9)),
         ('A100', dict(float32=156.0, bf16=312.0, fp32=19.5)),
         ('L40S', dict(float32=183.0, bf16=362.1, fp32=91.6)),
         ('L4', dict(float32=60.0, bf16=121.0, fp32=30.3)),
         ('A10', dict(float32=62.5, bf16=125.0, fp32=31.2)),
         ('RTX 4090', dict(float32=82.6, bf16=165.2, fp32=82.6))]
PAPER_UNIT = dict(train=54_000, val=6_000, test=10_000, n_classes=10, epochs=60, finetune_epochs=20)   # MPC's PMNIST


def peak_tflops(name: str, dtype: str):
    "The device's dense peak for `dtype` ('float32' / 'bf16') in TFLOP/s, or None (unknown peak)."
    for key, peaks in PEAKS:
        if key in name: return peaks[dtype]
    return None


def device_label(dev: torch.device) -> str:
    if dev.type == 'cuda': return torch.cuda.get_device_name(dev)
    try:
        with open('/proc/cpuinfo') as f: model = next(l.split(':', 1)[1].strip() for l in f if l.startswith('model name'))
    except (OSError, StopIteration): model = platform.processor() or 'cpu'
    return f'{model}, {torch.get_num_threads()} threads'


def slug(dev: torch.device, name: str) -> str:
    return 'cpu' if dev.type == 'cpu' else re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')


@functools.lru_cache(maxsize=None)
def forward_flops(arch: str, width: float, px: int) -> float:
    "Multiply-adds x 2 of one image's forward pass through the convolutions and linear layers (analytic, from shapes)."
    net = get_arch(arch)(in_size=px, width=width); net.add_task(10)
    total = [0.0]
    def hook(m, args, out):
        if isinstance(m, nn.Conv2d):
            total[0] += 2 * out[0].numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        else: total[0] += 2 * m.in_features * m.out_features
    hooks = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad(): net(torch.randn(2, 3, px, px))      # two images: BatchNorm needs more than one value
    for h in hooks: h.remove()
    return total[0] / 2


def learner(arch: str, width: float, px: int, seed: int):
    "A learner in slot 2 sharing slot 1 (pruned 65%, frozen): row masks and restores in every step, as in a run."
    net = get_arch(arch)(in_size=px, width=width, seed=seed)
    net.add_task(10); net.prune(0.65); net.freeze(); net.add_task(10, share={1})
    return net


class Check:
    "The measurements, the time budget and the two result files (rewritten after every measurement)."
    def __init__(self, args):
        self.args, self.t0 = args, time.time()
        self.dev = torch.device(args.device)
        self.name = device_label(self.dev)
        self.out = Path(args.out); self.out.mkdir(parents=True, exist_ok=True)
        self.stem = self.out / slug(self.dev, self.name)
        self.quick = args.quick
        self.rows, self.unit, self.skipped, self.errors, self.pool = [], None, [], [], {}
        self.env = dict(device=self.name, device_type=self.dev.type, torch=torch.__version__, python=platform.python_version(),
                        cuda=torch.version.cuda, quick=self.quick, budget_s=args.budget_s,
                        tf32_cudnn=torch.backends.cudnn.allow_tf32, tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
                        cudnn_benchmark=torch.backends.cudnn.benchmark, batch=args.batch,
                        peak_tflops={d: peak_tflops(self.name, d) for d in ('float32', 'bf16')} if self.dev.type == 'cuda' else None,
                        started=time.strftime('%Y-%m-%d %H:%M:%S'))

    def left(self) -> float: return self.args.budget_s - (time.time() - self.t0)

    def learners(self, arch, width, K):
        "K learners of `arch`, built once and reused by every measurement (building 15 full-width VGG-16s takes a while)."
        pool = self.pool.setdefault(arch, [])
        pool += [learner(arch, width, 32, seed) for seed in range(len(pool), K)]   # in_size is nominal: 64 px run too
        return pool[:K]

    def measure(self, arch, px, dtype, channels_last, K, compile, group=None, note=''):
        "One throughput measurement (a row), or a skipped / failed one."
        a, width = self.args, (1 / 16 if self.quick else 1.0)
        row = dict(arch=arch, px=px, dtype=dtype, channels_last=channels_last, trainer='fit' if not group else f'fit_group K={K}',
                   K=K, compile=compile, note=note)
        if self.left() < (120 if compile and not self.quick else 2):    # a compile (and its check) takes a minute or two
            self.skipped.append(row | dict(why='time budget')); return None
        try:
            nets = self.learners(arch, width, K)
            t = time_training(nets, a.batch, px, self.dev, 'bf16' if dtype == 'bf16' else None, channels_last,
                              compile, group=group, warmup=1 if self.quick else 3,
                              min_seconds=0.02 if self.quick else 1.0, max_steps=2 if self.quick else 200)
            flops = 3 * forward_flops(arch, width, px)
            peak = peak_tflops(self.name, dtype) if self.dev.type == 'cuda' else None
            row |= dict(images_per_s=round(t['images_per_s'], 1), step_ms=round(1000 * t['seconds'] / t['steps'], 2),
                        warmup_s=round(t['warmup_seconds'], 2), steps=t['steps'],
                        tflops=float(f"{flops * t['images_per_s'] / 1e12:.3g}"),
                        mfu=None if peak is None else round(flops * t['images_per_s'] / (peak * 1e12), 4),
                        peak_memory_gb=None if t['peak_memory'] is None else round(t['peak_memory'] / 2**30, 2))
            if compile:            # new learners, same shapes: the compiled graphs should be reused (a short warm-up)
                again = time_training([learner(arch, width, px, 100 + s) for s in range(K)], a.batch, px, self.dev,
                                      'bf16' if dtype == 'bf16' else None, channels_last, compile, group=group,
                                      warmup=1, min_seconds=0.02 if self.quick else 0.5, max_steps=2 if self.quick else 100)
                row['second_warmup_s'] = round(again['warmup_seconds'], 2)
        except Exception as e:     # an out-of-memory or a compile failure is a result too
            row['error'] = f'{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ""}'
            self.errors.append(traceback.format_exc(limit=3))
        finally:
            for n in self.pool.get(arch, []): n.to('cpu')       # off the device: the next peak is the next step's own
            if self.dev.type == 'cuda': torch.cuda.empty_cache()
        self.rows.append(row); self.write()
        return row

    def two_task_unit(self):
        "Wall time of one two-task `alone` unit (train, prune, finetune, freeze, test) at the paper's image count."
        if self.left() < (10 if self.quick else 60): self.skipped.append(dict(what='two-task unit', why='time budget')); return
        n = dict(train=160, val=20, test=40, n_classes=5) if self.quick else PAPER_UNIT
        epochs, finetune = (1, 1) if self.quick else (2, 1)
        width = 1 / 16 if self.quick else 1.0
        try:
            train, test = synthetic(n['train'], n['n_classes'], 1), synthetic(n['test'], n['n_classes'], 2)
            net = get_arch('resnet18')(in_size=32, width=width, seed=0)
            t0 = time.perf_counter()
            o, = learn_tasks([net], train, n['n_classes'], [()], seeds=0, epochs=epochs, finetune_epochs=finetune,
                             batch_size=self.args.batch, device=self.dev, test_ds=test, progress=False)
            if self.dev.type == 'cuda': torch.cuda.synchronize()
            wall = time.perf_counter() - t0
            per_train, per_fine = o['train']['seconds'] / epochs, o['finetune']['seconds'] / finetune
            rest = wall - o['train']['seconds'] - o['finetune']['seconds']          # test passes, pruning, setup
            self.unit = dict(arch='resnet18', width=width, train_images=n['train'], test_images=n['test'],
                             epochs=epochs, finetune_epochs=finetune, wall_s=round(wall, 2),
                             s_per_epoch=round(per_train, 3), s_per_finetune_epoch=round(per_fine, 3),
                             other_s=round(rest, 2), paper_epochs=f"{PAPER_UNIT['epochs']}+{PAPER_UNIT['finetune_epochs']}",
                             extrapolated_paper_s=None if self.quick else round(
                                 per_train * PAPER_UNIT['epochs'] + per_fine * PAPER_UNIT['finetune_epochs'] + rest, 1),
                             settings='fit, float32, NCHW, eager (the current defaults)')
        except Exception as e:
            self.unit = dict(error=f'{type(e).__name__}: {e}'); self.errors.append(traceback.format_exc(limit=3))
        self.write()

    def write(self):
        "Both files, from everything measured so far (atomically: a reader never sees half a file)."
        data = dict(env=self.env | dict(wall_s=round(time.time() - self.t0, 1)), rows=self.rows, unit=self.unit,
                    skipped=self.skipped, errors=self.errors, best=best_variants(self.rows))
        for path, text in ((self.stem.with_suffix('.json'), json.dumps(data, indent=1)),
                           (self.stem.with_suffix('.md'), markdown(data))):
            tmp = path.with_name(f'.{path.name}.tmp'); tmp.write_text(text); os.replace(tmp, path)


def synthetic(n: int, n_classes: int, seed: int) -> ArrayDataset:
    "n random 32x32 RGB images (uint8, held as a run holds its data) with balanced labels: the paper's image count."
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = (torch.arange(n) % n_classes)[torch.randperm(n, generator=g)]
    return ArrayDataset(x, y, [0.5] * 3, [0.25] * 3, n_classes=n_classes)


def best_variants(rows) -> list:
    "Per architecture, px and trainer: the fastest measured variant (what the defaults should be)."
    best = {}
    for r in rows:
        if 'images_per_s' not in r: continue
        k = (r['arch'], r['px'], r['trainer'])
        if k not in best or r['images_per_s'] > best[k]['images_per_s']: best[k] = r
    return [dict(arch=a, px=p, trainer=t, dtype=r['dtype'], channels_last=r['channels_last'], compile=r['compile'],
                 images_per_s=r['images_per_s'], mfu=r.get('mfu')) for (a, p, t), r in sorted(best.items())]


def markdown(data) -> str:
    env, rows = data['env'], data['rows']
    peaks = ('no peak on a CPU' if env['device_type'] == 'cpu' else 'unknown peak: MFU not computed' if not env['peak_tflops']['bf16']
             else f"peaks {env['peak_tflops']['float32']} / {env['peak_tflops']['bf16']} TFLOP/s")
    def fmt(v): return '' if v is None else str(v)
    lines = [f"# GPU check: {env['device']}", '',
             f"torch {env['torch']}, CUDA {env['cuda']}, Python {env['python']}; TF32 convolutions {env['tf32_cudnn']}, "
             f"TF32 matmul {env['tf32_matmul']}, cudnn.benchmark {env['cudnn_benchmark']}; {'quick (CPU) run; ' if env['quick'] else ''}"
             f"wall {env['wall_s']} s of a {env['budget_s']} s budget; started {env['started']}.", '',
             f"Training throughput of the step `fit` / `fit_group` runs (learners in slot 2 sharing a pruned, frozen "
             f"slot 1), batch {env['batch']} per learner; MFU = 3 x forward FLOPs x images/s / the dtype's dense peak "
             f"(float32: the TF32 peak; {peaks}).", '',
             '| arch | px | trainer | dtype | channels_last | compile | images/s | step ms | TFLOP/s | MFU | peak GB | warm-up s | 2nd warm-up s | note |',
             '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        mfu = '' if r.get('mfu') is None else f"{100 * r['mfu']:.1f}%"
        lines.append(f"| {r['arch']} | {r['px']} | {r['trainer']} | {r['dtype']} | {r['channels_last']} | {r['compile']} | "
                     f"{r.get('images_per_s', '')} | {r.get('step_ms', '')} | {r.get('tflops', '')} | "
                     f"{mfu if 'error' not in r else r['error'][:80]} | {fmt(r.get('peak_memory_gb'))} | "
                     f"{r.get('warmup_s', '')} | {r.get('second_warmup_s', '')} | {r.get('note', '')} |")
    if data['best']:
        lines += ['', '## Fastest variant per architecture, image size and trainer', '',
                  '| arch | px | trainer | dtype | channels_last | compile | images/s | MFU |', '|---|---|---|---|---|---|---|---|']
        for b in data['best']:
            mfu = '' if b['mfu'] is None else f"{100 * b['mfu']:.1f}%"
            lines.append(f"| {b['arch']} | {b['px']} | {b['trainer']} | {b['dtype']} | {b['channels_last']} | {b['compile']} | "
                         f"{b['images_per_s']} | {mfu} |")
    u = data['unit']
    if u:
        lines += ['', '## One two-task unit', '']
        lines.append(f"error: {u['error']}" if 'error' in u else
                     f"ResNet-18 (width {u['width']}), an `alone` unit ({u['settings']}): {u['train_images']:,} training and "
                     f"{u['test_images']:,} test images, {u['epochs']} + {u['finetune_epochs']} epochs in {u['wall_s']} s "
                     f"({u['s_per_epoch']} s per training epoch, {u['s_per_finetune_epoch']} s per finetuning epoch, "
                     f"{u['other_s']} s of tests, pruning and set-up)"
                     + (f"; at the paper's {u['paper_epochs']} epochs: about {u['extrapolated_paper_s']} s." if u.get('extrapolated_paper_s') else '.'))
    if data['skipped']:
        lines += ['', f"Skipped for the time budget: {len(data['skipped'])} measurement(s)."]
    return '\n'.join(lines) + '\n'


def plan(quick: bool):
    "The measurements, in order: (arch, px, dtype, channels_last, K, group, compile); 32 px first, then 64 px."
    archs, dtypes, layouts = ('resnet18', 'vgg16'), ('float32', 'bf16'), (False, True)
    if quick:      # every option once, small: both trainers at 32 px, fit alone at 64 px
        return ([(a, 32, d, cl, K, g, False) for a in archs for K, g in [(1, False), (2, True)] for d in dtypes for cl in layouts],
                [(a, 64, 'float32', False, 1, False, False) for a in archs])
    trainers = [(1, False), (1, True), (5, True), (15, True)]
    return tuple([(a, px, d, cl, K, g, False) for a in archs for K, g in trainers for d in dtypes for cl in layouts]
                 for px in (32, 64))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    ap.add_argument('--quick', action='store_true', help='tiny widths and steps (for a CPU; CI)')
    ap.add_argument('--out', default=str(ROOT / 'benchmarks' / 'results'), help='folder of <device>.md and .json')
    ap.add_argument('--budget-s', type=float, default=None, help='stop starting measurements after this many seconds '
                    '(default 420 on a GPU, so that the check ends within 8 minutes; 50 with --quick)')
    ap.add_argument('--batch', type=int, default=None, help='images per learner and step (default 64; 8 with --quick)')
    args = ap.parse_args(argv)
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        raise SystemExit('gpu_check: --device cuda, but torch sees no CUDA GPU here; use --device cpu --quick to check the code path')
    args.budget_s = args.budget_s or (50 if args.quick else 420)
    args.batch = args.batch or (8 if args.quick else 64)
    if args.quick: torch.set_num_threads(min(2, torch.get_num_threads()))
    check = Check(args)
    first, second = plan(args.quick)
    for a, px, d, cl, K, g, c in first: check.measure(a, px, d, cl, K, c, group=g)
    check.two_task_unit()
    for a, px, d, cl, K, g, c in second: check.measure(a, px, d, cl, K, c, group=g)
    backend = 'aot_eager' if args.quick else True
    for K, g in ([(1, False)] if args.quick else [(1, False), (15, True), (5, True), (1, True)]):
        for a in (('vgg16',) if args.quick else ('resnet18', 'vgg16')):
            trainer = 'fit' if not g else f'fit_group K={K}'
            b = next((r for r in best_variants(check.rows) if (r['arch'], r['px'], r['trainer']) == (a, 32, trainer)), None)
            d, cl = (b['dtype'], b['channels_last']) if b else ('float32', False)
            check.measure(a, 32, d, cl, K, backend, group=g, note='best eager variant, compiled')
            if not args.quick and check.dev.type == 'cuda': torch.compiler.reset()
    check.write()
    print(f'gpu_check: {len(check.rows)} measurements, {len(check.skipped)} skipped, {len(check.errors)} errors, '
          f'{time.time() - check.t0:.0f} s; wrote {check.stem}.md and .json')
    return 0


if __name__ == '__main__':
    sys.exit(main())
