"""The reproduction report and the paper's claims.

report.ipynb on real smoke outputs of all three experiments for both architectures (figures inline even with
MPLBACKEND=Agg); each claim checked over exactly the rows the paper's sentence speaks of; verdicts that need two trials;
the false-held rate of every claim on data with no effect; ties in the paper's tables; presets on the page."""
import json, os, re, time, warnings
import numpy as np
import pandas as pd
import pytest
from conftest import ROOT

from fktnb.claims import CLAIMS, Stats, check_claims
from fktnb.figures import best_decisions, paper_table, three_task_table, agreement
from fktnb.reproduction import gather
from fktnb.sequences import get_sequence, task_families
from fktnb.strategies import TABLE2_STRATEGIES

ARCHS = ('resnet18', 'vgg16')
EXPERIMENTS = ('two_task', 'three_task', 'six_task')
ST = Stats()


# --- hand-made runs whose answers are known -------------------------------------------------------------------------
def two_task_rows(ds='mpc', trials=3, sign=-1, noise=0.3, tasks=6, seed=0, arch='resnet18'):
    "Two-task rows: P lower for the same family; accuracy (%) = 60 - sign * 40 * P + noise."
    rng, fam, rows = np.random.default_rng(seed), task_families(ds), []
    for k in range(trials):
        for b in range(1, tasks + 1):
            for a in set(range(1, tasks + 1)) - {b}:
                P = (0.1 if fam[a] == fam[b] else 0.3) + 0.01 * a
                rows.append(dict(experiment='two_task', dataset=ds, arch=arch, kind='pair', trial=k, alpha=a, beta=b,
                                 task=b, P=P, A=0.2, acc=(60 + sign * 40 * P + noise * rng.normal()) / 100))
    return pd.DataFrame(rows)


def three_task_rows(trials=3, noise=0.5, ds='tic', arch='vgg16', table='table1', seed=0):
    "Three-task rows equal to the paper's TIC numbers of `table` plus noise, per trial."
    rng, p = np.random.default_rng(seed), paper_table('three_task')
    p = p[(p.table == table) & (p.dataset == 'tic')]
    return pd.DataFrame([dict(experiment='three_task', dataset=ds, arch=arch, kind='gamma', trial=k, alpha=r.alpha,
                              beta=r.beta, gamma=r.gamma, task=r.gamma, decision=r.decision,
                              acc=(r.value + noise * rng.normal()) / 100) for k in range(trials) for r in p.itertuples()])


def six_task_rows(ds='mpc', arch='resnet18', trials=3, noise=0.3, seed=0, strategies=TABLE2_STRATEGIES):
    "One complete six-task step per (strategy, trial): the paper's per-task numbers (Table 2 or 4) plus noise."
    rng, p = np.random.default_rng(seed), paper_table('six_task')
    p = p[(p.dataset == ds) & (p.arch == arch) & (p.task != 'mean')]
    return pd.DataFrame([dict(experiment='six_task', dataset=ds, arch=arch, kind='six', trial=k, strategy=s, task=6,
                              acc=0.5, accs={t: (v + noise * rng.normal()) / 100 for t, v in zip(g.task, g.value)})
                         for k in range(trials) for s, g in p.groupby('strategy') if s in strategies])


EFFECT_ROWS = {1: lambda **kw: two_task_rows(**kw), 2: lambda **kw: two_task_rows(**kw),
               3: lambda **kw: three_task_rows(**kw), 4: lambda **kw: six_task_rows(**kw),
               5: lambda **kw: six_task_rows(arch='vgg16', **kw)}


def shuffle_candidates(rows, rng, claim_id, per_trial=False):
    "No effect: the accuracies shuffled across the claim's candidates (S_alpha; decisions; strategies)."
    if claim_id in (1, 2):     # each S_alpha takes another's accuracies (the same in every trial, or anew per trial)
        d = rows.sort_values(['beta', 'trial', 'alpha']).copy()
        acc = d.acc.to_numpy().reshape(d.beta.nunique(), d.trial.nunique(), -1)
        acc = rng.permuted(acc, axis=2) if per_trial else np.stack([a[:, rng.permutation(a.shape[1])] for a in acc])
        return d.assign(acc=acc.ravel())
    d = rows.sort_values(['trial', 'beta', 'gamma', 'decision'] if claim_id == 3 else ['trial', 'strategy']).copy()
    col = 'acc' if claim_id == 3 else 'accs'
    x = d[col].to_numpy().reshape(-1, 3 if claim_id == 3 else d.strategy.nunique())
    d[col] = list(rng.permuted(x, axis=1).ravel())
    return d


