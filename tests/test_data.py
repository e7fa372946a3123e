"""Tests of fktnb.sources, fktnb.sequences and fktnb.fixtures (and the deprecated fktnb.data): every sequence from
fixture files, the real MNIST / Fashion-MNIST when present, bad input, user-registered sources and sequences, data
identity, the class-mixed validation split."""
import importlib, pickle, shutil, sys, warnings
from pathlib import Path
import numpy as np
import pytest
import torch

from fktnb.sources import (SOURCES, load_source, ArrayDataset, DataCorruptError, STATS, register_source,
                           unregister_source, sequence_identity, split_indices)
from fktnb.sequences import (load_sequence, SEQUENCES, pmnist_permutation, syn_sequence, register_sequence,
                             unregister_sequence, TaskSpec, sequence_names, get_sequence, task_families, sequence_sizes)
from fktnb.fixtures import write_fixtures


@pytest.fixture(scope='module')
def fx(tmp_path_factory):
    return write_fixtures(tmp_path_factory.mktemp('fixtures'))


@pytest.fixture(scope='module')
def seqs(fx):
    return {name: load_sequence(name, root=fx) for name in ('tic', 'mpc', 'kef', 'pmf', 'syn')}


def test_every_sequence_has_six_tasks(seqs):
    assert set(SEQUENCES) == {'tic', 'mpc', 'kef', 'pmf', 'syn'} and sequence_names() == ['kef', 'mpc', 'pmf', 'syn', 'tic']
    for name, tasks in seqs.items():
        assert [t.index for t in tasks] == [1, 2, 3, 4, 5, 6], name
        for t in tasks:
            for ds in (t.train, t.val, t.test):
                assert isinstance(ds, ArrayDataset) and ds.images.dtype == torch.uint8 and len(ds) > 0
                assert ds.n_classes == t.n_classes
                assert 0 <= int(ds.labels.min()) and int(ds.labels.max()) < t.n_classes


def test_shapes_and_sizes(seqs):
    tic = seqs['tic']
    assert tic[0].train.images.shape[1:] == (3, 64, 64) and tic[0].in_size == 64
    x, y = tic[0].train[0]
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32 and isinstance(y, int)
    for name in ('tic', 'mpc', 'kef', 'syn'):
        for t in seqs[name][1 if name == 'tic' else 0:]:
            assert t.train.images.shape[1:] == (3, 32, 32) and t.test.images.shape[1:] == (3, 32, 32), t
            assert t.in_size == 32
    assert [t.n_classes for t in seqs['kef']] == [49, 10, 47, 10, 10, 10]
    assert [t.n_classes for t in tic] == [5, 10, 10, 10, 10, 10]     # the fixture Tiny ImageNet has 5 classes
    assert [t.family for t in seqs['mpc']] == ['mnist-like', 'cifar'] * 3
    assert [t.family for t in seqs['kef']] == ['mnist-like', 'cifar'] * 3
    assert [t.family for t in tic] == ['imagenet'] + ['cifar'] * 5
    assert [t.family for t in seqs['syn']] == ['syn-A', 'syn-B'] * 3


def test_counts_and_val_split(seqs):
    # fixtures: MNIST 6 per class train / 2 test; CIFAR-10 5x10 + 20; CIFAR-100 3 per class + 1; K49 2 + 1
    sizes = {t.name: (len(t.train), len(t.val), len(t.test)) for s in seqs.values() for t in s}
    assert sizes['pmnist-1'] == (54, 6, 20)
    assert sizes['cifar10'] == (45, 5, 20)
    assert sizes['cifar100-1'] == (27, 3, 10)
    assert sizes['k49'] == (89, 9, 49)
    assert sizes['emnist-balanced'] == (254, 28, 94)
    assert sizes['tinyimagenet'] == (18, 2, 10)
    # train and val are disjoint and together the official train set
    t = seqs['mpc'][1]
    a = torch.cat([t.train.images, t.val.images]).reshape(30, -1)
    assert len({tuple(r.tolist()) for r in a}) == 30
    half = load_sequence('syn', val_frac=0.5)
    assert [(len(t.train), len(t.val)) for t in half] == [(200, 200)] * 6


