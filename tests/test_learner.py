"""Invariants of the continual learner (issue 3): exact freezing, pruning counts, constraint 3, closure of shared
sets, omission, save/load (safe checkpoints: issue 17), and the errors for bad inputs. Both architectures at width
1/16 on tiny random data. Tasks are numbered by their slot: their place in the order the network learned them."""
import copy
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path
import pytest
import torch
from torch.utils.data import TensorDataset
from fktnb.models import resnet18, vgg16, MaskedNet
from fktnb.train import fit, evaluate

torch.set_num_threads(2)
ARCHS = {'resnet18': resnet18, 'vgg16': vgg16}
FIT = dict(epochs=1, lr=0.1, batch_size=32, momentum=0.9, nesterov=True, weight_decay=5e-4, device='cpu', progress=False)


def toy(n=64, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, classes, (n,), generator=g))


def n_round(fraction, n):   # the authors' count: Python's round(fraction*n) (halves to even), independent of the library
    return round(fraction * n)


def train_task(net, share, fraction, seed):
    t = net.add_task(4, share=share)
    fit(net, toy(seed=seed), seed=seed, **FIT)
    counts = {l: int((net.owner[l] == t).sum()) for l in net.layers}
    net.prune(fraction)
    if t <= 2:                                   # finetune phase (a fit after pruning) for the first two tasks
        fit(net, toy(seed=seed), seed=seed, **FIT)
    net.freeze()
    return t, counts


@pytest.fixture(scope='module', params=list(ARCHS))
def seq(request):
    """Four tasks: 1; 2 shares 1; 3 omits everything; 4 shares 2 (and so 1). Snapshots after each task."""
    net = ARCHS[request.param](width=1 / 16, seed=0)
    x = toy(32, seed=99).tensors[0]          # every batch has 32 samples: one shape, less oneDNN setup
    snaps, logits, counts, accs = {}, {}, {}, {}
    for share, fraction, seed in [((), 0.65, 1), ({1}, 0.5, 2), ((), 0.65, 3), ({2}, 0.65, 4)]:
        t, counts[t] = train_task(net, share, fraction, seed)
        snaps[t] = copy.deepcopy(net.state_dict())
        logits[t] = net.use(t)(x).detach().clone()
        accs[t] = evaluate(net, t, toy(32, seed=t))
    return dict(net=net, x=x, snaps=snaps, logits=logits, counts=counts, accs=accs, arch=request.param)


def test_graph_counts():
    assert len(resnet18(width=1 / 16).graph) == 31
    assert len(resnet18(width=1 / 16, graph='full').graph) == 38
    assert len(vgg16(width=1 / 16).graph) == 14                   # 12 conv pairs + conv13->fc1 + fc1->fc2
    assert len(vgg16(in_size=64, width=1 / 16).layers) == 15
    assert len(vgg16(width=1 / 16, fc=False).graph) == 12 and len(vgg16(width=1 / 16, fc=False).layers) == 13


def test_frozen_weights_bit_identical(seq):
    net, snaps = seq['net'], seq['snaps']
    state = net.state_dict()
    for t in (1, 2, 3):
        for name, layer in net.layers.items():
            key = [k for k, v in net.named_parameters() if v is layer.weight][0]
            rows = net.owner[name] == t
            assert rows.any() or t == 3 or seq['arch'] == 'resnet18', name
            assert torch.equal(state[key][rows], snaps[t][key][rows]), (t, name)
        for k in (f'heads.{t}.weight', f'heads.{t}.bias'):
            assert torch.equal(state[k], snaps[t][k])


def test_old_task_logits_and_accuracy_unchanged(seq):
    net, x = seq['net'], seq['x']
    for t in (1, 2, 3, 4):
        assert torch.equal(net.use(t)(x), seq['logits'][t]), t
        assert evaluate(net, t, toy(32, seed=t)) == seq['accs'][t]


def test_later_tasks_did_train(seq):
    net, snaps = seq['net'], seq['snaps']
    w = net.layers[next(iter(net.layers))].weight
    key = [k for k, v in net.named_parameters() if v is w][0]
    rows = net.owner[next(iter(net.layers))] == 4
    assert not torch.equal(w[rows], snaps[3][key][rows]) or not rows.any()


