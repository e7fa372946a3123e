"""Label-free sharing strategies (issue 20): the Context's closure agrees with the learner's, the probe is
deterministic, bounded and never touches the learner, the rows record each decision, old results files still load,
and six_task with the new strategies runs end to end with the report's extra rows."""
import copy, itertools, random
import pandas as pd
import pytest
import torch
from fktnb.config import resolve
from fktnb.models import get_arch
from fktnb.runs import Session, Steps, Unit, Prober, prepare_units, plan
from fktnb.store import ResultStore, COLUMNS
from fktnb.strategies import (Context, Probe, PROBES, STRATEGIES, TABLE2_STRATEGIES, LABEL_FREE_STRATEGIES, strategy,
                              get_strategy)


def random_history(rng, n_tasks=5):
    "A hand-built Steps: tasks learned in a shuffled order, each sharing a random subset of the earlier ones."
    order, steps = rng.sample(range(1, n_tasks + 1), n_tasks), Steps()
    for i, t in enumerate(order):
        steps = steps.then(t, {s for s in order[:i] if rng.random() < 0.4})
    return steps


@pytest.mark.parametrize('seed', range(4))
def test_context_closure_is_the_learners_closure(seed):
    "ctx.closure of any candidate set = what MaskedNet shares when told that set (no training: bookkeeping only)."
    steps = random_history(random.Random(seed))
    net = get_arch('resnet18')(width=1 / 4, seed=0)
    for task, share in steps:
        assert net.add_task(2, share=steps.slots(share)) == steps.slot_of(task)
        net.prune(0.65); net.freeze()
    ctx = Context(task=99, candidates=steps.tasks, dataset='', families={}, shared=dict(steps.steps))
    for c in steps.tasks:      # the learner's own record of what each task shares
        assert ctx.closure({c}) == {c} | set(steps.tasks_of(net.shared(steps.slot_of(c))))
    for k in range(len(steps) + 1):
        for tasks in itertools.combinations(steps.tasks, k):
            probe_net = copy.deepcopy(net)
            slot = probe_net.add_task(2, share=steps.slots(tasks))
            assert set(steps.tasks_of(probe_net.shared(slot))) == ctx.closure(tasks) == steps.closure(tasks)


def test_new_strategies_need_no_families_and_old_ones_decide_as_before():
    ctx = Context(task=4, candidates=(1, 2, 3), dataset='', families={}, shared={1: set(), 2: set(), 3: {1}})
    accs = {frozenset(): 0.2, frozenset({1}): 0.4, frozenset({2}): 0.8, frozenset({1, 3}): 0.5, frozenset({1, 2, 3}): 0.7}
    probing = Context(**{**ctx.__dict__, 'prober': accs.__getitem__, 'budget': Probe()})
    scores = {1: 0.3, 2: 0.1, 3: 0.12}
    assert get_strategy('cluster_lowest')(scores, ctx) == {2}            # low group {2, 3}: S_3 brings S_1 along
    assert get_strategy('probe_best')(scores, probing) == {2}
    with pytest.raises(ValueError, match='probe=Probe'): get_strategy('probe_best')(scores, ctx)
    # Table 2's strategies see the richer context and decide as they always did (manual without families: all alike)
    assert [sorted(get_strategy(s)(scores, probing)) for s in TABLE2_STRATEGIES] == [[1, 2, 3], [], [2], [1, 3], [1, 2, 3]]
    assert set(LABEL_FREE_STRATEGIES) <= set(STRATEGIES) and set(PROBES) == {'probe_best'}


@pytest.fixture(scope='module')
def six_session(tmp_path_factory):
    cfg = resolve('six_task', preset='smoke', tasks=[1, 2, 3], trials=1, strategies=['probe_best'],
                  out_dir=str(tmp_path_factory.mktemp('six')))
    return Session(cfg, log=lambda s: None)


def _state(net):
    return ({k: v.clone() for k, v in net.state_dict().items()}, {l: o.clone() for l, o in net.owner.items()},
            set(net.frozen_tasks), dict(net._shared))


def _same_state(a, b):
    return all(torch.equal(a[0][k], b[0][k]) for k in a[0]) and a[0].keys() == b[0].keys() and \
        all(torch.equal(a[1][l], b[1][l]) for l in a[1]) and a[2:] == b[2:]