def _result(claim_id, rows, st=ST): return CLAIMS[claim_id].check(rows, st)['result']


# --- the rule: effects are held, no effect is not ------------------------------------------------------------------
@pytest.mark.parametrize('claim_id', [1, 2, 3, 4])
def test_a_real_effect_is_held(claim_id):
    r = CLAIMS[claim_id].check(EFFECT_ROWS[claim_id](), ST)
    assert r['result'] == 'held' and r['p'] < 0.05 and r['trials'] == 3, r
    assert re.search(r'(permutation|sign) test .*: p [=<] ', r['evidence']) and '95% bootstrap interval' in r['evidence']


def test_a_two_strategy_comparison_needs_five_trials():
    "Claim 5 compares two strategies: with 3 trials the best a test with no distributional assumption gets is p = 1/8."
    r3, r5 = (CLAIMS[5].check(six_task_rows(arch='vgg16', trials=k), ST) for k in (3, 5))
    assert r3['result'] == 'inconclusive' and r3['p'] == pytest.approx(1 / 8), r3
    assert r3['evidence'].endswith('(with 3 trials p cannot go below 0.125)')
    assert r5['result'] == 'held' and r5['p'] == pytest.approx(1 / 32), r5


@pytest.mark.parametrize('claim_id', [1, 2, 3, 4, 5])
def test_fewer_than_two_trials_get_no_verdict(claim_id):
    r = CLAIMS[claim_id].check(EFFECT_ROWS[claim_id](trials=1), ST)
    assert r['result'] == 'too few trials' and r['trials'] == 1 and np.isnan(r['p']), r
    assert 'p =' not in r['evidence']


def test_the_opposite_effect_is_not_held():
    assert _result(1, two_task_rows(sign=+1)) == 'not held' and _result(2, two_task_rows(sign=+1)) == 'not held'
    weak = six_task_rows()
    weak.loc[weak.strategy == 'manual', 'accs'] = weak[weak.strategy == 'share_all'].accs.to_numpy()
    assert _result(4, weak) == 'not held'
    worse = three_task_rows()
    worse.loc[worse.decision == 'omit_beta', 'acc'] -= 0.2          # omitting S_beta now the worst everywhere
    assert _result(3, worse) == 'not held'


NULL_DRAWS = {1: 240, 2: 240, 3: 1000, 4: 1000, 5: 1000}    # claims 3-5 are cheap to check: more draws, a sharper rate


def test_false_held_rate_on_data_with_no_effect():
    """Accuracies shuffled across the candidates: the rule says 'held' in at most 5% of the draws (240 or 1000), for every claim.

    Each draw starts from rows with a clear effect (every claim is held on them) and shuffles it away: claims 1 and 2
    give each S_alpha another's accuracies (the same in every trial, and anew per trial), claims 3-5 relabel the
    decisions / strategies within every trial."""
    rates = {}
    for claim_id in CLAIMS:
        variants = [False, True] if claim_id in (1, 2) else [False]    # 1, 2: shuffle fixed over trials or anew per trial
        for per_trial in variants:
            trials = 5 if claim_id == 5 else 3       # claim 5 compares two strategies: a verdict needs 5 trials
            rng, rows = np.random.default_rng(100 + claim_id), EFFECT_ROWS[claim_id](trials=trials)
            held = [CLAIMS[claim_id].check(shuffle_candidates(rows, rng, claim_id, per_trial), ST)['result'] == 'held'
                    for _ in range(NULL_DRAWS[claim_id])]
            rates[f'claim {claim_id}' + (' (shuffled per trial)' if per_trial else '')] = float(np.mean(held))
    print('false-held rates (draws per claim', NULL_DRAWS, '):', json.dumps(rates, indent=1))
    assert all(r <= 0.05 for r in rates.values()), rates