def test_pruned_counts(seq):
    net = seq['net']
    fractions = {1: 0.65, 2: 0.5, 3: 0.65, 4: 0.65}
    for t, counts in seq['counts'].items():
        for l, n in counts.items():
            assert int((net.owner[l] == t).sum()) == n - n_round(fractions[t], n), (t, l, n)
    # task 1 owned every filter before pruning, so its counts are round(0.35 n) kept
    for l, m in net.layers.items():
        assert seq['counts'][1][l] == m.out_channels
    # a shortcut's filters have the owner of its block's conv2
    for l in net.layers:
        if l.endswith('shortcut'):
            assert torch.equal(net.owner[l], net.owner[l.replace('shortcut', 'conv2')])


def test_constraint3(seq):
    net = seq['net']
    for t in range(1, net.tasks + 1):
        S = net.shared(t) | {t}
        for l, m in net.layers.items():
            rows = net.owner[l] == t
            assert (m.weight[net.owner[l] == 0] == 0).all(), l          # pruned filters are zero
            src = net.inp[l]
            if src is None: continue
            outside = ~torch.isin(net.owner[src], torch.tensor(sorted(S)))
            assert (m.weight[rows][:, outside] == 0).all(), (t, l)
        head = net.heads[str(t)].weight
        outside = ~torch.isin(net.owner[net.head_input], torch.tensor(sorted(S)))
        assert outside.any() and (head[:, outside] == 0).all(), t
    # every nonzero weight into a filter of S_t lies in t's connections, for every graph pair
    for t in range(1, net.tasks + 1):
        for p, c in net.graph:
            conn = net.connections(t, p, c)
            w = net.layers[c].weight.detach().abs().reshape(*conn.shape, -1).sum(2)
            inside = net.task_filters(t, c)[:, None].expand_as(conn)
            assert (w[inside & ~conn] == 0).all(), (t, p, c)
            assert conn.shape == (net.layers[c].out_channels, net.layers[p].out_channels)


def test_shared_closure(seq):
    net = seq['net']
    assert net.shared(1) == frozenset() and net.shared(2) == {1}
    assert net.shared(3) == frozenset() and net.shared(4) == {1, 2}
    for t in range(1, net.tasks + 1):
        for s in net.shared(t):
            assert net.shared(s) <= net.shared(t)


def test_use_slots_analysis(seq):
    net, x = seq['net'], seq['x']
    assert torch.equal(net.use(4, slots={1, 2, 4})(x), seq['logits'][4])
    out = net.use(4, {4})(x)                # omitting 1 and 2 changes slot 4's output (slots: 2nd positional)
    assert not torch.equal(out, seq['logits'][4])
    with pytest.warns(DeprecationWarning, match='slots='):          # the former keyword still works
        assert torch.equal(net.use(4, tasks={1, 2, 4})(x), seq['logits'][4])
    with pytest.warns(DeprecationWarning), net.selected(4, tasks={4}):
        assert net.selection == (4, frozenset({4})) and torch.equal(net(x), out)
    with pytest.raises(ValueError, match='slots= only'):
        net.use(4, slots={4}, tasks={4})


def test_omitting_task_unaffected_by_earlier_weights(seq):
    net = copy.deepcopy(seq['net'])
    x = seq['x']
    with torch.no_grad():
        for l, m in net.layers.items():
            other = torch.isin(net.owner[l], torch.tensor([1, 2, 4]))
            m.weight[other] = torch.randn_like(m.weight[other]) * 3
            m.weight[net.owner[l] == 0] = 1.0            # even free filters
        net.heads['1'].weight.add_(1.0)
    assert torch.equal(net.use(3)(x), seq['logits'][3])
    assert not torch.equal(net.use(1)(x), seq['logits'][1])
    # the analysis selection that adds other tasks' filters does not change task 3's filters' inputs either
    assert torch.equal(net.use(3, slots={1, 2, 3, 4})(x), seq['logits'][3])


