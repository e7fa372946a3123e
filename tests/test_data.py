"""Tests of fktnb.data: every sequence from fixture files, the real MNIST / Fashion-MNIST when present, bad input."""
import pickle
from pathlib import Path
import numpy as np
import pytest
import torch

from fktnb.data import (load_sequence, SEQUENCES, write_fixtures, load_source, pmnist_permutation, ArrayDataset,
                        DataCorruptError, STATS, syn_sequence)


@pytest.fixture(scope='module')
def fx(tmp_path_factory):
    return write_fixtures(tmp_path_factory.mktemp('fixtures'))


@pytest.fixture(scope='module')
def seqs(fx):
    return {name: load_sequence(name, root=fx) for name in ('tic', 'mpc', 'kef', 'syn')}


def test_every_sequence_has_six_tasks(seqs):
    assert set(SEQUENCES) == {'tic', 'mpc', 'kef', 'syn'}
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
    small = load_sequence('syn', size=100, n_classes=4)
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
