"""The result store and checkpoint cache (fktnb.store): concurrency, column growth, and every damaged-file case."""
import csv, multiprocessing as mp, warnings
import pandas as pd
import pytest
import torch
from fktnb.store import ResultStore, CheckpointCache, COLUMNS, DamagedFileWarning


def _row(key, **kw): return dict(dict(key=key, experiment='two_task', kind='pair', trial=0, alpha=1, beta=2, acc=0.5), **kw)


def _lines(path): return path.read_text().splitlines()


def _caught(fn):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        out = fn()
    msgs = [str(x.message) for x in w if issubclass(x.category, DamagedFileWarning)]
    return out, msgs


def test_append_once_and_read_back(tmp_path):
    st = ResultStore(tmp_path / 'r.csv')
    assert st.append(_row('a', shared={3, 1}, accs={1: 0.25}, A=1 / 3))
    assert not st.append(_row('a', acc=0.9))                       # already there: not written, first row stands
    df = ResultStore(tmp_path / 'r.csv').load()
    assert list(df.key) == ['a'] and df.acc[0] == 0.5 and df.A[0] == 1 / 3 and df.shared[0] == [1, 3]
    assert df.accs[0] == {'1': 0.25} and df.trial.dtype == 'Int64'
    # an independent reader (the csv module) sees exactly one complete data row
    rows = list(csv.DictReader(open(tmp_path / 'r.csv')))
    assert len(rows) == 1 and rows[0]['key'] == 'a' and float(rows[0]['acc']) == 0.5


def _append_many(path, worker, n):
    st = ResultStore(path)
    for i in range(n): st.append(_row(f'u{i}', acc=i / 1000 + worker, seconds=float(worker)))


def test_concurrent_appends_never_corrupt_or_duplicate(tmp_path):
    path, n, w = tmp_path / 'r.csv', 60, 6
    ps = [mp.get_context('fork').Process(target=_append_many, args=(path, k, n)) for k in range(w)]
    for p in ps: p.start()
    for p in ps: p.join()
    assert all(p.exitcode == 0 for p in ps)
    rows = list(csv.reader(open(path)))
    assert rows[0] == COLUMNS and len(rows) == n + 1 and all(len(r) == len(COLUMNS) for r in rows)
    df = ResultStore(path).load()
    assert sorted(df.key) == sorted(f'u{i}' for i in range(n))
    # each row is one worker's complete row: acc and seconds agree on the worker
    assert ((df.acc - df.key.str[1:].astype(int) / 1000).round(6) == df.seconds).all()


def test_other_process_rows_are_seen(tmp_path):
    a, b = ResultStore(tmp_path / 'r.csv'), ResultStore(tmp_path / 'r.csv')
    assert not a.done('x')
    b.append(_row('x'))
    assert a.done('x') and a.get('x')['alpha'] == 1 and not a.append(_row('x'))


def test_older_file_without_new_columns(tmp_path):
    path = tmp_path / 'r.csv'
    path.write_text('key,experiment,trial,acc\nk1,two_task,0,0.5\n')
    st = ResultStore(path)
    df = st.load()
    assert df.run_id.isna().all() and df.acc[0] == 0.5 and df.trial[0] == 0
    assert st.append(_row('k2', run_id='r1'))
    df = ResultStore(path).load()
    assert list(df.key) == ['k1', 'k2'] and list(df.run_id.fillna('-')) == ['-', 'r1'] and df.experiment[0] == 'two_task'
    assert _lines(path)[0].split(',') == COLUMNS


def test_unknown_column_refused(tmp_path):
    with pytest.raises(ValueError, match='unknown result columns'):
        ResultStore(tmp_path / 'r.csv').append(_row('a', colour='red'))


def _three_rows(path):
    st = ResultStore(path)
    for k in 'abc': st.append(_row(k))
    return _lines(path)


def test_damaged_line_cut_midway(tmp_path):
    "A row cut mid-way and glued to the next one (pandas: 'ParserError: Expected N fields'), and a cut last line."
    path = tmp_path / 'results.csv'
    head, ra, rb, rc = _three_rows(path)
    path.write_text('\n'.join([head, ra, rb[:12] + rc]) + '\n' + rb[:7])
    with pytest.raises(pd.errors.ParserError): pd.read_csv(path)
    df, msgs = _caught(lambda: ResultStore(path).load())
    assert list(df.key) == ['a']
    assert len(msgs) == 1 and str(path) in msgs[0] and 'run again' in msgs[0] and 'cut mid-way' in msgs[0]
    aside = pd.read_csv(tmp_path / 'results.damaged.csv')
    assert list(aside.line) == [3, 4] and aside.text[0] == rb[:12] + rc and aside.text[1] == rb[:7]
    assert _lines(path) == [head, ra]
    st = ResultStore(path)                                            # the units run again: their rows go in
    assert st.append(_row('b')) and st.append(_row('c')) and len(st.load()) == 3


