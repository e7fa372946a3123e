"""Invariants of the continual learner (issue 3): exact freezing, pruning counts, constraint 3, closure of shared
sets, omission, save/load, and the errors for bad inputs. Both architectures at width 1/16 on tiny random data."""
import copy
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


def n_round(k, n):          # round(k*n), halves up; computed independently of the library
    return int(k * n + 0.5)


def train_task(net, share, k, seed):
    t = net.add_task(4, share=share)
    fit(net, toy(seed=seed), seed=seed, **FIT)
    counts = {l: int((net.owner[l] == t).sum()) for l in net.layers}
    net.prune(k)
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
    for share, k, seed in [((), 0.65, 1), ({1}, 0.5, 2), ((), 0.65, 3), ({2}, 0.5, 4)]:
        t, counts[t] = train_task(net, share, k, seed)
        snaps[t] = copy.deepcopy(net.state_dict())
        logits[t] = net.use(t)(x).detach().clone()
        accs[t] = evaluate(net, t, toy(32, seed=t))
    return dict(net=net, x=x, snaps=snaps, logits=logits, counts=counts, accs=accs, arch=request.param)


def test_graph_counts():
    assert len(resnet18(width=1 / 16).graph) == 31
    assert len(resnet18(width=1 / 16, graph='full').graph) == 38
    assert len(vgg16(width=1 / 16).graph) == 12
    assert len(vgg16(in_size=64, width=1 / 16).layers) == 13


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
    ks = {1: 0.65, 2: 0.5, 3: 0.65, 4: 0.5}
    for t, counts in seq['counts'].items():
        for l, n in counts.items():
            assert int((net.owner[l] == t).sum()) == n - n_round(ks[t], n), (t, l, n)
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
            w = net.layers[c].weight.detach().abs().flatten(2).sum(2)
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


def test_use_tasks_analysis(seq):
    net, x = seq['net'], seq['x']
    assert torch.equal(net.use(4, tasks={1, 2, 4})(x), seq['logits'][4])
    out = net.use(4, tasks={4})(x)          # omitting 1 and 2 changes task 4's output
    assert not torch.equal(out, seq['logits'][4])


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
    assert torch.equal(net.use(3, tasks={1, 2, 3, 4})(x), seq['logits'][3])


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
        ARCHS[arch](in_size=20)
    with pytest.raises(ValueError, match='add_task'):
        net.prune(0.5)
    with pytest.raises(ValueError, match='add_task'):
        fit(net, toy(), progress=False)
    with pytest.raises(ValueError, match='valid ids are \\[\\]'):
        net.add_task(4, share={1})
    t = net.add_task(4)
    with pytest.raises(ValueError, match='in_size=64'):
        net(torch.randn(2, 3, 64, 64))
    for k in (1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r'\[0, 1\)'):
            net.prune(k)
    with pytest.raises(ValueError, match='valid task ids are 1..1'):
        net.use(2)
    with pytest.raises(ValueError, match='valid task ids'):
        net.shared(0)
    with pytest.raises(ValueError, match='freeze'):
        net.add_task(4)
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
    net.freeze()
    with pytest.raises(ValueError, match=r'cannot share task 7.*valid ids are \[1, 2\]'):
        net.add_task(4, share={2, 7})
    with pytest.raises(ValueError, match='valid task ids'):
        net.use(1, tasks={1, 9})
    with pytest.raises(ValueError, match='criterion'):
        net.add_task(4); net.prune(0.5, criterion='taylor')