def test_save_load_round_trip(seq, tmp_path):
    net, x = seq['net'], seq['x']
    net.save(tmp_path / 'net.pt')
    net2 = MaskedNet.load(tmp_path / 'net.pt')
    for t in range(1, net.tasks + 1):
        assert torch.equal(net2.use(t)(x), seq['logits'][t])
        assert net2.shared(t) == net.shared(t)
    assert net2.frozen_tasks == net.frozen_tasks and net2.current == net.current
    assert all(torch.equal(net2.owner[l], net.owner[l]) for l in net.layers)
    assert all(torch.equal(net2.init_weights[l], net.init_weights[l]) for l in net.layers)
    # the loaded learner continues: a new task re-initialises free filters to the stored initial values
    t = net2.add_task(3, share={4})
    l0 = next(iter(net2.layers))
    mine = net2.owner[l0] == t
    assert torch.equal(net2.layers[l0].weight[mine], net2.init_weights[l0][mine])


def test_deterministic_fit():
    def run():
        net = vgg16(width=1 / 16, seed=5); net.add_task(4)
        fit(net, toy(seed=8), seed=3, **FIT)
        return [p.detach().clone() for p in net.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(run(), run()))


@pytest.mark.parametrize('arch', list(ARCHS))
def test_bad_inputs_raise(arch):
    net = ARCHS[arch](width=1 / 16)
    with pytest.raises(ValueError, match='width'):
        ARCHS[arch](width=1 / 128)
    with pytest.raises(ValueError, match='in_size'):
        ARCHS[arch](in_size=8)
    with pytest.raises(ValueError, match='add_task'):
        net.prune(0.5)
    with pytest.raises(ValueError, match='add_task'):
        fit(net, toy(), progress=False)
    with pytest.raises(ValueError, match='valid slots are \\[\\]'):
        net.add_task(4, share={1})
    t = net.add_task(4)
    with pytest.raises(ValueError, match='convert the images to 3 channels'):
        net(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match='resize them to at least'):
        net(torch.randn(2, 3, 8, 8))
    for fraction in (1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r'prune fraction must be in \[0, 1\)'):
            net.prune(fraction)
    with pytest.raises(ValueError, match='valid slots are 1..1'):
        net.use(2)
    with pytest.raises(ValueError, match='valid slots'):
        net.shared(0)
    with pytest.raises(ValueError, match='freeze'):
        net.add_task(4)
    net.prune(0.5)
    with pytest.raises(ValueError, match='val_ds'):
        fit(net, toy(), schedule='plateau', progress=False)
    with pytest.raises(ValueError, match='schedule'):
        fit(net, toy(), schedule='cosine', progress=False)
    net.freeze()
    with pytest.raises(ValueError, match='frozen'):
        fit(net, toy(), progress=False)
    with pytest.raises(ValueError, match='frozen'):
        net.prune(0.5)
    net.add_task(4)
    with pytest.raises(ValueError, match=r'not frozen yet'):
        net.add_task(4, share={1})
    net.prune(0.5); net.freeze()
    with pytest.raises(ValueError, match=r'cannot share slot 7.*valid slots are \[1, 2\]'):
        net.add_task(4, share={2, 7})
    with pytest.raises(ValueError, match='valid slots'):
        net.use(1, slots={1, 9})
    with pytest.raises(ValueError, match='criterion'):
        net.add_task(4); net.prune(0.5, criterion='taylor')


