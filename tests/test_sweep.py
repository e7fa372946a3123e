"""Executors of fktnb.sweep on this CPU: local workers match inline bit for bit, a SIGKILLed sweep resumes, two sweeps
into one out_dir share the work, the SLURM path runs through submitit's local executor, and `run(cfg)` (which lives
here, above runs and cost: no import circle) resumes a run."""
import os, signal, subprocess, sys, time
from dataclasses import asdict
from pathlib import Path
import pandas as pd
import pytest
from fktnb.runs import results
from fktnb.store import ResultStore
from fktnb.sweep import execute, run, sweep_configs, sbatch_script, SweepWorker, _executor, main

ROOT = Path(__file__).resolve().parents[1]
SMOKE = dict(preset='smoke', threads=1)
NUMBERS = ['acc', 'acc_trained', 'A', 'P', 'shared', 'accs', 'scores', 'layers']


def _cfgs(out, experiments=('two_task',), tasks=(1, 2)):
    return sweep_configs(list(experiments), ['syn'], ['resnet18'], tasks=list(tasks), out_dir=str(out), **SMOKE)


def _cli(out, *extra, tasks='[1,2,3]'):
    "The fktnb-sweep command as a process of its own (own process group), on a smoke two-task syn run."
    cmd = [sys.executable, '-m', 'fktnb.sweep', '--preset', 'smoke', '--experiments', 'two_task', '--datasets', 'syn',
           '--archs', 'resnet18', '--set', f'tasks={tasks}', '--set', 'threads=1', '--out-dir', str(out),
           '--no-progress', *extra]
    env = os.environ | dict(OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', PYTHONPATH=str(ROOT))
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _raw_keys(cfg):
    "Every key written into the run's results.csv, duplicates included (read independently of the store)."
    return list(pd.read_csv(cfg.run_dir / 'results.csv', usecols=['key'])['key'])


def _plan_units(cfgs):
    from fktnb.runs import plan
    return sum(j.n_units for c in cfgs for j in plan(c))


def test_local_workers_give_the_rows_of_inline(tmp_path):
    a, b = _cfgs(tmp_path / 'inline', ('two_task', 'six_task')), _cfgs(tmp_path / 'local', ('two_task', 'six_task'))
    sa = execute(a, progress=False, threads=1)
    sb = execute(b, executor='local', workers=2, threads=1, progress=False, poll_s=0.5)
    n = _plan_units(a)
    assert (sa['done'], sa['ran'], sb['done'], sb['ran']) == (n, n, n, n)
    for ca, cb in zip(a, b):
        ra, rb = results(ca), results(cb)
        assert len(ra) > 0 and list(ra.key) == list(rb.key) and ra.key.is_unique
        for col in NUMBERS:
            assert ra[col].astype(str).tolist() == rb[col].astype(str).tolist(), col     # bit for bit (repr of floats)
        assert sorted(_raw_keys(ca)) == sorted(ra.key) and sorted(_raw_keys(cb)) == sorted(rb.key)


def _wait_rows(cfg, n, proc, timeout=240):
    t0 = time.time()
    while time.time() - t0 < timeout:
        path = cfg.run_dir / 'results.csv'
        if path.exists() and len(path.read_text().splitlines()) - 1 >= n: return
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else proc.poll()
        time.sleep(0.2)
    raise AssertionError('no rows appeared')


def test_sigkill_of_the_sweep_then_rerun(tmp_path):
    cfg, = sweep_configs(['two_task'], ['syn'], ['resnet18'], tasks=[1, 2, 3], out_dir=str(tmp_path), **SMOKE)
    proc = _cli(tmp_path, '--executor', 'local', '--workers', '2')
    _wait_rows(cfg, 2, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = ResultStore(cfg.run_dir / 'results.csv').load()
    n = _plan_units([cfg])
    assert 2 <= len(before) < n, 'killed too late to test a resume'
    s = execute([cfg], progress=False, threads=1, poll_s=0.2)
    after = results(cfg)
    assert (s['already_done'], s['ran'], s['done']) == (len(before), n - len(before), n)
    raw = _raw_keys(cfg)
    assert len(raw) == len(set(raw)) == n                                    # no duplicate, no lost unit
    kept = after.set_index('key').loc[before.key]
    assert (kept.finished.values == before.finished.values).all()            # finished units were skipped


def test_two_sweeps_at_once_into_one_out_dir(tmp_path):
    cfg, = sweep_configs(['two_task'], ['syn'], ['resnet18'], tasks=[1, 2, 3], out_dir=str(tmp_path), **SMOKE)
    p1, p2 = _cli(tmp_path), _cli(tmp_path)
    outs = [p.communicate(timeout=400)[0] for p in (p1, p2)]
    assert p1.returncode == 0 and p2.returncode == 0, outs
    n = _plan_units([cfg])
    raw = _raw_keys(cfg)
    assert len(raw) == len(set(raw)) == n and sorted(raw) == sorted(results(cfg).key)
    ran = [int(o.split(' units done (')[1].split(' run by')[0]) for o in outs]
    assert sum(ran) == n, outs                                               # no unit was computed twice
    assert not list((cfg.run_dir / 'claims').glob('*-*'))                     # every claim released


def test_slurm_path_through_submitit_local(tmp_path, capsys):
    "The SLURM code path (options, job array, Checkpointable workers) on submitit's local executor."
    cfgs = _cfgs(tmp_path)
    s = execute(cfgs, executor='slurm', workers=2, progress=False, poll_s=0.5, threads=1,
                slurm=dict(cluster='local', partition='gpu', gpus_per_job=0, time_min=30, extra=dict(account='lab')))
    n = _plan_units(cfgs)
    assert (s['done'], s['ran']) == (n, n) and len(set(_raw_keys(cfgs[0]))) == len(_raw_keys(cfgs[0])) == n


def test_preempted_worker_is_requeued_and_resumes(tmp_path):
    "SLURM's preemption / time-limit signal (USR2) mid-run: the worker checkpoints, is requeued, and finishes the rest."
    cfg, = _cfgs(tmp_path, tasks=(1, 2, 3))
    ex, _ = _executor('slurm', tmp_path / 'sweep', 1, dict(cluster='local', time_min=30))
    job, = ex.map_array(SweepWorker([asdict(cfg)], threads=1, poll_s=0.2), [0])
    _wait_rows(cfg, 2, job._process)
    controller = job._process.pid
    task, = Path(f'/proc/{controller}/task/{controller}/children').read_text().split()
    os.kill(int(task), signal.SIGUSR2)                                      # what SLURM sends before preempting
    out = job.result()
    log = Path(job.paths.stdout).read_text() + Path(job.paths.stderr).read_text()
    assert 'requeued' in log, log[-3000:]
    raw, n = _raw_keys(cfg), _plan_units([cfg])
    assert len(raw) == len(set(raw)) == n and out['units'] < n               # the requeued worker did only the rest


def test_sbatch_script_carries_the_options(tmp_path):
    s = sbatch_script(dict(partition='a100', gpus_per_job=2, cpus_per_job=8, time_min=240, array_parallelism=3,
                           mem='64G', setup=['source ~/venv/bin/activate'], extra=dict(qos='high')), 10, tmp_path)
    lines = set(s.splitlines())
    for flag in ('--partition=a100', '--gpus-per-node=2', '--cpus-per-task=8', '--time=240', '--array=0-9%3',
                 '--mem=64G', '--qos=high', '--requeue', '--signal=USR2@120', '--open-mode=append'):
        assert f'#SBATCH {flag}' in lines, flag
    assert 'source ~/venv/bin/activate' in lines and 'srun' in s


def test_dry_run_prints_the_whole_paper_without_data(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv('FKTNB_DATA', str(tmp_path / 'nothing-here'))
    assert main(['--dry-run', '--out-dir', str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = [l for l in out.splitlines() if l.split()[:1] in (['two_task'], ['three_task'], ['six_task'])]
    assert len(rows) == 18 and 'total' in out and not (tmp_path / 'two_task').exists()
    total = next(l for l in out.splitlines() if l.startswith('total')).split()
    assert int(total[2]) == sum(int(r.split()[4]) for r in rows) and float(total[3]) > 100


def test_bad_options_fail_early(tmp_path):
    cfgs = _cfgs(tmp_path)
    with pytest.raises(ValueError, match='unknown executor'): execute(cfgs, executor='ray')
    with pytest.raises(ValueError, match='unknown slurm option'):
        execute(cfgs, executor='slurm', slurm=dict(gpus=1, cluster='local'))
    with pytest.raises(SystemExit, match='NAME=VALUE'): main(['--dry-run', '--set', 'trials'])
    with pytest.raises(SystemExit): main(['--dry-run', '--set', 'colour=red'])


def test_local_workers_get_gpus_round_robin(tmp_path, monkeypatch):
    "With 2 GPUs, 3 local workers see GPU 0, 1, 0 (CUDA_VISIBLE_DEVICES); without GPUs they see none."
    import torch
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2)
    ex, per_worker = _executor('local', tmp_path / 'sweep', 3, None)
    seen = []
    for params in per_worker:
        ex.update_parameters(**params)
        seen.append(ex.submit(os.getenv, 'CUDA_VISIBLE_DEVICES'))
    assert [j.result() for j in seen] == ['0', '1', '0']
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    ex, per_worker = _executor('local', tmp_path / 'sweep2', 1, None)
    ex.update_parameters(**per_worker[0])
    assert ex.submit(os.getenv, 'CUDA_VISIBLE_DEVICES').result() == ''


def test_run_resumes_and_returns_the_rows(tmp_path):
    cfg, = _cfgs(tmp_path)
    n = _plan_units([cfg])
    df = run(cfg, progress=False)
    assert (df.attrs['ran'], df.attrs['skipped'], len(df)) == (n, 0, n) and df.key.is_unique
    assert {'kind', 'shared'} <= set(df.columns) and not {'unit', 'share'} & set(df.columns)
    again = run(cfg, progress=False)
    assert (again.attrs['ran'], again.attrs['skipped']) == (0, n) and list(again.key) == list(df.key)


def test_no_import_circle_through_the_sweep():
    "config, runs and cost sit below the sweep: importing them never imports fktnb.sweep (nor config the runner)."
    probe = ("import importlib, sys; importlib.import_module(sys.argv[1]); "
             "print(' '.join(m for m in ('fktnb.runs', 'fktnb.cost', 'fktnb.sweep') if m in sys.modules))")
    def loaded(module):
        r = subprocess.run([sys.executable, '-c', probe, module], cwd=ROOT, capture_output=True, text=True, timeout=120,
                           env=os.environ | dict(PYTHONPATH=str(ROOT)))
        assert r.returncode == 0, r.stderr
        return set(r.stdout.split())
    assert loaded('fktnb.config') == set()
    assert loaded('fktnb.runs') == {'fktnb.runs'}
    assert 'fktnb.sweep' not in loaded('fktnb.cost')
    import fktnb.runs
    assert 'run' not in fktnb.runs.__all__            # run(cfg) moved to fktnb.sweep


# ---------------------------------------------------------------- issue 21: the whole-paper plan is the paper
def test_default_plan_is_what_the_paper_reports(tmp_path):
    from fktnb.reproduction import coverage
    cfgs = sweep_configs(out_dir=str(tmp_path))
    cov = coverage(pd.DataFrame(columns=['run_id', 'experiment', 'kind']))
    want = {(r.experiment, r.dataset, r.arch, None if pd.isna(r.alpha) else int(r.alpha)) for r in cov.itertuples()}
    got = [(c.experiment, c.dataset, c.arch, c.alpha if c.experiment == 'three_task' else None) for c in cfgs]
    assert len(got) == len(set(got)) == len(want) and set(got) == want
    assert {(c.dataset, c.arch, c.alpha) for c in cfgs if c.experiment == 'three_task'} == \
        {(d, a, al) for d, a in (('mpc', 'resnet18'), ('tic', 'vgg16')) for al in (1, 2, 3)}
    every = sweep_configs(out_dir=str(tmp_path), pairs='all')
    assert len(every) == 18 and {c.alpha for c in every if c.experiment == 'three_task'} == {1}
    assert [c.alpha for c in sweep_configs(['three_task'], ['tic'], ['vgg16'], out_dir=str(tmp_path), alpha=3)] == [3]
    with pytest.raises(ValueError, match='all-pairs'):
        sweep_configs(['three_task'], ['kef'], ['vgg16'], out_dir=str(tmp_path))


def test_dry_run_counts_reuse_and_says_the_throughput_is_assumed(tmp_path, capsys, monkeypatch):
    import torch
    monkeypatch.setenv('FKTNB_DATA', str(tmp_path / 'nothing-here'))
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)      # a login node
    assert main(['--dry-run', '--experiments', 'two_task', 'six_task', '--datasets', 'mpc', '--archs', 'resnet18',
                 '--out-dir', str(tmp_path)]) == 0
    out = capsys.readouterr().out
    total = next(l for l in out.splitlines() if l.startswith('total')).split()
    served = int(total[-1])
    assert served == 18 + 3 and 'The checkpoint cache serves 21 of' in out           # six_task's alone + manual
    alone = float(out.split('GPU-hours without that reuse')[0].split(':')[-1])
    assert alone > float(total[3]) and 'assumed (ASSUMED_GPU_IMAGES_PER_S; no GPU here to measure)' in out
    assert main(['--dry-run', '--experiments', 'three_task', '--datasets', 'kef', '--all-pairs', '--out-dir', str(tmp_path)]) == 0
    assert len([l for l in capsys.readouterr().out.splitlines() if l.startswith('three_task')]) == 2