def test_cifar100_subsets(seqs):
    c = {t.name: t.classes for s in seqs.values() for t in s}
    for n in (1, 2, 3, 4, 5):
        assert c[f'cifar100-{n}'] == [f'class{i:02d}' for i in range(10 * (n - 1), 10 * n)]
    assert [t.name for t in seqs['tic']][2:] == ['cifar100-1', 'cifar100-2', 'cifar100-3', 'cifar100-4']
    assert [t.name for t in seqs['mpc']][1::2] == ['cifar100-1', 'cifar100-3', 'cifar100-5']
    assert [t.name for t in seqs['kef']][1::2] == ['cifar100-1', 'cifar100-3', 'cifar100-5']


def test_pmnist_permutations(fx, seqs):
    mpc = seqs['mpc']
    again = load_sequence('mpc', root=fx, tasks=[1, 3, 5])
    for a, b in zip(mpc[0::2], again):
        assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.images, b.test.images)
    p = [pmnist_permutation(s) for s in (0, 2, 4)]
    assert all(torch.equal(q.sort().values, torch.arange(1024)) for q in p)
    assert not torch.equal(p[0], p[1]) and not torch.equal(p[1], p[2])
    raw = load_source('mnist', fx)['test_x'].reshape(-1, 1, 1024)
    for t, q in zip(mpc[0::2], p):
        x = t.test.images.reshape(len(t.test), 3, 1024)
        assert torch.equal(x[:, :1], raw[:, :, q])                       # permutation after resizing
        assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])   # same for all channels
    assert not torch.equal(mpc[0].test.images, mpc[2].test.images)


def test_batches_and_getitem(seqs):
    t = seqs['mpc'][1]
    xs = list(t.train.batches(8, shuffle=True, seed=3))
    assert [len(x) for x, _ in xs] == [8, 8, 8, 3]
    x, y = xs[0]
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.shape[1:] == (3, 32, 32)
    ys = torch.cat([y for _, y in t.train.batches(8, shuffle=True, seed=3)])
    assert torch.equal(ys, torch.cat([y for _, y in xs]))
    x0, y0 = next(t.train.batches(1))
    xi, yi = t.train[0]
    assert torch.allclose(x0[0], xi, atol=1e-6) and int(y0[0]) == yi
    mean, std = STATS['cifar100']
    back = xi * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]
    assert torch.allclose(back * 255, t.train.images[0].float(), atol=1e-3)
    aug = load_sequence('syn', augment='crop-flip', tasks=[1])[0]
    xa = next(aug.train.batches(16, seed=0))[0]
    xp = next(aug.val.batches(16, seed=0))[0]
    assert xa.shape == (16, 3, 32, 32) and aug.val.augment is None and aug.train.augment == 'crop-flip'
    assert not torch.equal(xa, next(load_sequence('syn', tasks=[1])[0].train.batches(16))[0])
    assert xp.shape == (16, 3, 32, 32)


def test_syn_determinism_and_size():
    a, b = syn_sequence(), load_sequence('syn')
    for s, t in zip(a, b):
        assert torch.equal(s.train.images, t.train.images) and torch.equal(s.test.labels, t.test.labels)
    small = load_sequence('syn', syn_images=100, n_classes=4)
    assert [len(t.train) + len(t.val) for t in small] == [100] * 6 and small[0].n_classes == 4
    assert not torch.equal(load_sequence('syn', seed=1)[0].val.images, b[0].val.images)   # the split follows seed