def test_false_held_rate_with_two_trials():
    "The smallest runs that get a verdict (2 trials) are not easier to fool."
    rates = {}
    for claim_id, draws in ((1, 200), (3, 1000), (4, 1000)):    # claim 4 with 2 trials: 1/25 = 4% by construction
        rng, rows = np.random.default_rng(7), EFFECT_ROWS[claim_id](trials=2)
        rates[claim_id] = float(np.mean([_result(claim_id, shuffle_candidates(rows, rng, claim_id)) == 'held'
                                         for _ in range(draws)]))
    print('false-held rates, 2 trials (200 draws for claim 1, 1000 for claims 3 and 4):', rates)
    assert all(r <= 0.05 for r in rates.values()), rates


# --- scopes: exactly the rows each sentence speaks of ---------------------------------------------------------------
def test_claim3_speaks_of_tic_alpha1_and_cifar100_tasks_only():
    rows = three_task_rows()
    r = CLAIMS[3].check(rows, ST)
    assert 'in 12 of 12 sequences' in r['evidence'] and 'of 36 (sequence, trial) cells' in r['evidence'], r
    # T_beta = 2 (CIFAR-10), which the sentence sets apart, and T_gamma = 2 never enter
    assert CLAIMS[3].check(rows[(rows.beta == 2) | (rows.gamma == 2)], ST)['result'] == 'not run'
    spoiled = rows.copy()
    spoiled.loc[(spoiled.beta == 2) & (spoiled.decision == 'omit_beta'), 'acc'] = 0.0
    assert CLAIMS[3].check(spoiled, ST)['evidence'] == r['evidence']
    # other alphas (Table 3) are not the sentence's rows; other datasets are outside it
    assert CLAIMS[3].check(three_task_rows(table='table3'), ST)['result'] == 'not run'
    assert CLAIMS[3].check(three_task_rows(ds='mpc'), ST) is None
    # omitting S_beta must beat BOTH other decisions: beating share-both only is not enough
    only_sb = rows.copy()
    only_sb.loc[only_sb.decision == 'omit_alpha', 'acc'] = only_sb.loc[only_sb.decision == 'omit_beta', 'acc'].to_numpy() + 0.01
    assert CLAIMS[3].check(only_sb, ST)['result'] == 'not held'


def test_paper_numbers_give_12_of_12_for_claim3():
    "Scoped as stated (alpha = 1, beta, gamma in 3..6, best of three) the paper's own Table 1 gives 12 of 12."
    assert CLAIMS[3].paper(None, None).startswith('held as printed: omitting S_β best in 12 of 12 sequences (Table 1')
    # the old, wider check (all 20 alpha = 1 rows, omit-S_beta against share-both only) counted 16 of 20
    p = paper_table('three_task')
    t = p[(p.table == 'table1') & (p.dataset == 'tic')].pivot_table(index=['beta', 'gamma'], columns='decision', values='value')
    assert int((t.omit_beta > t.share_both).sum()) == 16 and len(t) == 20


def test_claim4_needs_the_five_table2_strategies_and_resnet18():
    assert _result(4, six_task_rows(strategies=('manual', 'share_none'))) == 'not run'
    assert 'missing share_all, share_lowest, omit_lowest' in CLAIMS[4].check(six_task_rows(strategies=('manual', 'share_none')), ST)['evidence']
    assert CLAIMS[4].check(six_task_rows(arch='vgg16'), ST) is None         # VGG-16 is claim 5's (Table 4)
    assert CLAIMS[5].check(six_task_rows(), ST) is None
    assert CLAIMS[4].check(six_task_rows().assign(dataset='syn'), ST) is None    # not a dataset of the paper
    # the paper's own numbers: manual best on all three datasets of Table 2; beaten by the reference on all of Table 4
    assert CLAIMS[4].paper(None, None) == 'held as printed on 3 of 3 datasets (Table 2, ResNet-18)'
    assert CLAIMS[4].paper('tic', 'resnet18').startswith('held as printed: manual 69.45 vs best other (share all) 69.29')
    assert CLAIMS[5].paper(None, None) == 'held as printed on 3 of 3 datasets (Table 4, VGG-16)'
    assert CLAIMS[5].paper('mpc', 'vgg16').startswith('held as printed: share none 80.2 vs manual 77.3')
    assert CLAIMS[5].paper('tic', 'vgg16').startswith('held as printed: share all 68.1 vs manual 66.9')


