"""Usefulness measures (issue 5) against an independent reference computed with numpy.corrcoef per class."""
import numpy as np
import pytest
import torch

from fktnb.measures import (ActivationStats, activation_score, collect_activations, collect_stats, connectivity,
                            fkt, score_subnetworks)


# ---------------------------------------------------------------- the independent reference (numpy only)
def ref_class_abs_r(a_child, a_parent, labels):
    "Class-averaged |Pearson r| [n_child, n_parent] by numpy.corrcoef per class; undefined r (nan) counts as 0."
    classes = np.unique(labels)
    nc = a_child.shape[1]
    out = np.zeros((nc, a_parent.shape[1]))
    for k in classes:
        m = labels == k
        x = np.concatenate([a_child[m], a_parent[m]], 1).astype(np.float64)
        if m.sum() < 2:
            continue                               # a single sample: r undefined for every pair, counted as 0
        with np.errstate(all='ignore'):
            cc = np.corrcoef(x, rowvar=False)
        out += np.nan_to_num(np.abs(cc[:nc, nc:]), nan=0.0)
    return out / len(classes)


def ref_connectivity(net, t, acts, labels, squared=True):
    acts = {l: a.numpy() for l, a in acts.items()}
    labels = labels.numpy()
    rho = {}
    for p, c in net.graph:
        conn = net.connections(t, p, c).cpu().numpy().astype(bool)
        if not conn.any():
            continue
        v = ref_class_abs_r(acts[c], acts[p], labels)[conn]
        rho[(p, c)] = float(np.mean(v ** 2 if squared else v))
    return float(np.mean(list(rho.values()))), rho


def ref_activation(net, t, acts, squared=True):
    per_layer = []
    for l, a in acts.items():
        f = net.task_filters(t, l).cpu().numpy().astype(bool)
        if f.any():
            v = a.numpy().astype(np.float64)[:, f]
            per_layer.append(np.mean(v ** 2 if squared else v))
    return float(np.mean(per_layer))


# ---------------------------------------------------------------- streaming statistics on synthetic matrices
def synthetic(n=257, seed=0):
    g = torch.Generator().manual_seed(seed)
    sizes = {'a': 5, 'b': 7, 'c': 3}
    acts = {l: (torch.randn(n, f, generator=g) * 3 + 10).relu() for l, f in sizes.items()}
    y = torch.randint(0, 4, (n,), generator=g)
    y[-1] = 4                                     # class 4 has a single sample
    acts['b'][y == 2, 3] = 0.7                    # filter b3 constant within class 2
    acts['c'][:, 1] = 0.0                         # filter c1 constant everywhere (a pruned filter)
    return acts, y, [('a', 'b'), ('b', 'c'), ('a', 'c')]


@pytest.mark.parametrize('chunk', [1, 7, 64, 10_000])
def test_stats_match_corrcoef_any_chunking(chunk):
    acts, y, edges = synthetic()
    st = ActivationStats.from_activations(acts, y, edges, chunk=chunk)
    assert st.n_samples == len(y) and st.n_classes == 5
    for p, c in edges:
        ref = ref_class_abs_r(acts[c].numpy(), acts[p].numpy(), y.numpy())
        got = st.mean_abs_correlation(p, c).numpy()
        np.testing.assert_allclose(got, ref, atol=1e-6, rtol=0)
    # the constant filter has r = 0 in class 2, and the single-sample class contributes 0 everywhere
    r = st.class_correlation('a', 'b')
    assert (r[2, 3] == 0).all() and (r[4] == 0).all() and (r[:4, 2] != 0).all()
    assert (st.mean_abs_correlation('b', 'c')[1] == 0).all()


