"""benchmarks/gpu_check.py (issue 21) runs from a bare checkout on a machine with torch, torchvision, numpy and pandas
only: here its quick CPU path runs in a fresh interpreter in which fktnb's other dependencies cannot be imported,
and writes the two result files."""
import json, os, subprocess, sys
from conftest import ROOT

ABSENT = ('fastcore', 'papermill', 'nbdev', 'submitit', 'matplotlib', 'seaborn', 'tqdm', 'IPython', 'scipy',
          'nbformat', 'execnb')

RUN = f'''
import runpy, sys
for name in {ABSENT!r}: sys.modules[name] = None     # as if not installed: `import` fails, importlib.util.find_spec -> None
sys.argv = ['gpu_check.py'] + sys.argv[1:]
try: runpy.run_path('benchmarks/gpu_check.py', run_name='__main__')
finally:
    seen = sorted({{m.split('.')[0] for m, v in sys.modules.items() if v is not None}} & set({ABSENT!r}))
    print('absent modules imported:', seen)
'''


def test_absent_modules_really_cannot_be_imported(tmp_path):
    r = subprocess.run([sys.executable, '-c', RUN.replace("runpy.run_path('benchmarks/gpu_check.py', run_name='__main__')",
                                                          "import fastcore")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode != 0 and 'ModuleNotFoundError' in r.stderr and 'fastcore' in r.stderr


def test_quick_cpu_run_without_our_other_dependencies(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS='2')
    r = subprocess.run([sys.executable, '-c', RUN, '--device', 'cpu', '--quick', '--out', str(tmp_path), '--budget-s', '600'],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    print(r.stdout[-3000:], r.stderr[-3000:])
    assert r.returncode == 0 and 'absent modules imported: []' in r.stdout
    data = json.loads((tmp_path / 'cpu.json').read_text())
    md = (tmp_path / 'cpu.md').read_text()
    rows = data['rows']
    assert not data['errors'] and not data['skipped'] and all('error' not in r for r in rows)
    assert all(r['images_per_s'] > 0 and r['step_ms'] > 0 for r in rows)
    seen = {(r['arch'], r['px'], r['dtype'], r['channels_last'], r['trainer'], r['compile']) for r in rows}
    assert {r['arch'] for r in rows} == {'resnet18', 'vgg16'} and {r['px'] for r in rows} == {32, 64}
    assert {s[2] for s in seen} == {'float32', 'bf16'} and {s[3] for s in seen} == {False, True}
    assert {'fit', 'fit_group K=2'} <= {s[4] for s in seen}
    compiled = [r for r in rows if r['compile']]
    assert compiled and compiled[0]['second_warmup_s'] >= 0                     # the compiled step ran twice
    assert data['unit']['wall_s'] > 0 and data['unit']['train_images'] == 160
    assert data['env']['device_type'] == 'cpu' and all(r['mfu'] is None for r in rows)   # no peak for a CPU
    assert md.startswith('# GPU check:') and md.count('\n| resnet18 |') >= 8 and 'One two-task unit' in md