def test_label_free_strategies_are_extra_rows_of_table2():
    "Extra strategies come after the paper's five, without paper rows, with their cost; claim 4 still compares the five."
    from fktnb.figures import six_task_markdown, six_task_metrics, six_task_table
    rows = six_task_rows()
    extra = rows[rows.strategy == 'manual'].assign(strategy='probe_best', probe_images=100)
    extra['accs'] = [{t: a + 0.05 for t, a in acc.items()} for acc in extra.accs]      # beats manual by 5 points
    alone = pd.DataFrame([dict(experiment='six_task', dataset='mpc', arch='resnet18', kind='alone', trial=k, task=t, acc=0.5)
                          for k in range(3) for t in range(1, 6)])          # the sequence's first tasks, as one step sees them
    rows = pd.concat([rows, extra, alone], ignore_index=True).assign(train_images=1000)
    table = six_task_table(rows)
    assert list(table.index.get_level_values('strategy').unique()) == list(TABLE2_STRATEGIES) + ['probe_best']
    assert ('probe_best', 'ours') in table.index and table.loc[('probe_best', 'paper')].drop('trials').isna().all()
    md = six_task_markdown(table, six_task_metrics(rows))
    lines = [l for l in md.splitlines() if l.startswith('| probe best |')]
    assert len(lines) == 2 and '**' in lines[0], lines            # the table's row (best mean) and the metrics' row
    assert lines[1].endswith('| 1.02 |'), lines[1]                # (6 x 1000 + 100 probe images) / (6 x 1000)
    assert sum(l.startswith('|  | paper |') for l in md.splitlines()) == 5
    assert CLAIMS[4].check(rows, ST)['result'] == 'held'          # manual vs the other four of Table 2 only


def test_claims_1_2_scopes():
    assert CLAIMS[1].check(two_task_rows(tasks=3), ST)['result'] == 'not run'       # 2 candidates per T_beta
    assert CLAIMS[2].check(two_task_rows('syn'), ST) is None                           # the paper says nothing of syn
    assert _result(1, two_task_rows('syn')) == 'held'                                  # claim 1 is general
    assert _result(2, two_task_rows('tic')) == 'not held'   # TIC: the complexity rule; family-made rows do not fit it


# --- ties ---------------------------------------------------------------------------------------------------------
def test_ties_in_the_paper_count_as_agreement_with_any_tied_decision():
    p = paper_table('three_task')
    pv = p.pivot_table(index=['table', 'dataset', 'alpha', 'beta', 'gamma'], columns='decision', values='value')
    assert int((best_decisions(pv).map(len) > 1).sum()) == 10 and len(pv) == 120
    t3 = p[(p.table == 'table3') & (p.dataset == 'mpc') & (p.alpha == 2)]   # 5 tied rows, e.g. (2, 3, 1): 97.3 / 96.4 / 97.3
    for tie_break in ('share_both', 'omit_alpha'):
        rows = pd.DataFrame([dict(kind='gamma', dataset='mpc', arch='resnet18', trial=0, alpha=r.alpha, beta=r.beta,
                                  gamma=r.gamma, decision=r.decision, acc=(r.value + 0.01 * (r.decision == tie_break)) / 100)
                             for r in t3.itertuples()])
        t = three_task_table(rows)
        assert t.loc[(2, 3, 1), 'best'] == tie_break and t.loc[(2, 3, 1), 'agree']
        assert agreement(t) == dict(agree=20, rows=20, tied=5)


# --- presets on the page -------------------------------------------------------------------------------------------
def test_only_paper_preset_runs_are_compared_with_the_paper():
    rows = pd.concat([two_task_rows().assign(run_id='a-smoke', preset='smoke'),
                      two_task_rows().assign(run_id='b-paper', preset='paper'),
                      three_task_rows(arch='resnet18').assign(run_id='c-paper', preset='paper'),
                      six_task_rows().assign(run_id='d')], ignore_index=True)        # no preset known
    c = check_claims(rows)
    v = c.set_index(['claim', 'scope']).verdict
    assert v[1, 'mpc/resnet18, run a-smoke'] == 'not comparable (preset smoke); own data: held'
    assert v[1, 'mpc/resnet18, run b-paper'] == 'held'
    assert v[3, 'tic/resnet18, run c-paper'].startswith('not comparable (arch resnet18')      # Table 1 TIC is VGG-16
    assert v[4, 'mpc/resnet18, run d'] == 'not comparable (preset unknown); own data: held'
    assert c.set_index(['claim', 'scope']).preset[1, 'mpc/resnet18, run a-smoke'] == 'smoke'
    assert set(c[c.claim == 5].verdict) == {'not run'}           # no VGG-16 six-task run
    assert list(c.columns[:6]) == ['claim', 'statement', 'scope', 'preset', 'trials', 'verdict']


