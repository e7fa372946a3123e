"""A source, a sequence and an architecture each register in one call, and every experiment then runs on them."""
import tempfile
from collections import OrderedDict
import numpy as np
import pandas as pd
import pytest

import torch.nn as nn


def _toy_read(root, download):
    "Eight classes of 24x24 grey images in memory (a blob whose position is the class): no files."
    rng = np.random.default_rng(0)
    def make(n):
        y = np.arange(n) % 8
        x = rng.integers(0, 40, (n, 24, 24)).astype(np.uint8)
        for i, c in enumerate(y):
            r, q = divmod(int(c), 4)
            x[i, 3 + 10 * r:11 + 10 * r, 1 + 6 * q:5 + 6 * q] = 220
        return x, y
    (xtr, ytr), (xte, yte) = make(240), make(80)
    return dict(train_x=xtr, train_y=ytr, test_x=xte, test_y=yte, classes=[f'c{i}' for i in range(8)])


def _tiny_vgg(in_size=32, width=1.0, seed=0, in_channels=3):
    from fktnb.models import MaskedNet, ConvUnit, scaled_width
    units, cin = OrderedDict(), in_channels
    for i, c in enumerate([64, 'M', 128, 'M', 128]):
        if c == 'M': units[f'pool{i}'] = nn.MaxPool2d(2)
        else: n = scaled_width(c, width, 'tinyvgg'); units[f'conv{i}'] = ConvUnit(cin, n); cin = n
    return MaskedNet(nn.Sequential(units), in_size, in_channels, seed, min_size=8)


@pytest.fixture
def registered():
    from fktnb.sources import register_source, unregister_source
    from fktnb.sequences import register_sequence, unregister_sequence, TaskSpec
    from fktnb.models import register_arch, ARCHS
    register_source('toy', _toy_read, family='toy', size=32)
    register_sequence('toy4', description='four tasks of two toy classes each', tasks=[
        TaskSpec('toy-a', 'toy', classes=[0, 1]), TaskSpec('toy-b', 'toy', classes=[2, 3]),
        TaskSpec('toy-c', 'toy', classes=[4, 5], perm=1), TaskSpec('toy-d', 'toy', classes=[6, 7])])
    register_arch('tinyvgg', _tiny_vgg)
    yield
    unregister_sequence('toy4'); unregister_source('toy'); del ARCHS['tinyvgg']


def test_registered_source_sequence_and_arch_run_every_experiment(registered, tmp_path):
    from fktnb.config import resolve, task_names
    from fktnb.sweep import run
    from fktnb.cost import estimate_cost
    from fktnb.figures import report
    from fktnb.models import MaskedNet
    out = tmp_path / 'out'
    for experiment, n in (('two_task', 3), ('three_task', 3), ('six_task', 4)):
        cfg = resolve(experiment, preset='smoke', dataset='toy4', arch='tinyvgg', out_dir=str(out))
        assert len(cfg.tasks) == n
        assert estimate_cost(cfg)['units'] > 0
        df = run(cfg, progress=False)
        assert df.acc.between(0, 1).all() and len(df) > 0
        assert set(task_names(cfg).values()) <= {'toy-a', 'toy-b', 'toy-c', 'toy-d'}
        rep = report(df, cfg.run_dir, names=task_names(cfg))
        assert rep['markdown']
    six = df[df.kind == 'six']
    manual = six[six.strategy == 'manual']
    assert manual.shared.map(len).gt(0).all()     # one family: the manual rule shares every earlier subnetwork
    ckpt = next((out / 'cache').rglob('*.pt'))
    net = MaskedNet.load(ckpt)                    # a checkpoint of a registered architecture loads
    assert net.arch == 'tinyvgg' and net.frozen_tasks


def test_sequence_of_any_length(registered):
    from fktnb.sequences import register_sequence, unregister_sequence, TaskSpec
    from fktnb.config import resolve
    register_sequence('toy2', tasks=[TaskSpec('p', 'toy', classes=[0, 1, 2, 3]), TaskSpec('q', 'toy', classes=[4, 5, 6, 7])])
    try:
        assert resolve('two_task', preset='smoke', dataset='toy2', out_dir=tempfile.mkdtemp()).tasks == (1, 2)
        with pytest.raises(ValueError, match='three_task needs at least 3 tasks'):
            resolve('three_task', preset='smoke', dataset='toy2', out_dir=tempfile.mkdtemp())
    finally:
        unregister_sequence('toy2')


def test_registering_twice_needs_replace(registered):
    from fktnb.sources import register_source
    from fktnb.sequences import register_sequence, TaskSpec
    from fktnb.models import register_arch
    with pytest.raises(ValueError, match='replace=True'): register_source('toy', _toy_read, family='toy')
    with pytest.raises(ValueError, match='replace=True'): register_sequence('toy4', tasks=[TaskSpec('x', 'toy')])
    with pytest.raises(ValueError, match='replace=True'): register_arch('tinyvgg', _tiny_vgg)
    from fktnb.config import resolve
    with pytest.raises(ValueError, match="'toy4'"): resolve('two_task', preset='smoke', dataset='toy5', out_dir='/tmp/x')
    with pytest.raises(ValueError, match="'tinyvgg'"): resolve('two_task', preset='smoke', arch='tinyvg', out_dir='/tmp/x')


def test_task_ids_from_numpy_and_pandas_everywhere(tmp_path):
    "Ids as they come out of a results table (task numbers, slots) work at every entry point; 1.0, True and '1' are refused."
    from fktnb.config import resolve
    from fktnb.sweep import run
    from fktnb.runs import load_tasks
    from fktnb.models import MaskedNet
    from fktnb.train import evaluate, fit
    from fktnb import measures as M
    cfg = resolve('two_task', preset='smoke', tasks=np.array([1, 2]), out_dir=str(tmp_path), alpha=np.int64(1))
    assert cfg.tasks == (1, 2) and type(cfg.tasks[0]) is int
    df = run(cfg, progress=False)
    t = df.task.iloc[0]                           # a pandas / numpy integer: task 1, in slot 1 of its alone network
    assert t == 1
    net = MaskedNet.load(next(cfg.cache_dir.glob('*.pt')))
    tasks = load_tasks(cfg)
    net.use(t); net.head(t); net.shared(t)
    with net.selected(np.int32(1)): pass
    acc = evaluate(net, pd.Series([1]).iloc[0], tasks[1].test)
    assert 0 <= acc <= 1
    assert 0 <= M.activation_score(net, np.int64(1), tasks[2].val) and M.connectivity(net, t, tasks[2].val)[0] >= 0
    net.add_task(tasks[2].n_classes, share={np.int64(1)})
    fit(net, tasks[2].train, epochs=1, progress=False)
    assert net.shared(2) == {1}
    for bad in (1.0, True, '1'):
        with pytest.raises(ValueError): net.use(bad)
    net.prune(0.5); net.freeze()
    for bad in ({1.0}, True, '1'):
        with pytest.raises(ValueError): net.add_task(2, share=bad)