def test_emnist_is_transposed_back(fx, seqs):
    def means(ds):
        return torch.stack([ds.images[ds.labels == c, 0].float().mean(0) for c in range(10)])
    em = means(seqs['kef'][2].train)
    mn = means(load_sequence('mpc', root=fx, tasks=[1])[0].train)
    mn = mn.reshape(10, 1024)[:, pmnist_permutation(0).argsort()].reshape(10, 32, 32)
    assert (em - mn).abs().mean() < (em - mn.transpose(1, 2)).abs().mean()


def test_tiny_imagenet_grayscale_and_sorted_classes(seqs):
    t = seqs['tic'][0]
    assert t.classes == sorted(t.classes)
    x = torch.cat([t.train.images, t.val.images])
    gray = (x[:, 0] == x[:, 1]).all(-1).all(-1) & (x[:, 1] == x[:, 2]).all(-1).all(-1)
    assert gray.sum() >= 1                                        # the grayscale JPEG came out as 3 equal channels


def test_cache(fx, tmp_path):
    load_sequence('kef', root=fx, tasks=[5], cache_dir=tmp_path)
    assert (tmp_path / 'fashion-mnist.pt').is_file()
    d = torch.load(tmp_path / 'fashion-mnist.pt', weights_only=True)
    d['train_x'][:] = 0                                            # a valid cache is used as is
    torch.save(d, tmp_path / 'fashion-mnist.pt')
    assert load_sequence('kef', root=fx, tasks=[5], cache_dir=tmp_path)[0].train.images.max() == 0
    d['signature'] = 'stale'                                       # a stale one is rebuilt
    torch.save(d, tmp_path / 'fashion-mnist.pt')
    assert load_sequence('kef', root=fx, tasks=[5], cache_dir=tmp_path)[0].train.images.max() > 0


def test_bad_input(fx, tmp_path):
    with pytest.raises(ValueError, match='tic'):
        load_sequence('cifar', root=fx)
    for bad in (0, 1, 1.5, -0.2):
        with pytest.raises(ValueError, match='val_frac'):
            load_sequence('mpc', root=fx, val_frac=bad)
    with pytest.raises(ValueError, match='augment'):
        load_sequence('syn', augment='rotate')
    with pytest.raises(FileNotFoundError) as e:
        load_sequence('tic', root=tmp_path / 'empty', tasks=[1])
    msg = str(e.value)
    assert 'tiny-imagenet-200' in msg and 'wnids.txt' in msg and 'download=True' in msg and 'http' in msg
    with pytest.raises(FileNotFoundError, match='k49-train-imgs.npz'):
        load_sequence('kef', root=tmp_path / 'empty', tasks=[1])
    with pytest.raises(FileNotFoundError, match='data_batch_1'):
        load_sequence('tic', root=tmp_path / 'empty', tasks=[2])


def test_corrupt_files(tmp_path):
    root = write_fixtures(tmp_path / 'fx')
    p = root / 'FashionMNIST' / 'raw' / 'train-images-idx3-ubyte'
    p.write_bytes(p.read_bytes()[:500])
    with pytest.raises(DataCorruptError, match='truncated'):
        load_sequence('kef', root=root, tasks=[5], cache_dir=False)
    p = root / 'cifar-100-python' / 'train'
    p.write_bytes(p.read_bytes()[:300])
    with pytest.raises(DataCorruptError, match='cifar100'):
        load_sequence('mpc', root=root, tasks=[2], cache_dir=False)
    jpg = next((root / 'tiny-imagenet-200' / 'val' / 'images').glob('*.JPEG'))
    jpg.write_bytes(b'not a jpeg')
    with pytest.raises(DataCorruptError, match=jpg.name):
        load_sequence('tic', root=root, tasks=[1], cache_dir=False)


# ---- the real MNIST / Fashion-MNIST (skipped when the shared folder is absent) ----