def test_damaged_missing_header(tmp_path):
    "A file whose header line is gone (pandas: KeyError 'key'): rows read as today's columns, header written back."
    path = tmp_path / 'results.csv'
    head, ra, rb, rc = _three_rows(path)
    path.write_text('\n'.join([ra, rb, 'x,y']) + '\n')
    with pytest.raises(KeyError): pd.read_csv(path)['key']
    df, msgs = _caught(lambda: ResultStore(path).load())
    assert list(df.key) == ['a', 'b'] and df.acc.tolist() == [0.5, 0.5]
    assert any('no header' in m and str(path) in m for m in msgs) and any('run again' in m for m in msgs)
    assert _lines(path) == [head, ra, rb]
    assert pd.read_csv(tmp_path / 'results.damaged.csv').text.tolist() == ['x,y']


def test_damaged_garbage_line(tmp_path):
    "A garbage line (pandas kept it silently as a row): set aside, with the complete rows kept."
    path = tmp_path / 'results.csv'
    head, ra, rb, rc = _three_rows(path)
    bad_value = rc.replace(',0.5,', ',not-a-number,', 1)
    path.write_bytes(('\n'.join([head, ra, '#### garbage ####', rb, bad_value]) + '\n').encode() + b'\xff\xfe\n')
    df, msgs = _caught(lambda: ResultStore(path).load())
    assert list(df.key) == ['a', 'b']
    assert len(msgs) == 1 and '3 damaged' in msgs[0] and str(path) in msgs[0]
    aside = pd.read_csv(tmp_path / 'results.damaged.csv')
    assert list(aside.line) == [3, 5, 6] and aside.reason[1].startswith('bad value in column acc')
    assert _lines(path) == [head, ra, rb]


def test_damage_found_while_appending_never_loses_rows(tmp_path):
    "Damage written after this store last looked is found at the next append; all complete rows survive."
    path = tmp_path / 'results.csv'
    st = ResultStore(path)
    st.append(_row('a'))
    with open(path, 'a') as f: f.write('half,a,row')
    _, msgs = _caught(lambda: st.append(_row('b')))
    assert msgs and list(ResultStore(path).load().key) == ['a', 'b']


def _net():
    from fktnb.models import get_arch
    net = get_arch('resnet18')(in_size=32, width=1 / 16, seed=0)
    net.add_task(3, share=set())
    return net


@pytest.mark.parametrize('cut', ['early', 'late', 'empty', 'garbage'])
def test_damaged_checkpoint_set_aside(tmp_path, cut):
    cache = CheckpointCache(tmp_path / 'cache')
    net = _net()
    cache.save('k', net)
    back = cache.load('k')
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), back.state_dict().values()))
    data = cache.path('k').read_bytes()
    bad = {'early': data[:200], 'late': data[:-40], 'empty': b'', 'garbage': b'not a checkpoint' * 10}[cut]
    cache.path('k').write_bytes(bad)
    out, msgs = _caught(lambda: cache.load('k'))
    assert out is None and 'k' not in cache
    assert len(msgs) == 1 and str(cache.path('k')) in msgs[0] and 'trains it again' in msgs[0]
    if cut == 'early': assert 'PytorchStreamReader' in msgs[0]
    aside, = (tmp_path / 'cache').glob('k.pt.damaged-*')
    assert aside.read_bytes() == bad                                    # set aside, not deleted
    assert cache.size_bytes() == len(bad)
    cache.save('k', net)                                                # the unit runs again and saves it
    assert 'k' in cache and cache.load('k') is not None


def test_cache_size_and_log_callable(tmp_path):
    seen = []
    cache = CheckpointCache(tmp_path / 'cache', log=seen.append)
    assert cache.size_bytes() == 0 and cache.load('nothing') is None
    cache.save('a', _net()); cache.save('b', _net())
    assert cache.size_bytes() == cache.path('a').stat().st_size + cache.path('b').stat().st_size
    cache.path('a').write_bytes(b'x')
    assert cache.load('a') is None and len(seen) == 1 and 'a.pt' in seen[0]
