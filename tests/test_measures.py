"""Usefulness measures (issue 5) against an independent reference computed with numpy.corrcoef per class.
Subnetworks are named by the network's slots (the order in which it learned its tasks)."""
import numpy as np
import pytest
import torch

import matplotlib
matplotlib.use('Agg')

from fktnb.measures import (ActivationStats, accuracy_matrix_metrics, activation_score, activation_values,
                            collect_activations, collect_stats, connectivity, connectivity_values, filter_activation,
                            fkt, layer_connectivity, plot_layer_distributions, score_subnetworks)
from fktnb.train import eval_batches, eval_order


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
        f = net.slot_filters(t, l).cpu().numpy().astype(bool)
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


def test_stats_hold_no_class_axis():
    "Memory: 200 classes and two 512-filter layers: the statistics hold the rows and one [Fc, Fp] array, not [C, Fc, Fp]."
    g = torch.Generator().manual_seed(0)
    n, C = 600, 200
    acts = {'p': torch.rand(n, 512, generator=g), 'c': torch.rand(n, 512, generator=g)}
    y = torch.arange(n) % C
    st = ActivationStats.from_activations(acts, y, [('p', 'c')], chunk=128)
    assert st.nbytes < n * 1024 * 4 + 3 * 1024 * 8 + 10_000           # float32 rows + sums (+ the labels)
    r = st.mean_abs_correlation('p', 'c')
    assert r.shape == (512, 512) and st.nbytes < n * 1024 * 4 + 512 * 512 * 8 + 3 * 1024 * 8 + 10_000
    assert st.nbytes < C * 512 * 512 * 8 / 20                          # the old per-class sums: 420 MB
    ref = ref_class_abs_r(acts['c'].numpy(), acts['p'].numpy(), y.numpy())
    np.testing.assert_allclose(r.numpy(), ref, atol=1e-6, rtol=0)


def test_stats_updates_after_a_query():
    "Adding batches after the correlations were read recomputes them (nothing stale is cached)."
    acts, y, edges = synthetic()
    st = ActivationStats.from_activations({l: a[:100] for l, a in acts.items()}, y[:100], edges)
    st.mean_abs_correlation('a', 'b')
    st.update({l: a[100:] for l, a in acts.items()}, y[100:])
    ref = ref_class_abs_r(acts['b'].numpy(), acts['a'].numpy(), y.numpy())
    np.testing.assert_allclose(st.mean_abs_correlation('a', 'b').numpy(), ref, atol=1e-6, rtol=0)
    assert st.n_samples == len(y)


def test_stats_keep_subset_of_filters():
    "Filters left out of `keep` count as constant (r = 0); the kept ones are exact."
    acts, y, edges = synthetic()
    keep = {'b': torch.tensor([True, False, True, True, False, True, True])}
    st = ActivationStats(dict(a=5, b=7, c=3), edges, keep=keep).update(acts, y)
    for p, c in edges:
        ref = ref_class_abs_r(acts[c].numpy(), acts[p].numpy(), y.numpy())
        if c == 'b': ref[~keep['b'].numpy()] = 0
        if p == 'b': ref[:, ~keep['b'].numpy()] = 0
        np.testing.assert_allclose(st.mean_abs_correlation(p, c).numpy(), ref, atol=1e-6, rtol=0)
    with pytest.raises(ValueError):
        ActivationStats(dict(a=5), [], keep={'a': torch.ones(4, dtype=torch.bool)})
    with pytest.raises(ValueError):
        st.mean_abs_correlation('c', 'a')                              # not an edge


def test_filter_activation():
    conv = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    torch.testing.assert_close(filter_activation(conv), conv.flatten(2).mean(2))
    fc = torch.rand(2, 7)
    assert filter_activation(fc) is fc                                 # an FC unit's output as it is
    with pytest.raises(ValueError):
        filter_activation(torch.rand(2, 3, 4))


def test_accuracy_matrix_metrics():
    nan = float('nan')
    R = [[0.90, nan, nan, nan],
         [0.88, 0.70, nan, nan],
         [0.85, 0.72, 0.60, nan],
         [0.80, 0.71, 0.62, 0.50]]
    m = accuracy_matrix_metrics(R)
    assert m['ACC'] == pytest.approx((0.80 + 0.71 + 0.62 + 0.50) / 4)   # 0.6575
    assert m['BWT'] == pytest.approx(((0.80 - 0.90) + (0.71 - 0.70) + (0.62 - 0.60)) / 3)   # -0.0233
    pd = pytest.importorskip('pandas')
    assert accuracy_matrix_metrics(pd.DataFrame(R)) == m
    frozen = np.tril(np.tile([0.9, 0.7, 0.6], (3, 1)))                # nothing ever moves: BWT exactly 0
    assert accuracy_matrix_metrics(frozen) == dict(ACC=pytest.approx(2.2 / 3), BWT=0.0)
    assert np.isnan(accuracy_matrix_metrics([[0.5]])['BWT'])
    for bad in ([[0.9, 0.1]], [[nan, nan], [0.5, 0.4]], [[0.9, nan], [0.5, nan]], []):
        with pytest.raises(ValueError):
            accuracy_matrix_metrics(bad)