def test_real_mnist(shared_data, tmp_path):
    src = load_source('mnist', shared_data, cache_dir=tmp_path)
    assert src['train_x'].shape == (60000, 1, 32, 32) and src['test_x'].shape == (10000, 1, 32, 32)
    assert torch.equal(src['train_y'].unique(), torch.arange(10)) and torch.equal(src['test_y'].unique(), torch.arange(10))
    tasks = load_sequence('mpc', root=shared_data, tasks=[1, 3, 5], cache_dir=tmp_path)
    assert [t.name for t in tasks] == ['pmnist-1', 'pmnist-3', 'pmnist-5']
    for t, s in zip(tasks, (0, 2, 4)):
        assert (len(t.train), len(t.val), len(t.test)) == (54000, 6000, 10000)
        assert t.train.images.shape[1:] == (3, 32, 32) and t.n_classes == 10
        x = t.test.images[:, 0].reshape(10000, 1024)
        assert torch.equal(x, src['test_x'].reshape(10000, 1024)[:, pmnist_permutation(s)])
    assert not torch.equal(tasks[0].test.images, tasks[1].test.images)
    again = load_sequence('mpc', root=shared_data, tasks=[3], cache_dir=tmp_path)[0]   # from the cache
    assert torch.equal(again.train.images, tasks[1].train.images)
    assert not any(p.name == 'fktnb_cache' for p in Path(shared_data).iterdir())


def test_real_fashion_mnist(shared_data, tmp_path):
    if not (Path(shared_data) / 'FashionMNIST' / 'raw').is_dir():
        pytest.skip('no FashionMNIST in the shared folder')
    src = load_source('fashion-mnist', shared_data, cache_dir=tmp_path)
    assert len(src['train_x']) == 60000 and len(src['test_x']) == 10000
    assert torch.equal(src['train_y'].unique(), torch.arange(10))
    assert src['classes'][0] == 'T-shirt/top'


def test_pmf_from_fixtures(fx, seqs):
    "PMF: MPC's PMNIST tasks at 1, 3, 5; the Fashion-MNIST classes 0-3, 4-6, 7-9 relabelled at 2, 4, 6; own families."
    pmf, mpc, fm = seqs['pmf'], seqs['mpc'], load_source('fashion-mnist', fx)
    assert [t.name for t in pmf] == ['pmnist-1', 'fashion-0-3', 'pmnist-3', 'fashion-4-6', 'pmnist-5', 'fashion-7-9']
    assert task_families('pmf') == {t: 'pmnist' if t % 2 else 'fashion' for t in range(1, 7)}
    assert [t.family for t in pmf] == ['pmnist', 'fashion'] * 3
    for a, b in zip(pmf[::2], mpc[::2]): assert torch.equal(a.train.images, b.train.images) and a.identity == b.identity
    for t, first in zip(pmf[1::2], (0, 4, 7)):
        keep = (fm['test_y'] >= first) & (fm['test_y'] < first + t.n_classes)
        assert torch.equal(t.test.images[:, :1], fm['test_x'][keep]) and torch.equal(t.test.labels, fm['test_y'][keep] - first)
        assert t.classes == fm['classes'][first:first + t.n_classes]
    assert len({t.identity for t in pmf}) == 6


def test_real_pmf(shared_data, tmp_path):
    "All six PMF tasks from the real files, with the sizes `sequence_sizes` gives without reading them."
    if not (Path(shared_data) / 'FashionMNIST' / 'raw').is_dir(): pytest.skip('no FashionMNIST in the shared folder')
    tasks = load_sequence('pmf', root=shared_data, cache_dir=tmp_path)
    assert [(len(t.train) + len(t.val), len(t.test), t.in_size) for t in tasks] == sequence_sizes('pmf')
    assert [(len(t.train), len(t.val)) for t in tasks[1::2]] == [(21600, 2400), (16200, 1800), (16200, 1800)]
    for t in tasks: assert torch.equal(t.test.labels.unique(), torch.arange(t.n_classes))
    assert tasks[5].classes == ['Sneaker', 'Bag', 'Ankle boot']