def test_stats_per_filter_means():
    acts, y, edges = synthetic()
    st = ActivationStats.from_activations(acts, y, edges, chunk=50)
    for l, a in acts.items():
        a = a.double()
        torch.testing.assert_close(st.mean_activation(l, squared=True), (a ** 2).mean(0), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(st.mean_activation(l, squared=False), a.mean(0), rtol=1e-12, atol=1e-12)


def test_stats_large_offset_is_stable():
    "Shifted sums keep full precision when activations are large compared with their spread."
    acts, y, edges = synthetic()
    big = {l: a.double() + 1e4 for l, a in acts.items()}
    st = ActivationStats.from_activations(big, y, edges, chunk=33)
    for p, c in edges:
        ref = ref_class_abs_r(big[c].numpy(), big[p].numpy(), y.numpy())
        np.testing.assert_allclose(st.mean_abs_correlation(p, c).numpy(), ref, atol=1e-6, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='no GPU')
def test_stats_on_gpu_match_cpu():
    acts, y, edges = synthetic()
    cpu = ActivationStats.from_activations(acts, y, edges, chunk=64)
    gpu = ActivationStats.from_activations({l: a.cuda() for l, a in acts.items()}, y.cuda(), edges, chunk=64)
    assert gpu.device.type == 'cuda'
    for p, c in edges:
        torch.testing.assert_close(gpu.mean_abs_correlation(p, c).cpu(), cpu.mean_abs_correlation(p, c),
                                   atol=1e-9, rtol=0)


def test_fkt():
    assert fkt(0.8, 0.75) == pytest.approx(0.05)
    assert fkt(0.5, 0.6) == pytest.approx(-0.1)
    with pytest.raises(ValueError):
        fkt(float('nan'), 0.5)


# ---------------------------------------------------------------- on a tiny masked ResNet-18 with three subnetworks
@pytest.fixture(scope='module')
def small_run():
    models = pytest.importorskip('fktnb.models')
    torch.manual_seed(0)
    net = models.resnet18(in_size=32, width=1 / 16, seed=0)
    for n_cls, share in ((4, set()), (3, {1}), (5, set())):  # S_2 shares S_1; S_3 shares nothing
        net.add_task(n_classes=n_cls, share=share)
        net.prune(0.65)
        net.freeze()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(150, 3, 32, 32, generator=g)
    y = torch.randint(0, 4, (150,), generator=g)
    y[7] = 4                                      # a class with a single sample
    ds = torch.utils.data.TensorDataset(x, y)
    acts, labels = collect_activations(net, ds)
    return net, ds, acts, labels


def test_collect_shapes_and_labels(small_run):
    net, ds, acts, labels = small_run
    assert set(acts) == set(net.activation_modules())
    for l, a in acts.items():
        assert a.shape == (150, len(net.owner[l])) and torch.isfinite(a).all()
    assert torch.equal(labels, ds.tensors[1])
    # subnetworks differ: the three tasks own disjoint, non-empty filter sets in the first layer
    first = next(iter(net.owner))
    assert all((net.owner[first] == t).any() for t in (1, 2, 3))


def test_all_active_pass_equals_own_mask(small_run):
    "With all frozen subnetworks active, each S_t' sees exactly what it sees under net.use(t') (constraints 2-3)."
    net, ds, acts, labels = small_run
    mods = net.activation_modules()
    x = ds.tensors[0][:64]
    for t in (1, 2, 3):
        seen = {}
        hooks = [m.register_forward_hook(lambda m, i, o, l=l: seen.__setitem__(l, o.mean(dim=(2, 3))))
                 for l, m in mods.items()]
        net.eval()
        net.use(t)
        with torch.no_grad():
            net(x)
        for h in hooks:
            h.remove()
        for l in mods:
            f = net.task_filters(t, l)
            torch.testing.assert_close(acts[l][:64][:, f], seen[l][:, f], atol=1e-5, rtol=1e-5)


def test_selection_restored(small_run):
    net, ds, acts, labels = small_run
    x = ds.tensors[0][:64]
    net.use(2)
    net.eval()
    with torch.no_grad():
        before = net(x)
    collect_activations(net, ds)
    with torch.no_grad():
        after = net(x)
    assert torch.equal(before, after)


@pytest.mark.parametrize('squared', [True, False])
def test_measures_match_reference(small_run, squared):
    net, ds, acts, labels = small_run
    st = collect_stats(net, ds)                    # streaming, from the data
    results = {}
    for t in (1, 2, 3):
        P_ref, rho_ref = ref_connectivity(net, t, acts, labels, squared)
        for src in (st, (acts, labels)):
            P, rho = connectivity(net, t, src, squared=squared)
            assert set(rho) == set(rho_ref)
            for k in rho:
                assert abs(rho[k] - rho_ref[k]) < 1e-6, (t, k)
            assert abs(P - P_ref) < 1e-6
            A = activation_score(net, t, src, squared=squared)
            assert abs(A - ref_activation(net, t, acts, squared)) < 1e-6
        results[t] = P
    assert len(set(round(v, 9) for v in results.values())) == 3   # different subnetworks, different scores
    # the dataset path gives the same numbers as the stats path
    assert abs(connectivity(net, 2, ds, squared=squared)[0] - results[2]) < 1e-9


def test_constant_filter_within_class(small_run):
    "A filter of S_1 made constant in class 0 contributes r = 0 for that class: reference and measure agree."
    net, ds, acts, labels = small_run
    acts = {l: a.clone() for l, a in acts.items()}
    p, c = net.graph[0]
    f = net.task_filters(1, c).nonzero()[0, 0]
    acts[c][labels == 0, f] = 0.25
    P_ref, _ = ref_connectivity(net, 1, acts, labels)
    P, _ = connectivity(net, 1, (acts, labels))
    assert abs(P - P_ref) < 1e-6


def test_score_subnetworks_one_pass(small_run):
    net, ds, acts, labels = small_run
    s = score_subnetworks(net, ds)
    assert set(s) == {1, 2, 3}
    for t, v in s.items():
        assert abs(v['P'] - ref_connectivity(net, t, acts, labels)[0]) < 1e-6
        assert abs(v['A'] - ref_activation(net, t, acts)) < 1e-6


def test_bad_inputs(small_run):
    net, ds, acts, labels = small_run
    with pytest.raises(ValueError):
        connectivity(net, 99, (acts, labels))
    st = collect_stats(net, ds, tasks={3})       # only S_3 active: S_2 (which needs S_1) cannot be scored
    with pytest.raises(ValueError):
        connectivity(net, 2, st)
    assert connectivity(net, 3, st)[0] == pytest.approx(connectivity(net, 3, (acts, labels))[0], abs=1e-6)
