"""The experiments follow the paper's protocols, checked against networks built by hand with the learner API, and the
runner translates sequence task numbers to the network's slots and back."""
import tempfile
import numpy as np
import pytest

import torch


def _smoke(experiment, **kw):
    from fktnb.config import resolve
    return resolve(experiment, preset='smoke', out_dir=tempfile.mkdtemp(), **kw)


@pytest.mark.numerics
def test_two_task_accuracy_is_algorithm_1():
    "Acc^a_b: F_{+a} right after training b for E_tr epochs, with no pruning or fine-tuning of b (Algorithm 1)."
    from fktnb.sweep import run
    from fktnb.runs import load_tasks, make_net
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
    pair = df[(df.kind == 'pair') & (df.alpha == 1)].iloc[0]
    assert pair.shared == [1]
    assert pair.acc == evaluate(net, 2, tasks[2].test)
    assert df[(df.kind == 'alone') & (df.alpha == 1)].acc.iloc[0] == alone     # the FKT reference: before pruning


def test_six_task_frozen_tasks_never_move():
    "The accuracy matrix: every task's accuracy after each later task equals its accuracy at its own step (BWT = 0)."
    from fktnb.sweep import run
    from fktnb.measures import accuracy_matrix_metrics
    cfg = _smoke('six_task', strategies=['share_all', 'share_none'])
    df = run(cfg, progress=False)
    six = df[df.kind == 'six']
    first = df[(df.kind == 'alone') & (df.task == cfg.tasks[0])].acc.iloc[0]
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


@pytest.mark.numerics
def test_fused_run_equals_unfused():
    "Units that learn the same task train as one model: same keys, the same rows up to floating-point noise."
    from fktnb.sweep import run
    fused = run(_smoke('two_task', fuse=True), progress=False)
    plain = run(_smoke('two_task', fuse=False), progress=False)
    assert list(fused.key) == list(plain.key)
    diff = np.abs(fused.acc.to_numpy() - plain.acc.to_numpy())
    print('largest accuracy difference fused vs separate:', diff.max())
    assert diff.max() <= 2 / 64          # at most a prediction or two of 64 flips under reassociation
    assert np.allclose(fused.P.dropna(), plain.P.dropna(), atol=1e-3)


def test_runner_translates_tasks_to_slots():
    """Three-task with alpha=2, beta=3, gamma=1 (a network whose slots 1, 2, 3 hold tasks 2, 3, 1): the rows' `shared`
    are sequence task numbers, and each cached network learned the right task in each slot, sharing the right slots."""
    from fktnb.sweep import run
    from fktnb.runs import load_tasks, Steps, Network, DECISIONS
    from fktnb.models import MaskedNet
    from fktnb.train import evaluate
    cfg = _smoke('three_task', alpha=2, keep_leaves=True, threads=1)
    df = run(cfg, progress=False)
    tasks, run_id = load_tasks(cfg), df.run_id.iloc[0]
    alone = df[df.kind == 'alone'].iloc[0]
    beta = df[(df.kind == 'beta') & (df.beta == 3)].iloc[0]
    gammas = df[(df.kind == 'gamma') & (df.beta == 3) & (df.gamma == 1)].set_index('decision')
    assert (alone.task, alone.shared, beta.task, beta.shared) == (2, [], 3, [])
    expected = {'share_both': [2, 3], 'omit_beta': [2], 'omit_alpha': [3]}
    assert {d: gammas.shared[d] for d in DECISIONS} == expected
    for d, shared in expected.items():
        steps = Steps().then(2).then(3).then(1, shared)
        net = MaskedNet.load(cfg.cache_dir / f'{Network(0, steps).key(run_id)}.pt')
        assert net.tasks == 3
        assert net.shared(3) == frozenset({2: 1, 3: 2}[t] for t in shared)       # slots of the shared tasks
        assert net.shared(2) == frozenset()
        # frozen earlier slots still give the earlier rows' accuracies; slot 3 gives gamma's
        assert evaluate(net, 1, tasks[2].test) == alone.acc
        assert evaluate(net, 2, tasks[3].test) == beta.acc
        assert evaluate(net, 3, tasks[1].test) == gammas.acc[d]
        assert gammas.scores[d].keys() == {'alpha', 'beta'}


def test_steps_and_moved_names():
    "Steps refuses what no network can be; the names that moved in 0.3 say where they went."
    import warnings
    import fktnb.runs as R
    with pytest.raises(ValueError, match='learns each task once'): R.Steps(((1, ()), (1, ())))
    with pytest.raises(ValueError, match='not all learned before it'): R.Steps(((1, {2}), (2, ())))
    with pytest.raises(ValueError, match='task 5 was not learned'): R.Steps().then(1).then(2, {5})
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        assert R.Member is R.Unit and issubclass(w[0].category, DeprecationWarning)
    for name, where in (('run', 'fktnb.sweep'), ('estimate_cost', 'fktnb.cost'), ('announce', 'fktnb.cost')):
        with pytest.raises(ImportError, match=f'moved to {where}.{name}'): getattr(R, name)
