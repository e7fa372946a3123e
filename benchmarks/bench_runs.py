"""Training throughput of the full-width learner, and the GPU hours of the 'paper' preset it implies.

Run on the machine you will use (e.g. a GPU): `python benchmarks/bench_runs.py [--device cuda] [--steps 20]`.
Prints images/s per architecture (batch 64, 32x32, one task, the learner's `fit`) against a plain PyTorch training
step of the same network measured in the same run (ratio = learner / plain), then `fktnb.cost.cost_table` with the
measured throughput: GPU hours per experiment, dataset and architecture.
"""
import argparse, time
import torch
import torch.nn.functional as F
from fktnb.train import fit
from fktnb.sources import ArrayDataset
from fktnb.cost import cost_table
from fktnb.models import get_arch


def images_per_s(arch, device, steps, batch=64):
    net = get_arch(arch)(in_size=32, width=1.0, seed=0)
    net.add_task(10)
    n = batch * steps
    ds = ArrayDataset(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8), torch.randint(0, 10, (n,)),
                      (0.5,) * 3, (0.25,) * 3)
    fit(net, ds.subset(range(2 * batch)), epochs=1, batch_size=batch, device=device, progress=False)   # warm-up
    sync = torch.cuda.synchronize if str(device).startswith('cuda') else (lambda: None)
    sync(); t0 = time.time()
    fit(net, ds, epochs=1, batch_size=batch, device=device, progress=False)
    sync(); learner = n / (time.time() - t0)
    # plain step: same module, no masks bookkeeping
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    x = torch.randn(batch, 3, 32, 32, device=device); y = torch.randint(0, 10, (batch,), device=device)
    net.use(1); net.train()
    sync(); t0 = time.time()
    for _ in range(steps):
        opt.zero_grad(); F.cross_entropy(net(x), y).backward(); opt.step()
    sync(); plain = n / (time.time() - t0)
    return learner, plain


if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    ap.add_argument('--steps', type=int, default=20)
    a = ap.parse_args()
    ips = {}
    for arch in ('resnet18', 'vgg16'):
        learner, plain = images_per_s(arch, a.device, a.steps)
        ips[arch] = learner
        print(f'{arch} on {a.device}: learner {learner:.1f} img/s, plain step {plain:.1f} img/s, ratio {learner / plain:.2f}')
    rows = [cost_table(archs=(arch,), images_per_s=ips[arch]) for arch in ips]
    import pandas as pd
    t = pd.concat(rows)
    print(t.pivot_table(index=['experiment', 'dataset'], columns='arch', values='gpu_hours').round(2))