def test_probe_is_bounded_cached_and_never_touches_the_learner(six_session):
    start = Steps().then(1).then(2, {1})
    learner = six_session.network(0, start)
    before = _state(learner)
    unit = Unit('six', 0, 3, (), start=start, measure=True, strategy='probe_best')
    prober = Prober(six_session, unit, start, Probe(epochs=2, images=40, max_sets=2))
    for share in [(), {2}, {1, 2}]:            # {2}'s closure is {1, 2}: probed once
        prober(share)
    assert list(prober.accs) == [frozenset(), frozenset({1, 2})]
    assert prober.images == 2 * 2 * 40 and prober.record()['probe_images'] == 160
    with pytest.raises(ValueError, match='probe budget spent'): prober({1})
    assert prober.images == 160
    assert _same_state(before, _state(learner))                                 # the copy handed out
    assert _same_state(before, _state(six_session.network(0, start)))           # the session's cached learner


@pytest.mark.numerics
def test_probe_decides_the_same_when_a_run_resumes(six_session):
    "A resumed run (a new session, the same unit) probes the same accuracies and makes the same decision."
    job = next(j for j in plan(six_session.cfg) if j.units[0].kind == 'six')
    first, = prepare_units(six_session, job.units)
    again, = prepare_units(Session(six_session.cfg, log=lambda s: None), job.units)
    assert first.decision == again.decision and first.shared == again.shared
    d = first.decision
    assert d['chosen'] == sorted(first.shared) and set(d['probes']) == {'none', '1'}
    assert d['probe_images'] == len(d['probes']) * PROBES['probe_best'].images


def test_old_results_file_loads_and_takes_rows_with_decisions(tmp_path):
    "A results.csv written before these columns existed still loads and is appended to."
    old_cols = [c for c in COLUMNS if c not in ('chosen', 'probes', 'probe_images', 'train_images')]
    path = tmp_path / 'results.csv'
    path.write_text(','.join(old_cols) + '\nk1,r,six_task,syn,resnet18,0,six,,,,manual,2,,[1],0.5,,,,,,,,h,1.0,now\n')
    store = ResultStore(path)
    assert store.get('k1')['shared'] == [1] and store.get('k1')['probes'] is None
    assert store.append(dict(key='k2', kind='six', strategy='probe_best', task=3, acc=0.7, shared=[1, 2], chosen=[2],
                             probes={'none': 0.2, '1,2': 0.9}, probe_images=256, train_images=640))
    df = ResultStore(path).load()
    assert list(df.key) == ['k1', 'k2'] and df.probe_images.tolist()[1] == 256
    assert df.chosen.tolist() == [None, [2]] and df.probes[1] == {'none': 0.2, '1,2': 0.9}


def test_six_task_with_new_strategies_end_to_end(tmp_path):
    "Smoke six_task with the new strategies and a user strategy: rows record each decision, the report the extra rows."
    from fktnb.figures import report, six_task_decisions
    from fktnb.sweep import run

    @strategy('test_share_last', replace=True)
    def share_last(scores, ctx): return {max(ctx.candidates)} if ctx.candidates else set()
    try:
        names = ['share_all', 'manual', *LABEL_FREE_STRATEGIES, 'test_share_last']
        cfg = resolve('six_task', preset='smoke', trials=1, strategies=names, out_dir=str(tmp_path))
        df = run(cfg, progress=False)
    finally:
        del STRATEGIES['test_share_last']
    six = df[df.kind == 'six']
    assert len(six) == len(names) * 3 and six.chosen.notna().all()
    for (strat, trial), g in six.groupby(['strategy', 'trial']):    # the closure recorded is the closure of the choice
        shared_by = {int(t): set(s) for t, s in zip(g.task, g.shared)}
        for r in g.itertuples():
            assert set(r.shared) == set(r.chosen).union(*(shared_by.get(c, set()) for c in r.chosen)), (strat, r.task)
    probe = six[six.strategy == 'probe_best']
    assert probe.probes.map(len).ge(2).all() and (probe.probe_images > 0).all()
    assert (probe.probe_images <= PROBES['probe_best'].max_sets * PROBES['probe_best'].images).all()
    assert six[six.strategy != 'probe_best'].probes.isna().all()
    assert (df.train_images == 128 * (cfg.epochs + cfg.finetune_epochs)).all()
    out = report(df, cfg.run_dir)
    md = out['markdown']['six_task']
    for label in ('share all', 'manual', 'cluster lowest P', 'probe best', 'test_share_last'):
        assert f'| {label} |' in md, md
    m = out['six_task_metrics'].set_index('strategy').cost
    assert m['share_all'] == m['cluster_lowest'] == m['manual'] == 1.0 and m['probe_best'] > 1.0
    assert 'training images (× share all)' in md
    dec = six_task_decisions(df)
    assert len(dec) == len(six) and (cfg.run_dir / 'tables' / 'six_task_decisions.md').exists()