# ---------- slots (any integral value; bool, float, str, None rejected)
def test_slot_ids_numpy_pandas_and_bad_shares():
    import numpy as np
    import pandas as pd
    from fktnb.subnets import slot_id, slot_ids, task_id, task_ids
    assert task_id is slot_id and task_ids is slot_ids          # the former names, still imported by other modules
    net = resnet18(width=1 / 16)
    net.add_task(3); net.prune(0.65); net.freeze()
    for bad in (True, {1.0}, '1', 1.0, [None], np.True_):
        with pytest.raises(ValueError, match='share must be an integer'):
            net.add_task(3, share=bad)
    assert net.tasks == 1                                   # nothing changed by the failed calls
    assert net.add_task(3, share=np.int64(1)) == 2 and net.shared(2) == {1}
    assert all(type(s) is int for s in net.shared(2))
    net.use(np.int64(1)); assert net.selection == (1, frozenset({1}))
    net.use(pd.Series([2]).iloc[0]); assert net.selection == (2, frozenset({1, 2}))
    net.use(torch.tensor(2), slots=pd.Series([1, 2]))
    assert net.selection == (2, frozenset({1, 2}))
    assert net.head(np.int32(1)) is net.heads['1']
    assert torch.equal(net.slot_filters(np.int64(1), 'conv1'), net.owner['conv1'] == 1)
    assert torch.equal(net.task_filters(1, 'conv1'), net.owner['conv1'] == 1)         # the former name
    assert net.connections(np.int64(2), 'conv1', 'layer1.0.conv1').shape == (4, 4)
    for bad in (1.0, '1', None, True, torch.tensor([1])):
        with pytest.raises(ValueError, match='slot must be an integer.*valid slots are 1..2'):
            net.use(bad)
    assert slot_id(np.uint8(7)) == 7 and slot_ids(np.array([2, 1])) == {1, 2}
    net.prune(0.65); net.freeze()
    with pytest.raises(ValueError, match='cannot share slot 3'):     # a future slot
        net.add_task(3, share=[1, np.int64(3)])


# ---------- pruning counts: Python's round (halves to even) by default
def test_prune_rounding_hand_counts():
    from fktnb.subnets import n_pruned
    assert [n_pruned(0.65, n) for n in (10, 90, 256, 166, 70)] == [6, 58, 166, 108, 46]
    assert [n_pruned(0.65, n, rounding='half_up') for n in (10, 90, 256)] == [7, 59, 166]
    # a stem of 10 filters (width 10/64) and FC layers of 90 units (width 90/4096)
    for build, width, layer, even, up in ((resnet18, 10 / 64, 'conv1', 6, 7), (vgg16, 90 / 4096, 'fc1', 58, 59)):
        for rounding, n in (('half_even', even), ('half_up', up)):
            net = build(width=width); net.add_task(2)
            pruned = net.prune(0.65, rounding=rounding) if rounding != 'half_even' else net.prune(0.65)
            assert len(pruned[layer]) == n, (build.__name__, rounding)
    with pytest.raises(ValueError, match='half_even'):
        net.prune(0.65, rounding='nearest')


# ---------- VGG-16 with the authors' two fully connected layers
def test_vgg16_fc_layers_and_graph():
    net = vgg16(width=1 / 16)
    assert list(net.layers) == [f'conv{i}' for i in range(1, 14)] + ['fc1', 'fc2']
    expected = [(f'conv{i}', f'conv{i + 1}') for i in range(1, 13)] + [('conv13', 'fc1'), ('fc1', 'fc2')]
    assert net.graph == expected
    assert set(net.activation_modules()) == set(net.layers)
    for width, c, f in ((1.0, 512, 4096), (1 / 8, 64, 512)):
        net = vgg16(width=width)
        shapes = {k: tuple(v.shape) for k, v in net.named_parameters()}
        assert shapes['body.conv1.conv.weight'] == (int(64 * width), 3, 3, 3)
        assert shapes['body.conv13.conv.weight'] == (c, c, 3, 3)
        assert shapes['body.fc1.fc.weight'] == (f, c) and shapes['body.fc2.fc.weight'] == (f, f)
        assert not any('fc' in k and 'bias' in k for k in shapes)
        net.add_task(7)
        assert tuple(net.head(1).weight.shape) == (7, f) and net.head(1).bias is not None
        if width == 1.0:
            for l in ('fc1', 'fc2'):
                w = net.layers[l].weight
                assert abs(w.std().item() - 0.01) < 2e-4 and abs(w.mean().item()) < 2e-4, l
    old = vgg16(width=1 / 8, fc=False)
    assert list(old.layers)[-1] == 'conv13' and old.n_features == 64


