"""Every experiment on every sequence with both architectures, from fixture files in the real formats (smoke preset).

The README's main path (six_task on tic) also runs through papermill, on a clone without any real data."""
import json, os, time

import pandas as pd
import pytest
from conftest import ROOT

SEQUENCES, ARCHS = ('tic', 'mpc', 'kef', 'pmf', 'syn'), ('resnet18', 'vgg16')


@pytest.fixture(scope='module')
def fixtures(tmp_path_factory):
    from fktnb.fixtures import write_fixtures
    return write_fixtures(tmp_path_factory.mktemp('data'))


def _expected_units(cfg):
    from fktnb.config import task_numbers
    n, k = len(task_numbers(cfg)), cfg.trials
    if cfg.experiment == 'two_task': return k * (n + n * (n - 1))
    if cfg.experiment == 'three_task': return k * (1 + (n - 1) + 3 * (n - 1) * (n - 2))
    return k * (n + len(cfg.strategies) * (n - 1))


@pytest.mark.parametrize('arch', ARCHS)
@pytest.mark.parametrize('dataset', SEQUENCES)
def test_every_experiment_runs_end_to_end(dataset, arch, fixtures, tmp_path):
    "two_task, three_task and six_task on one sequence and architecture, into one out_dir (they share networks)."
    from fktnb.config import resolve, task_numbers
    from fktnb.sequences import load_sequence
    from fktnb.sweep import run
    t0 = time.time()
    for experiment in ('two_task', 'three_task', 'six_task'):
        cfg = resolve(experiment, preset='smoke', dataset=dataset, arch=arch, data_root=str(fixtures),
                      out_dir=str(tmp_path / 'out'))
        df = run(cfg, progress=False)
        assert len(df) == _expected_units(cfg) and df.key.is_unique, (experiment, len(df))
        assert df.acc.between(0, 1).all()
        described = json.loads((cfg.run_dir / 'config.json').read_text())['runs'][df.attrs['run_id']]
        assert described['config']['dataset'] == dataset and described['data_id']
        assert set(df.task) == set(task_numbers(cfg))
    if dataset == 'tic':    # one network took Tiny ImageNet at 64x64 and CIFAR at 32x32
        sizes = {t.in_size for t in load_sequence('tic', root=fixtures, tasks=[1, 2])}
        assert sizes == {64, 32}
    print(f'{dataset}-{arch}: {time.time() - t0:.1f}s')


def test_cpu_preset_runs_end_to_end(fixtures, tmp_path):
    "The cpu preset (PMF, width 1/4, three trials) runs every experiment; here on the fixtures, one epoch, three tasks."
    from fktnb.config import resolve
    from fktnb.sweep import run
    for experiment in ('two_task', 'three_task', 'six_task'):
        cfg = resolve(experiment, preset='cpu', data_root=str(fixtures), out_dir=str(tmp_path), tasks=[1, 2, 3],
                      epochs=1, finetune_epochs=1, download=False)
        assert (cfg.dataset, cfg.width, cfg.trials, cfg.max_train) == ('pmf', 0.25, 3, 1200)
        df = run(cfg, progress=False)
        assert len(df) == _expected_units(cfg) and df.acc.between(0, 1).all()
        described = json.loads((cfg.run_dir / 'config.json').read_text())['runs'][df.attrs['run_id']]
        assert described['config']['preset'] == 'cpu'


def test_smoke_runs_learn():
    "Smoke two-task accuracies on syn are clearly above chance (5 classes: 20%)."
    from fktnb.config import resolve
    from fktnb.sweep import run
    import tempfile
    cfg = resolve('two_task', preset='smoke', out_dir=tempfile.mkdtemp())
    df = run(cfg, progress=False)
    print(df[['kind', 'alpha', 'beta', 'acc']])
    assert df.acc.mean() > 0.4, df.acc.mean()
    assert (df[df.kind == 'alone'].acc > 0.3).all()


def test_other_data_never_reuses_results(tmp_path):
    "The same configuration on two different data roots into one out_dir: the second run trains every unit."
    from fktnb.config import resolve
    from fktnb.fixtures import write_fixtures
    from fktnb.sweep import run
    import json
    roots = [write_fixtures(tmp_path / f'data{s}', seed=s) for s in (0, 1)]
    cfgs = [resolve('two_task', preset='smoke', dataset='mpc', tasks=[1, 2], data_root=str(r), out_dir=str(tmp_path / 'out'))
            for r in roots]
    first = run(cfgs[0], progress=False)
    second = run(cfgs[1], progress=False)
    assert first.attrs['ran'] == len(first) == 4 and second.attrs['ran'] == len(second) == 4
    assert first.attrs['run_id'] != second.attrs['run_id']
    assert set(first.key).isdisjoint(second.key)
    described = json.loads((cfgs[0].run_dir / 'config.json').read_text())['runs']
    assert set(described) == {first.attrs['run_id'], second.attrs['run_id']}     # config.json describes both
    again = run(cfgs[0], progress=False)
    assert again.attrs['ran'] == 0 and again.attrs['skipped'] == 4


def test_readme_main_path_through_papermill(fixtures, tmp_path):
    "six_task on tic, as the README says, with the smoke preset on fixture files; nothing written into nbs/."
    pm = pytest.importorskip('papermill')
    env_in_test = os.environ.pop('IN_TEST', None)
    before = set((ROOT / 'nbs').iterdir())
    try:
        pm.execute_notebook(str(ROOT / 'nbs' / 'six_task.ipynb'), str(tmp_path / 'six_task_tic.ipynb'),
                            parameters=dict(dataset='tic', preset='smoke', data_root=str(fixtures), out_dir=str(tmp_path / 'out'),
                                            tasks='[1, 2, 3]', width='1/8', download='no'),
                            kernel_name='python3', cwd=str(tmp_path), progress_bar=False, execution_timeout=600)
    finally:
        if env_in_test is not None: os.environ['IN_TEST'] = env_in_test
    assert set((ROOT / 'nbs').iterdir()) == before
    df = pd.read_csv(tmp_path / 'out' / 'six_task' / 'tic-resnet18' / 'results.csv')
    assert len(df) == 3 + 5 * 2 and df.key.is_unique
