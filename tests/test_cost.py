"""The cost model (11_cost, issue 21): the throughput measured on the run's device and cached per device and
configuration; the checkpoint cache's reuse across experiments, counted once; the assumed GPU figure only where
nothing was measured, and said so."""
import json
import pytest
import torch
import fktnb.cost as cost
from fktnb.config import resolve, EXPERIMENTS
from fktnb.cost import (ASSUMED_GPU_IMAGES_PER_S, announce, cost_table, estimate_cost, gpu_throughput,
                        measure_throughput, network_key, served_units, throughput_path)
from fktnb.runs import plan


def units(cfg, **match):
    return [u for j in plan(cfg) for u in j.units if all(getattr(u, k) == v for k, v in match.items())]


def test_measured_once_per_device_and_configuration(tmp_path, monkeypatch):
    cfg = resolve('two_task', preset='smoke', out_dir=str(tmp_path), device='cpu')
    calls = []
    real = cost.time_training
    monkeypatch.setattr(cost, 'time_training', lambda *a, **k: calls.append(a) or real(*a, **k))
    first = measure_throughput(cfg, min_seconds=0.05)
    again = measure_throughput(cfg)
    assert len(calls) == 1 and not first['cached'] and again['cached'] and again['images_per_s'] == first['images_per_s']
    cpu_model = cost.device_name('cpu').rsplit(', ', 1)[0]           # measured with the run's threads (smoke: 1)
    assert first['device'] == f'{cpu_model}, {cfg.threads} threads' and first['width'] == cfg.width and first['batch_size'] == 32
    measure_throughput(resolve('two_task', preset='smoke', out_dir=str(tmp_path), device='cpu', batch_size=16), min_seconds=0.05)
    measure_throughput(cfg, group_size=2, min_seconds=0.05)
    assert len(calls) == 3 and len(json.loads(throughput_path(cfg).read_text())) == 3
    assert not list(throughput_path(cfg).parent.glob('.*'))             # written atomically: no temporary file left
    assert measure_throughput(cfg, cache=False, min_seconds=0.05)['cached'] is False and len(calls) == 4


def test_threads_of_the_run_are_measured_and_restored(tmp_path):
    before = torch.get_num_threads()
    m = measure_throughput(resolve('two_task', preset='smoke', out_dir=str(tmp_path), device='cpu', threads=1), min_seconds=0.05)
    assert m['device'].endswith(', 1 threads') and torch.get_num_threads() == before


@pytest.mark.skipif(torch.cuda.is_available(), reason='on a GPU machine the GPU is measured, not assumed')
def test_gpu_figure_assumed_only_when_nothing_was_measured(tmp_path):
    cfg = resolve('six_task', preset='paper', dataset='mpc', out_dir=str(tmp_path))
    assert gpu_throughput(cfg, 15) == (ASSUMED_GPU_IMAGES_PER_S['resnet18'], 'assumed')
    entry = cost._spec(cfg, 15, torch.device('cpu')) | dict(device='NVIDIA H200', gpu=True, images_per_s=30000.0,
                                                             measured='2026-01-01')
    throughput_path(cfg).parent.mkdir(parents=True)
    throughput_path(cfg).write_text(json.dumps({'k': entry}))
    assert gpu_throughput(cfg, 15) == (30000.0, 'measured on NVIDIA H200 (cached)')
    c = estimate_cost(cfg)
    assert 'measured on NVIDIA H200 (cached)' in c['throughput'] and 'assumed' in c['throughput']   # K=3 jobs: assumed
    said = announce(resolve('six_task', preset='paper', dataset='mpc', out_dir=str(tmp_path), device='cpu'))
    assert 'No GPU' in said and 'measured here' in said and 'NVIDIA H200 (cached)' in said


def test_network_keys_shared_across_experiments(tmp_path):
    two, three, six = (resolve(e, preset='paper', dataset='tic', arch='vgg16', out_dir=str(tmp_path)) for e in EXPERIMENTS)
    a2 = units(two, kind='alone', task=4, trial=1)[0]
    a6 = units(six, kind='alone', task=4, trial=1)[0]
    beta = units(three, kind='beta', task=2, trial=1)[0]
    none2 = [u for u in units(six, kind='six', task=2, trial=1) if u.strategy == 'share_none'][0]
    manual2 = [u for u in units(six, kind='six', task=2, trial=1) if u.strategy == 'manual'][0]
    all2 = [u for u in units(six, kind='six', task=2, trial=1) if u.strategy == 'share_all'][0]
    assert network_key(two, a2) == network_key(six, a6) and network_key(three, beta) == network_key(six, none2)
    assert network_key(six, manual2) == network_key(six, all2) != network_key(six, none2)   # TIC: manual shares S_1
    other = resolve('two_task', preset='paper', dataset='tic', arch='vgg16', out_dir=str(tmp_path), epochs=30)
    assert network_key(other, units(other, kind='alone', task=4, trial=1)[0]) != network_key(two, a2)  # other weights
    pair = units(two, kind='pair', task=2)[0]
    assert network_key(two, pair).endswith('-no_prune')


def test_served_units_follow_the_sweep_order(tmp_path):
    two, six = (resolve(e, preset='paper', dataset='mpc', out_dir=str(tmp_path)) for e in ('two_task', 'six_task'))
    s_two, s_six = served_units([two, six])
    alone6 = {u.uid for u in units(six, kind='alone')}
    assert not s_two and alone6 <= s_six                        # two_task caches every alone network first
    s_six_first, s_two_after = served_units([six, two])
    first_alone = {u.uid for u in units(two, kind='alone', task=1)}
    assert s_two_after == first_alone                          # six_task keeps only its first task's alone networks
    full, reuse = estimate_cost(six, measure=False, served=set()), estimate_cost(six, measure=False, served=s_six)
    assert reuse['served'] == len(s_six) and reuse['gpu_hours'] < full['gpu_hours']
    assert reuse['train_images'] < full['train_images'] and reuse['eval_images'] == full['eval_images']


def test_cost_table_counts_reuse_across_rows(tmp_path):
    tab = cost_table(datasets=('mpc',), archs=('resnet18',), out_dir=str(tmp_path), measure=False)
    assert list(tab.experiment) == list(EXPERIMENTS) and list(tab.served) == [0, 3, 24]
    alone = [estimate_cost(resolve(e, preset='paper', dataset='mpc', out_dir=str(tmp_path)), measure=False,
                           served=set())['gpu_hours'] for e in EXPERIMENTS]
    assert tab.gpu_hours.sum() < sum(alone) and set(tab.throughput) == {'assumed'}