def test_vgg16_fc_frozen_and_pruned_units():
    net = vgg16(width=1 / 16, seed=1)
    net.add_task(4)
    fit(net, toy(seed=1), seed=1, **FIT)
    net.prune(0.65)
    fit(net, toy(seed=1), seed=1, **FIT)
    net.freeze()
    x = toy(32, seed=5).tensors[0]
    before = {l: net.layers[l].weight.detach().clone() for l in ('fc1', 'fc2')}
    logits = net.use(1)(x).detach().clone()
    net.add_task(4, share={1})
    fit(net, toy(seed=2), seed=2, **FIT)
    net.prune(0.65); net.freeze()
    for l, w in before.items():
        rows = net.owner[l] == 1
        assert rows.sum() == 256 - round(0.65 * 256)
        assert torch.equal(net.layers[l].weight[rows], w[rows]), l
        assert (net.layers[l].weight[net.owner[l] == 0] == 0).all()
        cols = ~torch.isin(net.owner[net.inp[l]], torch.tensor([1]))
        assert (net.layers[l].weight[rows][:, cols] == 0).all(), l            # constraint 3 on task 1's FC columns
    assert torch.equal(net.use(1)(x), logits)
    head_cols = net.owner['fc2'] != 1
    assert (net.head(1).weight[:, head_cols] == 0).all()
    # pruned (free) and task-2 FC units output exactly zero under task 1
    acts = {}
    hooks = [m.register_forward_hook(lambda m, i, o, l=l: acts.__setitem__(l, o))
             for l, m in net.activation_modules().items() if l.startswith('fc')]
    net.use(1)(x)
    for h in hooks: h.remove()
    for l in ('fc1', 'fc2'):
        assert acts[l].shape == (32, 256)
        assert (acts[l][:, net.owner[l] != 1] == 0).all() and (acts[l][:, net.owner[l] == 1] != 0).any()


# ---------- one network, several input sizes
@pytest.mark.parametrize('arch', list(ARCHS))
def test_mixed_input_sizes(arch):
    net = ARCHS[arch](in_size=64, width=1 / 16, seed=2)
    g = torch.Generator().manual_seed(0)
    big = TensorDataset(torch.randn(32, 3, 64, 64, generator=g), torch.randint(0, 4, (32,), generator=g))
    small = toy(32, seed=3)
    net.add_task(4); fit(net, big, seed=0, **FIT); net.prune(0.65); net.freeze()
    x1 = big.tensors[0]
    out1 = net.use(1)(x1).detach().clone()
    acc1 = evaluate(net, 1, big)
    net.add_task(4, share={1}); fit(net, small, seed=0, **FIT); net.prune(0.65); net.freeze()
    assert torch.equal(net.use(1)(x1), out1) and evaluate(net, 1, big) == acc1
    assert 0 <= evaluate(net, 2, small) <= 1
    assert net.use(2)(torch.randn(4, 3, 48, 40)).shape == (4, 4)
    with pytest.raises(ValueError, match='at least'):
        net(torch.randn(4, 3, net.min_size - 1, 64))
    with pytest.raises(ValueError, match='batch dimension'):
        net(torch.randn(3, 32, 32))


# ---------- the registry
def test_registry():
    from collections import OrderedDict
    from fktnb.models import (register_arch, get_arch, ARCHS as REG, ConvUnit, GlobalAvgPool, FCUnit, scaled_width)
    import torch.nn as nn
    assert REG['vgg16'] is vgg16 and get_arch('resnet18') is resnet18
    with pytest.raises(ValueError, match=r"registered are \[.*'resnet18'.*'vgg16'"):
        get_arch('alexnet')
    with pytest.raises(ValueError, match='replace=True'):
        register_arch('vgg16', vgg16)

    def tiny(in_size=32, width=1.0, seed=0, in_channels=3, hidden=8):
        c = scaled_width(16, width, 'tiny')
        body = nn.Sequential(OrderedDict(a=ConvUnit(in_channels, c), p=nn.MaxPool2d(2), b=ConvUnit(c, c),
                                  gap=GlobalAvgPool(), fc=FCUnit(c, hidden)))
        return MaskedNet(body, in_size, in_channels, seed)
    try:
        register_arch('tiny_test', tiny)
        net = get_arch('tiny_test')(width=0.5, seed=1, hidden=6)
        assert net.kwargs == dict(in_size=32, width=0.5, seed=1, in_channels=3, hidden=6)
        assert list(net.layers) == ['a', 'b', 'fc'] and net.graph == [('a', 'b'), ('b', 'fc')]
        with pytest.raises(ValueError, match='already registered'):
            register_arch('tiny_test', tiny)
        register_arch('tiny_test', tiny, replace=True)
    finally:
        REG.pop('tiny_test', None)


