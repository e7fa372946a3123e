"""The experiments follow the paper's protocols, checked against networks built by hand with the learner API."""
import tempfile
import numpy as np

import torch


def _smoke(experiment, **kw):
    from fktnb.config import resolve
    return resolve(experiment, preset='smoke', out_dir=tempfile.mkdtemp(), **kw)


def test_two_task_accuracy_is_algorithm_1():
    "Acc^a_b: F_{+a} right after training b for E_tr epochs, with no pruning or fine-tuning of b (Algorithm 1)."
    from fktnb.runs import run, load_tasks, make_net
    from fktnb.train import fit, evaluate
    cfg = _smoke('two_task', tasks=[1, 2], fuse=False, threads=1)
    df = run(cfg, progress=False)
    tasks = load_tasks(cfg)
    torch.set_num_threads(1)
    # by hand: task 1 trained, pruned, fine-tuned, frozen; then task 2 shares it and trains E_tr epochs, no prune
    net = make_net(cfg, 0, in_size=32)
    kw = dict(lr=cfg.lr, lr_min=cfg.lr_min, batch_size=cfg.batch_size, progress=False)
    net.add_task(tasks[1].n_classes); fit(net, tasks[1].train, epochs=cfg.epochs, seed=cfg.seed + 1, **kw)
    alone = evaluate(net, 1, tasks[1].test)
    net.prune(cfg.prune); fit(net, tasks[1].train, epochs=cfg.finetune_epochs, seed=cfg.seed + 1, **kw); net.freeze()
    net.add_task(tasks[2].n_classes, share={1}); fit(net, tasks[2].train, epochs=cfg.epochs, seed=cfg.seed + 2, **kw)
    assert 2 not in net.frozen_tasks and not (net.owner['conv1'] == 0).any()     # task 2 was not pruned
    pair = df[(df.unit == 'pair') & (df.alpha == 1)].iloc[0]
    assert pair.acc == evaluate(net, 2, tasks[2].test)
    assert df[(df.unit == 'alone') & (df.alpha == 1)].acc.iloc[0] == alone     # the FKT reference: before pruning


def test_six_task_frozen_tasks_never_move():
    "The accuracy matrix: every task's accuracy after each later task equals its accuracy at its own step (BWT = 0)."
    from fktnb.runs import run
    from fktnb.measures import accuracy_matrix_metrics
    cfg = _smoke('six_task', strategies=['share_all', 'share_none'])
    df = run(cfg, progress=False)
    six = df[df.unit == 'six']
    first = df[(df.unit == 'alone') & (df.task == cfg.tasks[0])].acc.iloc[0]
    for (s, k), g in six.groupby(['strategy', 'trial']):
        g = g.sort_values('task', key=lambda t: t.map({t: i for i, t in enumerate(cfg.tasks)}))
        ts = list(cfg.tasks)
        R = np.full((len(ts), len(ts)), np.nan)
        R[0, 0] = first
        for i, row in enumerate(g.itertuples(), 1):
            for t, a in row.accs.items(): R[i, ts.index(int(t))] = a
        for j in range(len(ts)):
            assert (R[j:, j] == R[j, j]).all(), (s, R)
        assert accuracy_matrix_metrics(R)['BWT'] == 0.0


def test_fused_run_equals_unfused():
    "Units that learn the same task train as one model: same keys, the same rows up to floating-point noise."
    from fktnb.runs import run
    fused = run(_smoke('two_task', fuse=True), progress=False)
    plain = run(_smoke('two_task', fuse=False), progress=False)
    assert list(fused.key) == list(plain.key)
    diff = np.abs(fused.acc.to_numpy() - plain.acc.to_numpy())
    print('largest accuracy difference fused vs separate:', diff.max())
    assert diff.max() <= 2 / 64          # at most a prediction or two of 64 flips under reassociation
    assert np.allclose(fused.P.dropna(), plain.P.dropna(), atol=1e-3)
