"""The experiment notebooks run end to end (smoke preset), resume after a crash, and reject bad parameters early."""
import os, signal, subprocess, sys, time
from pathlib import Path
import pandas as pd
import pytest
from conftest import ROOT

pm = pytest.importorskip('papermill')
NBS = ROOT / 'nbs'
EXPECTED = {  # experiment -> files (relative to the run folder) the smoke run must produce
    'two_task': ['results.csv', 'tables/two_task.csv', 'tables/two_task.md', 'figures/P_vs_acc_by_beta.png',
                 'figures/P_vs_acc_by_beta.pdf', 'figures/A_vs_acc_by_beta.png', 'figures/P_layers_beta1.png',
                 'figures/fig4_connectivity_raw_vs_squared.png', 'figures/fig4_connectivity_raw_vs_squared.pdf'],
    'three_task': ['results.csv', 'tables/three_task.csv', 'tables/three_task.md', 'figures/three_task.png',
                   'figures/three_task.pdf'],
    'six_task': ['results.csv', 'tables/six_task.csv', 'tables/six_task.md', 'tables/six_task_decisions.md',
                 'figures/six_task.png', 'figures/six_task.pdf'],
}


def _execute(name, tmp_path, **params):
    out = tmp_path / f'{name}-out.ipynb'
    env_in_test = os.environ.pop('IN_TEST', None)   # papermill parameters decide, not nbdev_test's variable
    try:
        pm.execute_notebook(str(NBS / f'{name}.ipynb'), str(out), parameters=params, kernel_name='python3',
                            cwd=str(tmp_path), progress_bar=False, execution_timeout=600)
    finally:
        if env_in_test is not None: os.environ['IN_TEST'] = env_in_test
    return out


def _check_csv(path):
    "Every line complete (ends with a newline, same number of fields as the header) and keys unique."
    text = Path(path).read_text()
    assert text.endswith('\n')
    df = pd.read_csv(path)
    assert df.key.is_unique, 'duplicate units in the results'
    assert df.finished.notna().all() and df.acc.notna().all(), 'a partial row in the results'
    return df


@pytest.mark.parametrize('name', ['two_task', 'three_task', 'six_task'])
def test_notebook_runs_with_smoke_preset(name, tmp_path, monkeypatch):
    import nbformat
    monkeypatch.setenv('MPLBACKEND', 'Agg')       # as on a cluster: the figures must still show inline
    t0 = time.time()
    out = _execute(name, tmp_path, preset='smoke', out_dir=str(tmp_path / 'out'))
    print(f'{name}: {time.time() - t0:.1f}s under papermill')
    assert out.exists() and not (NBS / f'{name}-out.ipynb').exists()
    nb = nbformat.read(str(out), as_version=4)
    pngs = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs if 'image/png' in o.get('data', {})]
    assert pngs, f'{name}: no inline figure with MPLBACKEND=Agg'
    assert not any('<Figure size' in o.get('data', {}).get('text/plain', '') and 'image/png' not in o.get('data', {})
                   for c in nb.cells if c.cell_type == 'code' for o in c.outputs), 'a figure shown as text'
    run_dir = tmp_path / 'out' / name / 'syn-resnet18'
    missing = [f for f in EXPECTED[name] if not (run_dir / f).exists()]
    assert not missing, f'missing outputs {missing} in {run_dir}'
    df = _check_csv(run_dir / 'results.csv')
    assert len(df) > 0 and df.acc.between(0, 1).all()


@pytest.mark.parametrize('name,params,message', [
    ('two_task', dict(dataset='cifar'), "unknown dataset 'cifar'"),
    ('three_task', dict(arch='resnet50'), "unknown arch 'resnet50'"),
    ('six_task', dict(strategies=['share_best']), "unknown strategy 'share_best'"),
    ('two_task', dict(preset='fast'), "unknown preset 'fast'"),
    ('two_task', dict(prune=1.5), 'prune is the fraction'),
    ('six_task', dict(width='1/16'), 'would have none'),
    ('two_task', dict(download='maybe'), 'true or false'),
    ('two_task', dict(device='gpu'), '-p device cuda'),
    ('two_task', dict(epoch=3), "unknown parameter(s) ['epoch']"),
    ('two_task', dict(tasks='[1, 9]'), 'tasks must be distinct task numbers'),
    ('three_task', dict(alpha='two'), 'alpha must be an integer'),
])
def test_bad_parameters_fail_in_the_first_cells(name, params, message, tmp_path):
    params = dict(preset='smoke', out_dir=str(tmp_path / 'out')) | params
    with pytest.raises(pm.PapermillExecutionError) as e:
        _execute(name, tmp_path, **params)
    assert message in str(e.value)
    assert e.value.cell_index <= 3, f'failed in cell {e.value.cell_index}, not in the first cells'
    assert not list((tmp_path / 'out').rglob('results.csv'))


