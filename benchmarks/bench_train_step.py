"""Benchmark: SGD training step of the masked learner vs a plain PyTorch net of the same architecture.

The masked net is measured in its realistic state: slot 2, after slot 1 was trained, pruned by 65% and frozen,
sharing slot 1 (so row masks are multiplied into the weights and frozen weights are restored after every step).
The masked side is one epoch of `fktnb.train.fit` itself (all its bookkeeping included); the plain side is the
same number of steps of a plain PyTorch net with the same convs (no bias), the same BatchNorm (affine=False, no
running stats), the same widths and one Linear head, the same SGD settings, over the same batches
(`iterate_batches`). Both are timed in the same run, alternating; time per step is reported.

    python benchmarks/bench_train_step.py [--steps 200] [--width 0.125] [--device cpu|cuda] [--threads N] [--arch resnet18,vgg16]
"""
import argparse, time
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import TensorDataset
from fktnb.models import resnet18, vgg16, VGG16_CFG
from fktnb.train import fit, iterate_batches


def bn(c): return nn.BatchNorm2d(c, affine=False, track_running_stats=False)


class PlainBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), bn(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), bn(cout)
        self.shortcut, self.bn_sc = nn.Conv2d(cin, cout, 1, stride, 0, bias=False), bn(cout)
    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + self.bn_sc(self.shortcut(x)))


def plain_resnet18(width, n_classes=10):
    c0 = int(64 * width)
    layers = [nn.Conv2d(3, c0, 3, 1, 1, bias=False), bn(c0), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    cin = c0
    for c, s in zip([64, 128, 256, 512], [1, 2, 2, 2]):
        n = int(c * width)
        layers += [PlainBlock(cin, n, s), PlainBlock(n, n, 1)]; cin = n
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, n_classes))


def plain_vgg16(width, n_classes=10):
    layers, cin = [], 3
    for c in VGG16_CFG:
        if c == 'M': layers.append(nn.MaxPool2d(2))
        else:
            n = int(c * width); layers += [nn.Conv2d(cin, n, 3, 1, 1, bias=False), bn(n), nn.ReLU()]; cin = n
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, n_classes))


def masked_state(make, width, device):
    "Slot 2 sharing slot 1 (pruned 65%, frozen): the state a learner trains in."
    net = make(width=width, seed=0).to(device)
    g = torch.Generator().manual_seed(0)
    ds = TensorDataset(torch.randn(64, 3, 32, 32, generator=g), torch.randint(0, 10, (64,), generator=g))
    net.add_task(10); fit(net, ds, epochs=1, batch_size=64, device=device, progress=False)
    net.prune(0.65); net.freeze()
    net.add_task(10, share={1})
    return net


def timed(fn, device):
    "Seconds one call of fn() takes (device synchronised)."
    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    sync(); t0 = time.perf_counter(); fn(); sync()
    return time.perf_counter() - t0


def plain_epoch(model, ds, batch, device, seed):
    "A plain PyTorch epoch over the same batches `fit` sees (same batching helper, same SGD settings)."
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    for x, y in iterate_batches(ds, batch, shuffle=True, device=device, seed=seed):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--steps', type=int, default=200)
    ap.add_argument('--width', type=float, default=1 / 8)
    ap.add_argument('--batch', type=int, default=64)
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    ap.add_argument('--threads', type=int, default=0)
    ap.add_argument('--arch', default='resnet18,vgg16')
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    torch.manual_seed(0)
    n = a.batch * (a.steps // a.rounds)
    ds = TensorDataset(torch.randn(n, 3, 32, 32), torch.randint(0, 10, (n,)))
    print(f'device={dev} threads={torch.get_num_threads()} width={a.width} batch={a.batch} steps={a.steps} x {a.rounds} rounds')
    for name, make, plain in [('resnet18', resnet18, plain_resnet18), ('vgg16', vgg16, plain_vgg16)]:
        if name not in a.arch.split(','): continue
        net = masked_state(make, a.width, dev)
        model = plain(a.width).to(dev)
        steps = n // a.batch
        tm, tp = [], []
        for r in range(a.rounds + 1):  # alternate; round 0 warms up; keep the fastest round of each
            tp.append(timed(lambda: plain_epoch(model, ds, a.batch, dev, seed=r), dev) / steps)
            tm.append(timed(lambda: fit(net, ds, epochs=1, lr=0.1, batch_size=a.batch, device=dev, seed=r,
                                        progress=False), dev) / steps)
        m, p = min(tm[1:]), min(tp[1:])
        print(f'{name:9s} masked {m * 1e3:8.2f} ms/step   plain {p * 1e3:8.2f} ms/step   masked/plain {m / p:.3f}')


if __name__ == '__main__':
    main()