def test_plot_layer_distributions():
    import matplotlib.pyplot as plt
    rng = np.random.default_rng(0)
    vals = {'S_1 (mnist)': {'conv1': rng.random(50), ('conv1', 'conv2'): rng.random(80) ** 2},
            'S_2 (cifar)': {'conv1': np.full(5, 0.3), ('conv1', 'conv2'): np.array([0.7])},
            'S_3 (none)': {'conv1': np.array([]), ('conv1', 'conv2'): np.array([])}}
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('error')                                # degenerate input: silent
        fig = plot_layer_distributions(vals, xlabel='squared connectivity', title='T_beta data')
    axes = fig.axes
    assert len(axes) == 2 and axes[1].get_title() == 'conv1 → conv2' and axes[0].get_xlabel() == 'squared connectivity'
    assert len(axes[0].collections) >= 1                               # the shaded density of S_1
    assert any(np.ptp(l.get_xdata()) == 0 and l.get_xdata()[0] == 0.3 for l in axes[0].lines)   # S_2: a vertical line
    legend = axes[1].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == list(vals)
    texts = [t.get_text() for ax in axes for t in [ax.title, ax.xaxis.label, ax.yaxis.label]]
    assert not any('$' in t or '\\' in t for t in texts)
    plt.close(fig)
    fig, ax = plt.subplots(2, 2)
    assert plot_layer_distributions(vals, layers=['conv1'], axes=ax[1]) is fig
    plt.close(fig)
    with pytest.raises(ValueError):
        plot_layer_distributions({})


def test_fkt():
    assert fkt(0.8, 0.75) == pytest.approx(0.05)
    assert fkt(0.5, 0.6) == pytest.approx(-0.1)
    with pytest.raises(ValueError):
        fkt(float('nan'), 0.5)


# ---------------------------------------------------------------- on a tiny masked ResNet-18 with three subnetworks
def _continual_run(net, tasks, n, n_labels, seed, single=None):
    "Learn (n_classes, share) tasks on `net` (pruned, frozen; no training needed), then collect activations on random data."
    for n_cls, share in tasks:
        net.add_task(n_classes=n_cls, share=share)
        net.prune(0.65)
        net.freeze()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 32, 32, generator=g)
    y = torch.randint(0, n_labels, (n,), generator=g)
    if single is not None: y[7] = single          # a class with a single sample
    ds = torch.utils.data.TensorDataset(x, y)
    acts, labels = collect_activations(net, ds)
    return net, ds, acts, labels


@pytest.fixture(scope='module')
def small_run():
    from fktnb.models import resnet18
    torch.manual_seed(0)    # S_2 shares S_1; S_3 shares nothing
    return _continual_run(resnet18(in_size=32, width=1 / 16, seed=0), ((4, set()), (3, {1}), (5, set())), 150, 4, 1, single=4)


def test_collect_shapes_and_labels(small_run):
    net, ds, acts, labels = small_run
    assert set(acts) == set(net.activation_modules())
    for l, a in acts.items():
        assert a.shape == (150, len(net.owner[l])) and torch.isfinite(a).all()
    assert torch.equal(labels, ds.tensors[1])
    # subnetworks differ: the three tasks own disjoint, non-empty filter sets in the first layer
    first = next(iter(net.owner))
    assert all((net.owner[first] == t).any() for t in (1, 2, 3))


@pytest.mark.numerics
def test_all_active_pass_equals_own_mask(small_run):
    "With all frozen subnetworks active, each S_t' sees exactly what it sees under net.use(t') (constraints 2-3)."
    net, ds, acts, labels = small_run
    mods = net.activation_modules()
    first = eval_order(len(ds))[:64]                 # the samples of the pass's first (class-mixed) batch
    x, _ = next(eval_batches(ds, 64))
    assert torch.equal(x, ds.tensors[0][first])
    for t in (1, 2, 3):
        seen = {}
        hooks = [m.register_forward_hook(lambda m, i, o, l=l: seen.__setitem__(l, filter_activation(o)))
                 for l, m in mods.items()]
        net.eval()
        net.use(t)
        with torch.no_grad():
            net(x)
        for h in hooks:
            h.remove()
        for l in mods:
            f = net.slot_filters(t, l)
            torch.testing.assert_close(acts[l][first][:, f], seen[l][:, f], atol=1e-5, rtol=1e-5)