# ---------- compact checkpoints
def test_compact_checkpoint(tmp_path):
    net = resnet18(width=1 / 8, seed=7)
    net.add_task(4); fit(net, toy(seed=1), seed=1, **FIT); net.prune(0.65); net.freeze()
    net.add_task(3, share=1); net.prune(0.5); net.freeze()
    p = net.save(tmp_path / 'new.pt')
    d = torch.load(p, weights_only=True)                 # only tensors and plain values
    assert 'init' not in d
    old = dict(d, init={l: w.clone() for l, w in net.init_weights.items()}, format=1)   # the earlier file layout
    del old['init_digest']
    torch.save(old, tmp_path / 'old.pt')
    new_size, old_size = (tmp_path / 'new.pt').stat().st_size, (tmp_path / 'old.pt').stat().st_size
    assert new_size <= 0.55 * old_size, (new_size, old_size)
    # the rebuilt initial weights are the ones of the saved net, bit for bit
    fresh = resnet18(width=1 / 8, seed=7)
    assert all(torch.equal(fresh.init_weights[l], net.init_weights[l]) for l in net.layers)
    x = toy(8, seed=4).tensors[0]
    for path in (tmp_path / 'new.pt', tmp_path / 'old.pt'):
        net2 = MaskedNet.load(path)
        assert all(torch.equal(a, b) for a, b in zip(net2.state_dict().values(), net.state_dict().values()))
        assert list(net2.state_dict()) == list(net.state_dict())
        assert all(torch.equal(net2.owner[l], net.owner[l]) for l in net.layers)
        assert all(torch.equal(net2.init_weights[l], net.init_weights[l]) for l in net.layers)
        assert net2.frozen_tasks == {1, 2} and net2.shared(2) == {1} and net2._share == net._share
        assert net2.n_classes == net.n_classes and net2.current == 2 and net2.kwargs == net.kwargs
        for t in (1, 2):
            assert torch.equal(net2.use(t)(x), net.use(t)(x))
    # add_task after load re-initialises exactly as on the never-saved net
    a, b = copy.deepcopy(net), MaskedNet.load(tmp_path / 'new.pt')
    a.add_task(5, share=2); b.add_task(5, share=2)
    assert all(torch.equal(u, v) for u, v in zip(a.state_dict().values(), b.state_dict().values()))
    # a builder that no longer gives the saved initial weights is detected
    d['init_digest'] = '0' * 64
    torch.save(d, tmp_path / 'bad.pt')
    with pytest.raises(ValueError, match='other initial weights'):
        MaskedNet.load(tmp_path / 'bad.pt')


# ---------- capacity
def test_capacity_own_filters_left_and_add_task_error():
    from fktnb.subnets import own_filters_left
    # n = 4 (ResNet-18 stem at width 1/16), fraction 0.65, by hand: own 4 prune 3 keep 1; own 3 prune 2 keep 1;
    # own 2 prune 1 keep 1; own 1 prune round(0.65) = 1 keep 0; and so on
    assert own_filters_left(4, 0.65, 6) == [1, 1, 1, 0, 0, 0]
    assert own_filters_left(256, 0.65, 3) == [90, 58, 38]
    assert own_filters_left(4, 0.3, 3) == [3, 1, 0]
    net = resnet18(width=1 / 16)
    kept = []
    for t in range(1, 5):
        net.add_task(2); net.prune(0.65); net.freeze()
        kept.append(int((net.owner['conv1'] == t).sum()))
    assert kept == [1, 1, 1, 0]
    net = resnet18(width=1 / 16)
    for t in range(2):
        net.add_task(2); net.prune(0.3); net.freeze()
    with pytest.raises(ValueError, match=r"slot 3 would get no free filter in layer 'conv1'.*larger width"):
        net.add_task(2)
    assert net.tasks == 2