# ---- registries: a user source from arrays in memory and a four-task sequence of it ----

TOY_CLASSES = ['zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven']


def toy_arrays(seed=0, n_train=80, n_test=24):
    rng = np.random.default_rng(seed)
    return dict(train_x=rng.integers(0, 256, (n_train, 16, 16), dtype=np.uint8), train_y=np.arange(n_train) % 8,
                test_x=rng.integers(0, 256, (n_test, 16, 16), dtype=np.uint8), test_y=np.arange(n_test) % 8,
                classes=TOY_CLASSES)


@pytest.fixture
def toy():
    "Registers source 'toy' and sequence 'toy4' for one test, and unregisters both afterwards."
    arrays = toy_arrays()
    register_source('toy', lambda root, download: arrays, family='toy')
    register_sequence('toy4', description='four toy tasks', tasks=[
        TaskSpec('toy-a', 'toy', classes=[0, 1, 2, 3]), TaskSpec('toy-b', 'toy', classes=[7, 5, 6, 4], perm=1),
        TaskSpec('toy-all', 'toy'), TaskSpec('toy-p', 'toy', perm=3, family='toy-perm')])
    yield arrays
    unregister_sequence('toy4')
    unregister_source('toy')


def test_user_source_and_sequence(toy):
    assert 'toy4' in sequence_names() and get_sequence('toy4').description == 'four toy tasks'
    assert [t.name for t in get_sequence('toy4').tasks] == ['toy-a', 'toy-b', 'toy-all', 'toy-p']
    assert task_families('toy4') == {1: 'toy', 2: 'toy', 3: 'toy', 4: 'toy-perm'}
    tasks = load_sequence('toy4', tasks=np.array([1, 2, 3, 4]))          # root is ignored by this reader
    assert [t.index for t in tasks] == [1, 2, 3, 4] and [t.n_classes for t in tasks] == [4, 4, 8, 8]
    assert [t.family for t in tasks] == ['toy', 'toy', 'toy', 'toy-perm']
    assert tasks[1].classes == ['seven', 'five', 'six', 'four'] and tasks[2].classes == TOY_CLASSES
    for t in tasks:
        assert t.in_size == 16 and t.train.images.shape[1:] == (3, 16, 16) and t.test.images.shape[1:] == (3, 16, 16)
    # task b: source classes 7, 5, 6, 4 relabelled 0..3 in that order, pixels permuted with seed 1
    x, y = toy['test_x'], toy['test_y']
    keep = np.isin(y, [7, 5, 6, 4])
    want_y = np.array([[7, 5, 6, 4].index(v) for v in y[keep]])
    assert np.array_equal(tasks[1].test.labels.numpy(), want_y)
    want_x = x[keep].reshape(-1, 256)[:, pmnist_permutation(1, 16).numpy()]
    assert np.array_equal(tasks[1].test.images[:, 0].reshape(-1, 256).numpy(), want_x)
    assert np.array_equal(tasks[0].test.images[:, 2].numpy(), x[y < 4])
    assert len(tasks[0].train) + len(tasks[0].val) == 40 and len(tasks[2].train) + len(tasks[2].val) == 80
    # computed normalisation: the mean/std of the training images in [0, 1]
    x01 = toy['train_x'] / 255
    assert np.allclose(tasks[2].train.mean, [x01.mean()] * 3) and np.allclose(tasks[2].train.std, [x01.std()] * 3)
    # no counts registered: the sizes come from loading the source once
    assert sequence_sizes('toy4') == [(40, 12, 16), (40, 12, 16), (80, 24, 16), (80, 24, 16)]
    assert len({t.identity for t in tasks}) == 4