@pytest.mark.numerics
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
    f = net.slot_filters(1, c).nonzero()[0, 0]
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
    st = collect_stats(net, ds, slots={3})       # only S_3 active: S_2 (which needs S_1) cannot be scored
    with pytest.raises(ValueError):
        connectivity(net, 2, st)
    assert connectivity(net, 3, st)[0] == pytest.approx(connectivity(net, 3, (acts, labels))[0], abs=1e-6)


def test_slot_ids(small_run):
    "numpy/pandas integer slots are accepted everywhere; 1.0, True and '1' are rejected."
    net, ds, acts, labels = small_run
    st = collect_stats(net, ds, slots=[np.int64(1), np.int32(2), 3])
    assert st.slots == {1, 2, 3} and all(type(t) is int for t in st.slots)
    p, c = net.graph[0]
    for t in (np.int64(2), np.int8(2)):
        assert activation_score(net, t, st) == activation_score(net, 2, st)
        assert connectivity(net, t, st) == connectivity(net, 2, st)
        assert torch.equal(layer_connectivity(net, t, st, p, c), layer_connectivity(net, 2, st, p, c))
        assert activation_values(net, t, st).keys() == activation_values(net, 2, st).keys()
        assert all(np.array_equal(v, connectivity_values(net, 2, st)[k]) for k, v in connectivity_values(net, t, st).items())
    pd = pytest.importorskip('pandas')
    ids = pd.Series([1, 3]).to_numpy()
    s = score_subnetworks(net, ds, candidates=ids)
    assert set(s) == {1, 3} and all(type(t) is int for t in s)
    for bad in (2.0, True, '2', np.float64(2)):
        for f in (lambda t: activation_score(net, t, st), lambda t: connectivity(net, t, st),
                  lambda t: layer_connectivity(net, t, st, p, c), lambda t: activation_values(net, t, st),
                  lambda t: connectivity_values(net, t, st), lambda t: score_subnetworks(net, ds, candidates=[t]),
                  lambda t: collect_stats(net, ds, slots=[t])):
            with pytest.raises(ValueError):
                f(bad)


# ---------------------------------------------------------------- VGG-16 with its two fully connected layers
@pytest.fixture(scope='module')
def vgg_run():
    from fktnb.models import vgg16
    return _continual_run(vgg16(in_size=32, width=1 / 16, seed=0), ((4, set()), (3, {1})), 130, 3, 2)


@pytest.mark.numerics
def test_fc_activations_are_the_units_outputs(vgg_run):
    net, ds, acts, labels = vgg_run
    assert ('conv13', 'fc1') in net.graph and ('fc1', 'fc2') in net.graph
    out = {}
    mods = net.activation_modules()
    hooks = [mods[l].register_forward_hook(lambda m, i, o, l=l: out.__setitem__(l, o)) for l in ('conv13', 'fc1', 'fc2')]
    net.eval()
    first = eval_order(len(ds))[:64]                 # the pass's first batch
    with torch.no_grad(), net.selected(2, {1, 2}):
        net(ds.tensors[0][first])
    for h in hooks:
        h.remove()
    assert out['fc1'].dim() == 2 and out['conv13'].dim() == 4
    for l in ('fc1', 'fc2'):
        assert acts[l].shape == (130, out[l].shape[1])
        torch.testing.assert_close(acts[l][first], out[l])              # post-ReLU output as it is
        assert (acts[l] >= 0).all() and acts[l].abs().sum() > 0
    torch.testing.assert_close(acts['conv13'][first], out['conv13'].mean((2, 3)))


@pytest.mark.parametrize('squared', [True, False])
def test_vgg_measures_match_reference(vgg_run, squared):
    net, ds, acts, labels = vgg_run
    st = collect_stats(net, ds)
    assert len(st._kept_cols) < st.total_filters                        # free filters of no frozen task: not stored
    for t in (1, 2):
        P_ref, rho_ref = ref_connectivity(net, t, acts, labels, squared)
        P, rho = connectivity(net, t, st, squared=squared)
        assert ('fc1', 'fc2') in rho and ('conv13', 'fc1') in rho and set(rho) == set(rho_ref)
        assert max(abs(rho[k] - rho_ref[k]) for k in rho) < 1e-6 and abs(P - P_ref) < 1e-6
        assert abs(activation_score(net, t, st, squared=squared) - ref_activation(net, t, acts, squared)) < 1e-6
