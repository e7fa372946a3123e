"""Images/s of `ArrayDataset.batches` against a plain `DataLoader` over `torchvision.datasets.MNIST`, in one run.

Both deliver what a training step needs: normalised float32 batches [64, C, 32, 32] and int64 labels **on the
device**. The baseline is the textbook pipeline (`Resize((32, 32))`, `ToTensor`, `Normalize`, one PIL image at a
time, `DataLoader(batch_size=64, shuffle=True)`, then `.to(device)`); ours is a PMNIST task from
`load_sequence('mpc')` (decoded once, cached, served from a uint8 tensor kept on the device).

    python benchmarks/bench_loader.py [--root DIR] [--n 10000] [--device cuda] [--workers 0,2] [--threads 1]

Data: the real MNIST raw files from --root or the folder named by $FKTNB_SHARED_DATA (holding MNIST/raw), else
fixture files written to a temporary folder (then the numbers only show overheads).
"""
import argparse, os, sys, tempfile, time
from pathlib import Path
import torch
import torchvision.datasets as tvd
import torchvision.transforms as T

from fktnb.sequences import load_sequence
from fktnb.fixtures import write_fixtures


def find_root():
    env = os.environ.get('FKTNB_SHARED_DATA')
    if env and (Path(env) / 'MNIST' / 'raw' / 'train-images-idx3-ubyte').is_file():
        return Path(env), 'real MNIST'
    return write_fixtures(tempfile.mkdtemp()), 'FIXTURES (tiny; numbers show overheads only)'


def sync(device):
    if torch.device(device).type == 'cuda': torch.cuda.synchronize()


def time_dataloader(root, n, device, workers, bs=64):
    tf = T.Compose([T.Resize((32, 32)), T.ToTensor(), T.Normalize((0.1307,), (0.3081,))])
    ds = torch.utils.data.Subset(tvd.MNIST(str(root), train=True, transform=tf), range(n))
    dl = torch.utils.data.DataLoader(ds, batch_size=bs, shuffle=True, num_workers=workers,
                                     pin_memory=torch.device(device).type == 'cuda')
    sync(device); t0 = time.perf_counter(); seen = 0
    for x, y in dl:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        seen += len(x)
    sync(device)
    return seen / (time.perf_counter() - t0)


def time_batches(ds, device, epochs=3, bs=64):
    for _ in ds.batches(bs, shuffle=True, device=device, seed=0): pass        # moves the data to the device once
    sync(device); t0 = time.perf_counter(); seen = 0
    for e in range(epochs):
        for x, y in ds.batches(bs, shuffle=True, device=device, seed=e): seen += len(x)
    sync(device)
    return seen / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--root', default=None)
    ap.add_argument('--n', type=int, default=10000, help='images per pass (the first n of MNIST train)')
    ap.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    ap.add_argument('--workers', default='0,2', help='DataLoader num_workers values to try')
    ap.add_argument('--threads', type=int, default=None, help='torch.set_num_threads for this run (default: torch\'s)')
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    root, what = (Path(a.root), a.root) if a.root else find_root()
    t0 = time.perf_counter()
    task = load_sequence('mpc', root=root, tasks=[1], cache_dir=tempfile.mkdtemp())[0]
    t_load = time.perf_counter() - t0
    n = min(a.n, len(task.train), len(tvd.MNIST(str(root), train=True)))
    ds = task.train.subset(range(n))
    dev = a.device
    print(f'data: {what} ({root}); device: {dev}'
          + (f' ({torch.cuda.get_device_name()})' if torch.device(dev).type == 'cuda' else '')
          + f'; torch threads {torch.get_num_threads()}; {n} images/pass, batch 64')
    print(f'first load of the PMNIST task (decode + resize + cache): {t_load:.1f} s')
    ours = time_batches(ds, dev)
    print(f'ArrayDataset.batches:                 {ours:12,.0f} img/s')
    for w in [int(v) for v in a.workers.split(',')]:
        base = time_dataloader(root, n, dev, w)
        print(f'DataLoader(torchvision MNIST, workers={w}): {base:8,.0f} img/s   -> ours is {ours / base:6.1f}x faster')


if __name__ == '__main__':
    main()
