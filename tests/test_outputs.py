"""The committed CPU-scale reproduction in outputs/ is consistent: rows, config.json, the report page and the data.

outputs/ holds the `cpu` preset's runs of two_task, three_task (alpha = 1) and six_task on PMF with ResNet-18 and the
report over them (README: "A reproduction on a laptop"). These tests read what is committed; they train nothing."""
import json, re, subprocess
from pathlib import Path

import pytest
from conftest import ROOT

OUT = ROOT / 'outputs'
RUNS = [OUT / e / 'pmf-resnet18' for e in ('two_task', 'three_task', 'six_task')]
REPORT = OUT / 'report' / 'report.md'


def _described(run_dir):
    return json.loads((run_dir / 'config.json').read_text())['runs']


def _rows(run_dir):
    from fktnb.store import ResultStore
    return ResultStore(run_dir / 'results.csv').load()


@pytest.mark.parametrize('run_dir', RUNS, ids=lambda p: p.parent.name)
def test_every_row_belongs_to_a_described_cpu_run(run_dir):
    "Each row's run id is described in its config.json, by the cpu preset on PMF, with the hash the row carries."
    rows, runs = _rows(run_dir), _described(run_dir)
    assert len(rows) and rows.key.is_unique
    assert set(rows.run_id) <= set(runs), f'rows of undescribed runs in {run_dir}'
    for rid, g in rows.groupby('run_id'):
        c = runs[rid]['config']
        assert (c['preset'], c['dataset'], c['arch'], c['experiment']) == ('cpu', 'pmf', 'resnet18', run_dir.parent.name)
        assert set(g.config_hash) == {runs[rid]['config_hash']}
        assert not Path(c['out_dir']).is_absolute() and c['data_root'] is None   # no machine's paths in the record
    assert rows.acc.between(0, 1).all()


def test_the_runs_are_complete_and_checkpoints_stay_out():
    "Every unit of each run's plan has its row (the report's `missing` is empty); no checkpoint is committed."
    from fktnb.reproduction import gather
    _, runs = gather(OUT)
    mine = runs[runs.dataset.eq('pmf') & runs.preset.eq('cpu')]
    assert set(mine.experiment) == {'two_task', 'three_task', 'six_task'}
    for _, r in mine.iterrows():     # six_task also ran the label-free strategies (issue 20) beyond its planned five
        assert r.expected and r.finished >= r.expected and not r.missing, (r.experiment, r.missing)
    if (ROOT / '.git').exists():
        tracked = subprocess.run(['git', 'ls-files', 'outputs'], cwd=ROOT, capture_output=True, text=True).stdout.split()
        assert tracked and not [p for p in tracked if p.endswith('.pt') or '/cache/' in p]


def test_the_report_page_lists_every_run_and_its_figures_exist():
    text = REPORT.read_text()
    for run_dir in RUNS:
        for rid in _described(run_dir): assert rid[:8] in text, f'run {rid} of {run_dir.parent.name} not on the page'
    figures = re.findall(r'!\[[^\]]*\]\(([^)]+)\)', text)
    assert figures and all((REPORT.parent / f).is_file() for f in figures)
    assert 'not comparable (preset cpu)' in text           # verdicts say what scale they come from


def test_config_identity_is_that_of_the_real_files(shared_data, tmp_path):
    "load_sequence on the real MNIST / Fashion-MNIST gives the data identity every committed run recorded."
    from fktnb.sequences import load_sequence
    from fktnb.sources import sequence_identity
    if not (Path(shared_data) / 'FashionMNIST' / 'raw').is_dir(): pytest.skip('no FashionMNIST in the shared folder')
    for run_dir in RUNS:
        for rid, entry in _described(run_dir).items():
            c = entry['config']
            tasks = load_sequence('pmf', root=shared_data, cache_dir=tmp_path, val_frac=c['val_frac'], seed=0,
                                  tasks=c['tasks'])
            assert {str(t.index): t.identity for t in tasks} == {n: d['identity'] for n, d in entry['data'].items()}
            assert sequence_identity(tasks) == entry['data_id']