def test_registry_cleanup_and_errors(toy):
    with pytest.raises(ValueError, match='replace=True'):
        register_source('toy', lambda root, download: toy, family='toy')
    with pytest.raises(ValueError, match='replace=True'):
        register_sequence('toy4', tasks=[TaskSpec('x', 'toy')])
    with pytest.raises(ValueError, match="used by the sequences \\['toy4'\\]"):
        unregister_source('toy')
    with pytest.raises(ValueError, match='registered sequences: .*toy4'):
        load_sequence('toy5')
    with pytest.raises(ValueError, match='unknown source .*registered sources: .*toy'):
        register_sequence('toy5', tasks=[TaskSpec('x', 'toy2')])
    with pytest.raises(ValueError, match='unique'):
        register_sequence('toy5', tasks=[TaskSpec('x', 'toy'), TaskSpec('x', 'toy', perm=1)])
    with pytest.raises(ValueError, match='at least one'):
        register_sequence('toy5', tasks=[])
    with pytest.raises(ValueError, match='1..4'):
        load_sequence('toy4', tasks=[5])
    one = register_sequence('toy1', tasks=[TaskSpec('only', 'toy', classes=[2, 3])])
    try:
        assert one.tasks[0].classes == (2, 3) and len(load_sequence('toy1')) == 1
    finally:
        unregister_sequence('toy1')
    assert 'toy1' not in SEQUENCES


def test_registries_clean_after_toy():
    assert 'toy' not in SOURCES and 'toy4' not in SEQUENCES
    assert set(SEQUENCES) == {'tic', 'mpc', 'kef', 'pmf', 'syn'}


@pytest.mark.parametrize('change, match', [
    (dict(train_x=np.zeros((10, 16, 16), dtype=np.float32)), 'uint8'),
    (dict(train_x=np.zeros((10, 2, 16, 16), dtype=np.uint8)), 'C = 1 or 3'),
    (dict(train_y=np.arange(79) % 8), '80 integer labels'),
    (dict(train_y=np.arange(80) % 9), 'labels in 0..8'),
    (dict(test_x=np.zeros((24, 12, 12), dtype=np.uint8)), 'differ'),
    (dict(train_x=np.zeros((80, 16, 12), dtype=np.uint8), test_x=np.zeros((24, 16, 12), dtype=np.uint8)), 'size='),
    (dict(classes=None), 'n_classes'),
])
def test_reader_output_is_checked(change, match):
    bad = {**toy_arrays(), **change}
    register_source('toy-bad', lambda root, download: bad, family='toy')
    try:
        with pytest.raises(ValueError, match=match) as e:
            load_source('toy-bad')
        assert "source 'toy-bad'" in str(e.value)
    finally:
        unregister_source('toy-bad')
    register_source('toy-bad', lambda root, download: (1, 2), family='toy')
    try:
        with pytest.raises(ValueError, match="'toy-bad'.*dict with keys"):
            load_source('toy-bad')
    finally:
        unregister_source('toy-bad')


def test_resize_and_given_stats():
    register_source('toy-r', lambda root, download: toy_arrays(), family='toy', size=8, stats=(0.5, 0.25))
    try:
        d = load_source('toy-r')
        assert d['train_x'].shape == (80, 1, 8, 8) and d['stats'] == ((0.5,) * 3, (0.25,) * 3)
    finally:
        unregister_source('toy-r')
    with pytest.raises(ValueError, match='stats'):
        register_source('toy-r', lambda root, download: None, family='toy', stats=(0.5, 0))