def test_parameters_as_people_type_them(tmp_path):
    "Strings from the command line are parsed: a task list, a fraction, yes/no."
    from fktnb.config import resolve
    cfg = resolve('two_task', preset='smoke', tasks='[1, 2]', width='1/8', download='no', epochs='2', out_dir=str(tmp_path))
    assert (cfg.tasks, cfg.width, cfg.download, cfg.epochs) == ((1, 2), 0.125, False, 2)


def _six_task_script(out_dir):
    return ("from fktnb.config import resolve; from fktnb.sweep import run\n"
            f"run(resolve('six_task', preset='smoke', out_dir={str(out_dir)!r}), progress=False)\n")


def test_killed_run_resumes_without_redoing_units(tmp_path):
    from fktnb.config import resolve
    from fktnb.sweep import run
    out = tmp_path / 'out'
    cfg = resolve('six_task', preset='smoke', out_dir=str(out))
    csv = cfg.run_dir / 'results.csv'
    proc = subprocess.Popen([sys.executable, '-c', _six_task_script(out)], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if csv.exists() and len(csv.read_text().splitlines()) >= 3: break   # header + 2 finished units
            time.sleep(0.05)
        assert proc.poll() is None, f'the run ended before it could be killed: {proc.stderr.read()[-2000:]}'
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    done = pd.read_csv(csv)
    n = cfg.trials * (len(cfg.tasks) + len(cfg.strategies) * (len(cfg.tasks) - 1))
    assert 2 <= len(done) < n, len(done)
    df = run(cfg, progress=False)
    assert df.attrs['skipped'] == len(done), (df.attrs, len(done))
    assert df.attrs['ran'] == n - len(done)
    final = _check_csv(csv)
    assert len(final) == n
    # finished units were not redone: their rows (finish time and all) are unchanged
    old = done.set_index('key').finished
    assert (final.set_index('key').finished.loc[old.index] == old).all()
    again = run(cfg, progress=False)
    assert again.attrs['ran'] == 0 and again.attrs['skipped'] == n


def test_crash_injected_after_n_units_then_resume(tmp_path, monkeypatch):
    import fktnb.runs
    from fktnb.config import resolve
    from fktnb.sweep import run
    cfg = resolve('three_task', preset='smoke', out_dir=str(tmp_path / 'out'))
    monkeypatch.setattr(fktnb.runs, '_rows_written', 0)
    monkeypatch.setenv('FKTNB_FAIL_AFTER', '4')
    with pytest.raises(RuntimeError, match='simulated crash'):
        run(cfg, progress=False)
    assert len(_check_csv(cfg.run_dir / 'results.csv')) == 4
    monkeypatch.delenv('FKTNB_FAIL_AFTER')
    df = run(cfg, progress=False)
    assert (df.attrs['skipped'], df.attrs['ran']) == (4, 5)
    assert len(_check_csv(cfg.run_dir / 'results.csv')) == 9


@pytest.mark.skipif(__import__('torch').cuda.is_available(), reason='the message is for machines without a GPU')
def test_paper_preset_without_gpu_says_what_it_costs(tmp_path):
    "The default preset is the paper's: on a CPU the notebook says so, with the estimated time, before training."
    from fktnb.config import resolve
    from fktnb.cost import announce
    msg = announce(resolve('six_task', dataset='tic', preset='paper', out_dir=str(tmp_path)))
    assert 'No GPU' in msg and 'hours' in msg and 'preset smoke' in msg, msg


def test_executed_notebook_stays_readable(tmp_path):
    "No per-epoch progress bars or warnings in the output: a two-task smoke run of 6 + 2 epochs per task."
    import nbformat
    out = _execute('two_task', tmp_path, preset='smoke', epochs=6, finetune_epochs=2, tasks='[1, 2]',
                   out_dir=str(tmp_path / 'out'))
    nb = nbformat.read(str(out), as_version=4)
    stderr = ''.join(o.get('text', '') for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', [])
                     if o.get('output_type') == 'stream' and o.get('name') == 'stderr')
    print(f'{len(stderr)} characters of stderr:', stderr[-500:])
    assert len(stderr) < 10_000
    assert 'Warning' not in stderr