# ---------- no import circle: subnets knows nothing of models (save/load live in models)
def test_subnets_does_not_import_models():
    import ast
    import fktnb.subnets as S
    tree = ast.parse(Path(S.__file__).read_text())
    mods = {n.module or '' for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    mods |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert mods and not any('models' in m for m in mods), mods
    code = 'import sys, fktnb.subnets; print("fktnb.models" in sys.modules)'
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == 'False'
    assert 'save' in MaskedNet.__dict__ and 'load' in MaskedNet.__dict__
    assert not hasattr(S.Subnets, 'save') and not hasattr(S.Subnets, 'load')


# ---------- safe checkpoints: a planted pickle is refused and its code never runs
class _Payload:
    "Unpickling this runs a shell command that creates `marker`."
    def __init__(self, marker): self.marker = str(marker)
    def __reduce__(self): return (os.system, (f'touch {self.marker}',))


def _real_checkpoint(path):
    net = resnet18(width=1 / 16); net.add_task(3); net.prune(0.65); net.freeze()
    return net.save(path)


@pytest.mark.parametrize('how', ['torch_file', 'inside_a_real_checkpoint', 'bare_pickle'])
def test_planted_pickle_refused(tmp_path, how):
    marker, path = tmp_path / 'code_ran', tmp_path / 'planted.pt'
    if how == 'torch_file':
        torch.save(dict(arch='resnet18', kwargs={}, state=_Payload(marker)), path)
    elif how == 'inside_a_real_checkpoint':
        d = torch.load(_real_checkpoint(path), weights_only=True)
        d['kwargs'] = dict(d['kwargs'], seed=_Payload(marker))
        torch.save(d, path)
    else:
        path.write_bytes(pickle.dumps(dict(state=_Payload(marker))))
    if how == 'bare_pickle':          # not torch's zip format: refused unread (the store sets such files aside)
        with pytest.raises(pickle.UnpicklingError, match='not a fktnb checkpoint') as e:
            MaskedNet.load(path)
    else:
        with pytest.raises(ValueError, match='not a safe fktnb checkpoint.*refused without running anything') as e:
            MaskedNet.load(path)
        assert 'system' in str(e.value)                                   # says what was refused
    assert str(path) in str(e.value)
    assert not marker.exists()
    # the planted file really runs code when unpickled without the guard (so this test can fail)
    if how == 'bare_pickle': pickle.loads(path.read_bytes())
    else: torch.load(path, weights_only=False)
    assert marker.exists()


def test_not_a_checkpoint_and_plain_values_only(tmp_path):
    import numpy as np
    net = resnet18(width=1 / 16); net.add_task(3)
    torch.save(net.state_dict(), tmp_path / 'state.pt')
    with pytest.raises(ValueError, match=r'state\.pt is not a fktnb checkpoint.*bare state_dict'):
        MaskedNet.load(tmp_path / 'state.pt')
    # builder arguments are written as plain values: numpy numbers become Python ones, anything else is refused
    net.kwargs = dict(net.kwargs, seed=np.int64(0), width=np.float64(1 / 16))
    d = torch.load(net.save(tmp_path / 'np.pt'), weights_only=True)
    assert d['kwargs']['seed'] == 0 and type(d['kwargs']['seed']) is int and type(d['kwargs']['width']) is float
    assert MaskedNet.load(tmp_path / 'np.pt').kwargs == d['kwargs']
    net.kwargs = dict(net.kwargs, act=torch.nn.ReLU())
    with pytest.raises(ValueError, match='cannot save the arguments of resnet18.*ReLU.*plain Python values'):
        net.save(tmp_path / 'bad.pt')
    assert not (tmp_path / 'bad.pt').exists()


def test_load_map_location(tmp_path):
    net = vgg16(width=1 / 16); net.add_task(3); net.prune(0.65); net.freeze()
    p = net.save(tmp_path / 'n.pt')
    for where in (None, 'cpu', torch.device('cpu')):
        net2 = MaskedNet.load(p, map_location=where)
        assert next(net2.parameters()).device == torch.device('cpu')
        assert all(torch.equal(a, b) for a, b in zip(net2.state_dict().values(), net.state_dict().values()))