def test_taskspec_and_sizes_of_builtins():
    with pytest.raises(ValueError, match='not both'):
        TaskSpec('x', 'cifar100', subset=1, classes=[0, 1])
    with pytest.raises(ValueError, match='subset'):
        TaskSpec('x', 'cifar100', subset=0)
    with pytest.raises(ValueError, match='0..9'):
        register_sequence('bad', tasks=[TaskSpec('x', 'cifar10', classes=[3, 10])])
    assert 'bad' not in SEQUENCES
    assert sequence_sizes('mpc') == [(60000, 10000, 32), (5000, 1000, 32)] * 3
    assert sequence_sizes('tic')[:2] == [(100000, 10000, 64), (50000, 10000, 32)]
    assert sequence_sizes('kef')[::2] == [(232365, 38547, 32), (112800, 18800, 32), (60000, 10000, 32)]
    assert sequence_sizes('syn') == [(400, 200, 32)] * 6 and sequence_sizes('syn', syn_images=100)[0] == (100, 50, 32)
    assert task_families('tic') == {1: 'imagenet', 2: 'cifar', 3: 'cifar', 4: 'cifar', 5: 'cifar', 6: 'cifar'}
    assert task_families('syn') == {t: f'syn-{"AB"[(t - 1) % 2]}' for t in range(1, 7)}
    assert SOURCES['mnist']['family'] == 'mnist-like' and SEQUENCES['mpc']['tasks'][0].perm == 0   # dict-style access


# ---- data identity ----

def test_identity_follows_the_data_not_the_path(tmp_path):
    a = write_fixtures(tmp_path / 'a', seed=0)
    b = write_fixtures(tmp_path / 'b', seed=1)
    ids_a = [t.identity for t in load_sequence('kef', root=a)]
    ids_b = [t.identity for t in load_sequence('kef', root=b)]
    assert len(set(ids_a)) == 6 and not set(ids_a) & set(ids_b)
    shutil.copytree(a, tmp_path / 'copy')                          # the cache comes along: it is rebuilt or reused
    again = load_sequence('kef', root=tmp_path / 'copy')
    assert [t.identity for t in again] == ids_a
    assert sequence_identity(again) == sequence_identity(load_sequence('kef', root=a))
    assert sequence_identity(again) != sequence_identity(load_sequence('kef', root=b))
    assert sequence_identity(again[:2]) != sequence_identity(again)
    with pytest.raises(ValueError, match='Tasks from load_sequence'):
        sequence_identity([])


def test_changed_file_invalidates_cache_and_identity(tmp_path):
    root = write_fixtures(tmp_path / 'fx')
    first = load_sequence('kef', root=root, tasks=[5, 6])
    assert (root / 'fktnb_cache' / 'fashion-mnist.pt').is_file()
    p = root / 'FashionMNIST' / 'raw' / 'train-images-idx3-ubyte'
    raw = bytearray(p.read_bytes()); raw[-1] ^= 0xFF                  # same size, one pixel changed
    p.write_bytes(bytes(raw))
    second = load_sequence('kef', root=root, tasks=[5, 6])
    assert second[0].identity != first[0].identity and second[1].identity == first[1].identity
    assert not torch.equal(torch.cat([second[0].train.images, second[0].val.images]).sum(0),
                           torch.cat([first[0].train.images, first[0].val.images]).sum(0))
    p.write_bytes(bytes(raw[:-28 * 28]))                               # truncated: an error, not the stale cache
    with pytest.raises(DataCorruptError):
        load_sequence('kef', root=root, tasks=[5])


def test_identity_covers_split_permutation_and_generator(fx):
    base = load_sequence('mpc', root=fx, tasks=[1, 3])
    assert base[0].identity != base[1].identity                        # permutation 0 vs 2 of the same MNIST
    assert load_sequence('mpc', root=fx, tasks=[1], seed=1)[0].identity != base[0].identity
    assert load_sequence('mpc', root=fx, tasks=[1], val_frac=0.2)[0].identity != base[0].identity
    assert load_sequence('mpc', root=fx, tasks=[1], augment='crop-flip')[0].identity != base[0].identity
    assert load_sequence('mpc', root=fx, tasks=[1], cache_dir=False)[0].identity == base[0].identity
    s = load_sequence('syn', tasks=[1, 2])
    assert s[0].identity == load_sequence('syn', tasks=[1])[0].identity != s[1].identity
    assert load_sequence('syn', tasks=[1], n_classes=4)[0].identity != s[0].identity