def test_report_module_is_a_deprecated_shim():
    import importlib, sys
    sys.modules.pop('fktnb.report', None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        report = importlib.import_module('fktnb.report')
    assert any('fktnb.figures' in str(w.message) and issubclass(w.category, DeprecationWarning) for w in caught)
    from fktnb.reproduction import build_report
    assert report.build_report is build_report and report.check_claims is check_claims


# --- the page on real smoke outputs -------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def smoke_out(tmp_path_factory):
    "Smoke runs (tasks 1-3, 2+1 epochs) of the three experiments for both architectures, with the runs API."
    from fktnb.config import resolve
    from fktnb.runs import Session, plan, run_job
    out, t0 = tmp_path_factory.mktemp('smoke'), time.time()
    for arch in ARCHS:
        for exp in EXPERIMENTS:
            cfg = resolve(exp, preset='smoke', out_dir=str(out), arch=arch, tasks=[1, 2, 3], epochs=2, finetune_epochs=1)
            session = Session(cfg, log=lambda s: None)
            for job in plan(cfg): run_job(session, job)
    print(f'smoke outputs: {time.time() - t0:.1f}s')
    return out


def _results(out, exp, arch) -> pd.DataFrame:
    "results.csv read with plain pandas (JSON cells decoded by hand), independent of fktnb.store."
    df = pd.read_csv(out / exp / f'syn-{arch}' / 'results.csv')
    if 'accs' in df: df['accs'] = [json.loads(a) if isinstance(a, str) else None for a in df.accs]
    return df


def _section(text, arch, i):
    "The i-th run section (0: two-task, 1: three-task, 2: six-task) of `arch`, up to the next section."
    return text.split(f'### syn with {arch}')[i + 1].split('\n### ')[0].split('\n## ')[0]


def _close(cell, value): return abs(float(cell) - value) < 0.05 + 1e-9     # printed with one decimal


def _md_rows(text, first_cell):
    "Cells of the Markdown table rows that start with `first_cell`."
    return [[c.strip() for c in l.strip().strip('|').split('|')] for l in text.splitlines()
            if l.startswith(f'| {first_cell} |')]


def _names(dataset): return {i: t.name for i, t in enumerate(get_sequence(dataset).tasks, 1)}


def test_report_notebook_on_smoke_outputs(smoke_out, tmp_path, monkeypatch):
    pm = pytest.importorskip('papermill')
    import nbformat
    t0 = time.time()
    monkeypatch.delenv('IN_TEST', raising=False)        # the parameter decides, not nbdev_test's variable
    monkeypatch.setenv('MPLBACKEND', 'Agg')             # as on a cluster: the figures must still show inline
    pm.execute_notebook(str(ROOT / 'nbs' / 'report.ipynb'), str(tmp_path / 'report-out.ipynb'),
                        parameters=dict(out_dir=str(smoke_out)), kernel_name='python3', cwd=str(tmp_path),
                        progress_bar=False, execution_timeout=600)
    print(f'report.ipynb: {time.time() - t0:.1f}s under papermill')
    nb = nbformat.read(str(tmp_path / 'report-out.ipynb'), as_version=4)
    pngs = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs if 'image/png' in o.get('data', {})]
    assert len(pngs) == 8, f'{len(pngs)} inline figures with MPLBACKEND=Agg'
    folder = smoke_out / 'report'
    text = (folder / 'report.md').read_text()
    for arch in ARCHS:      # one section per run: 3 experiments x 2 architectures, each with its configuration
        assert text.count(f'### syn with {arch} (run ') == 3, text[:2000]
    assert 'preset smoke, 1 trial(s), tasks 1, 2, 3, 2+1 epochs' in text
    links = re.findall(r'!\[[^\]]*\]\((figures/[^)]+\.png)\)', text)
    assert len(links) == 8 and all((folder / l).stat().st_size > 5000 for l in links), links
    assert 'Acc^' not in text and '{αβ}' not in text                 # plain words, no markup
    assert '| 9 | 9 |  |' in text and '| 13 | 13 |  |' in text     # every run finished: nothing missing
    assert 'Ties: 10 of the paper\'s 120 printed rows' in text and 'the best accuracy is achieved by omitting S_β' in text
    cov = pd.read_csv(folder / 'coverage.csv')
    assert (cov.status == 'not run').all() and len(cov) == 18       # syn covers none of the paper's tables
    claims = pd.read_csv(folder / 'claims.csv')
    assert set(claims.claim) == set(CLAIMS)
    # syn smoke runs: claim 1 applies (2 candidates per panel: not run); the others speak of MPC, TIC, KEF only
    assert (claims.result == 'not run').all() and (claims[claims.claim == 1].preset == 'smoke').all()
    assert claims[claims.claim == 3].paper.iloc[0].startswith('held as printed: omitting S_β best in 12 of 12')
    for arch in ARCHS:
        # two-task FKT = pair accuracy - alone accuracy of beta (same trial), from results.csv by hand
        df = _results(smoke_out, 'two_task', arch)
        alone = df[df.kind == 'alone'].set_index('alpha').acc
        section, names = _section(text, arch, 0), _names('syn')
        for r in df[df.kind == 'pair'].itertuples():
            cells = [c for c in _md_rows(section, names[r.alpha]) if c[1] == names[r.beta]]
            assert len(cells) == 1, (names[r.alpha], names[r.beta], section)
            assert _close(cells[0][2], 100 * r.acc) and _close(cells[0][3], 100 * (r.acc - alone[r.beta])), cells
        # six-task: ACC = mean of the last accuracy row; BWT = 0 exactly (frozen subnetworks never move)
        six = _results(smoke_out, 'six_task', arch)
        steps = six[six.kind == 'six'].assign(n=lambda d: d.accs.map(len))
        first = six[(six.kind == 'alone') & (six.task == 1)].acc.iloc[0]
        section = _section(text, arch, 2)
        for s, g in steps.groupby('strategy'):
            last = g.loc[g.n.idxmax()].accs
            at_step = {1: first} | {int(r.task): r.acc for r in g.itertuples()}
            assert all(last[str(t)] == a for t, a in at_step.items()), (s, last, at_step)
            label = {'share_all': 'share all', 'share_none': 'share none', 'share_lowest': 'share lowest P',
                     'omit_lowest': 'omit lowest P'}.get(s, s)
            row = [c for c in _md_rows(section, label) if len(c) == 6 and c[1] != 'ours'][0]   # the ACC / BWT / FKT / cost table
            assert _close(row[1], 100 * np.mean(list(last.values()))) and row[2] == '0.00', row
        assert 'exactly 0, as it must be' in section


def test_report_on_an_empty_folder(tmp_path):
    from fktnb.reproduction import build_report, write_report
    page = build_report(tmp_path / 'nothing')
    assert 'Nothing to report' in ''.join(x for x in page['items'] if isinstance(x, str))
    assert set(page['claims'].verdict) == {'not run'} and (page['coverage'].status == 'not run').all()
    md = write_report(page, tmp_path / 'report')
    assert 'Nothing to report' in md.read_text() and 'held as printed' in md.read_text()


def test_gather_reads_results_of_fktnb_before_0_3(tmp_path):
    "A results file written before 0.3 names the unit's kind `unit`: gather reads it into `kind`."
    run_dir = tmp_path / 'two_task' / 'syn-resnet18'; run_dir.mkdir(parents=True)
    (run_dir / 'results.csv').write_text('key,run_id,experiment,unit,trial,alpha,beta,acc\n'
                                         'k1,r1,two_task,pair,0,1,2,0.5\nk2,r1,two_task,alone,0,1,,0.4\n')
    rows, runs = gather(tmp_path)
    assert rows.kind.tolist() == ['pair', 'alone'] and 'unit' not in rows
