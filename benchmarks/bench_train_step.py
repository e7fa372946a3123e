"""Benchmark: SGD training step of the masked learner vs a plain PyTorch net of the same architecture.

The masked net is measured in its realistic state: task 2, after task 1 was trained, pruned by 65% and frozen,
sharing task 1 (so row masks are multiplied into the weights and frozen weights are restored after every step).
The plain net has the same convs (no bias), the same BatchNorm (affine=False, no running stats), the same widths
and one Linear head, and is trained with the same SGD settings. Both are timed in the same run, alternating.

    python benchmarks/bench_train_step.py [--steps 200] [--width 0.125] [--device cpu|cuda] [--threads N] [--arch resnet18,vgg16]
"""
import argparse, time
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import TensorDataset
from fktnb.models import resnet18, vgg16, VGG16_CFG
from fktnb.train import fit


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
    "Task 2 sharing task 1 (pruned 65%, frozen): the state a learner trains in."
    net = make(width=width, seed=0).to(device)
    g = torch.Generator().manual_seed(0)
    ds = TensorDataset(torch.randn(64, 3, 32, 32, generator=g), torch.randint(0, 10, (64,), generator=g))
    net.add_task(10); fit(net, ds, epochs=1, batch_size=64, device=device, progress=False)
    net.prune(0.65); net.freeze()
    net.add_task(10, share={1})
    return net


def time_steps(model, step, x, y, steps, warmup=10):
    for _ in range(warmup): step(x, y)
    if x.is_cuda: torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps): step(x, y)
    if x.is_cuda: torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def make_masked_step(net):
    "Exactly the inner loop of fktnb.train.fit (forward with row masks, SGD step, restore of frozen weights)."
    masks = net.trainable_masks()
    params = list(masks)
    restore = [(p, m, p.detach().clone()) for p, m in masks.items() if m is not None]
    frozen = [p for p in net.parameters() if p not in masks]
    for p in frozen: p.requires_grad_(False)
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, nesterov=True)
    def step(x, y):
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
        with torch.no_grad():
            for p, m, s in restore: p.copy_(torch.where(m, p, s))
    return step


def make_plain_step(model):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    def step(x, y):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
    return step


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
    x = torch.randn(a.batch, 3, 32, 32, device=dev); y = torch.randint(0, 10, (a.batch,), device=dev)
    print(f'device={dev} threads={torch.get_num_threads()} width={a.width} batch={a.batch} steps={a.steps} x {a.rounds} rounds')
    for name, make, plain in [('resnet18', resnet18, plain_resnet18), ('vgg16', vgg16, plain_vgg16)]:
        if name not in a.arch.split(','): continue
        net = masked_state(make, a.width, dev)
        model = plain(a.width).to(dev)
        ms, ps = make_masked_step(net), make_plain_step(model)
        tm, tp = [], []
        for r in range(a.rounds):      # alternate, keep the fastest round of each (least disturbed by other load)
            tp.append(time_steps(model, ps, x, y, a.steps // a.rounds))
            tm.append(time_steps(net, ms, x, y, a.steps // a.rounds))
        m, p = min(tm), min(tp)
        print(f'{name:9s} masked {m * 1e3:8.2f} ms/step   plain {p * 1e3:8.2f} ms/step   masked/plain {m / p:.3f}')


if __name__ == '__main__':
    main()