# ---- the validation split is class-mixed (issue 18) ----

def test_split_indices_unsorted_and_deterministic():
    tr, va = split_indices(1000, 0.1, seed=0)
    assert len(va) == 100 and len(tr) == 900
    assert torch.equal(torch.cat([tr, va]).sort().values, torch.arange(1000))
    assert not torch.equal(va, va.sort().values) and not torch.equal(tr, tr.sort().values)
    again = split_indices(1000, 0.1, seed=0)
    assert torch.equal(again[0], tr) and torch.equal(again[1], va)
    assert not torch.equal(split_indices(1000, 0.1, seed=1)[1], va)
    # a source stored class by class (10 classes of 100) gives class-mixed validation batches
    labels = torch.arange(1000) // 100
    assert all(len(labels[va[i:i + 16]].unique()) >= 6 for i in range(0, 96, 16))


def test_class_sorted_source_gives_mixed_splits(fx, seqs):
    t = seqs['tic'][0]                                   # Tiny ImageNet: read class folder by class folder
    assert torch.equal(load_source('tinyimagenet', fx)['train_y'], load_source('tinyimagenet', fx)['train_y'].sort().values)
    y = torch.cat([t.train.labels, t.val.labels])
    assert not torch.equal(t.train.labels, t.train.labels.sort().values)
    assert torch.equal(y.sort().values, load_source('tinyimagenet', fx)['train_y'].sort().values)


# ---- renames ----

def test_size_keyword_is_deprecated_for_syn_images():
    with pytest.warns(DeprecationWarning, match='syn_images'):
        old = load_sequence('syn', size=40, n_classes=2, tasks=[1])
    new = load_sequence('syn', syn_images=40, n_classes=2, tasks=[1])
    assert torch.equal(old[0].train.images, new[0].train.images) and old[0].identity == new[0].identity
    with pytest.warns(DeprecationWarning, match='syn_images'):
        assert sequence_sizes('syn', size=100) == sequence_sizes('syn', syn_images=100) == [(100, 50, 32)] * 6
    with pytest.warns(DeprecationWarning, match='syn_images'):
        assert len(syn_sequence(size=40, n_classes=2)[0].train) == 36


# ---- the deprecated fktnb.data ----

def test_fktnb_data_still_works_and_warns():
    import fktnb.datasets, fktnb.sources, fktnb.sequences, fktnb.fixtures
    sys.modules.pop('fktnb.data', None)
    with pytest.warns(DeprecationWarning, match='fktnb.data is split into fktnb.datasets, fktnb.sources, fktnb.sequences and fktnb.fixtures'):
        data = importlib.import_module('fktnb.data')
    for name in ('load_sequence', 'SEQUENCES', 'SOURCES', 'write_fixtures', 'load_source', 'pmnist_permutation',
                 'ArrayDataset', 'Task', 'DataCorruptError', 'STATS', 'syn_sequence', 'register_source',
                 'register_sequence', 'unregister_source', 'unregister_sequence', 'TaskSpec', 'TaskSequence',
                 'sequence_names', 'get_sequence', 'task_families', 'sequence_sizes', 'sequence_identity',
                 'split_indices', 'crop_flip', 'cache_path', 'resize_uint8', 'Source', 'default_root', 'show_tasks',
                 'K49_URL', 'K49_FILES', 'TINY_URL', 'TINY_MD5'):
        assert name in data.__all__, name
        new = [getattr(m, name) for m in (fktnb.datasets, fktnb.sources, fktnb.sequences, fktnb.fixtures) if hasattr(m, name)]
        assert new and getattr(data, name) is new[0], name
    assert data.SEQUENCES is SEQUENCES and data.SOURCES is SOURCES         # one registry, not a copy
    ns = {}
    exec('from fktnb.data import *', ns)
    assert ns['load_sequence'] is load_sequence and ns['write_fixtures'] is write_fixtures
