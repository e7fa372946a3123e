"""The literate repo stays consistent: README from index, notebooks clean, package in sync, notebooks run."""
import filecmp, os, re, shutil, subprocess, sys
from pathlib import Path
import pytest
from conftest import ROOT

NB_TIMEOUT = int(os.environ.get('FKTNB_NB_TIMEOUT', '1500'))


def _copy_project(dst):
    for name in ('nbs', 'fktnb'):
        shutil.copytree(ROOT / name, dst / name, ignore=shutil.ignore_patterns('__pycache__', '.ipynb_checkpoints'))
    shutil.copy(ROOT / 'settings.ini', dst / 'settings.ini')


def _differences(a, b):
    "Relative paths of files that differ between folders a and b, or exist in one only."
    out = []
    for cmp_ in [filecmp.dircmp(a, b, ignore=['__pycache__', '.ipynb_checkpoints'])]:
        stack = [(cmp_, Path('.'))]
        while stack:
            c, rel = stack.pop()
            out += [str(rel / f) for f in c.left_only + c.right_only + c.diff_files]
            stack += [(sub, rel / name) for name, sub in c.subdirs.items()]
    return out


def test_readme_rendered_from_index():
    r = subprocess.run([sys.executable, str(ROOT / '.ci' / 'render_readme.py'), '--check'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / 'README.md').read_text()
    commands = re.findall(r'```sh\n(.*?)\n```', readme, flags=re.S)
    test_cmd = next(c for c in commands if 'pytest' in c)
    assert test_cmd in (ROOT / '.ci' / 'run').read_text().splitlines()


def test_notebooks_are_clean(tmp_path):
    _copy_project(tmp_path)
    subprocess.run(['nbdev_clean'], cwd=tmp_path, check=True, capture_output=True, timeout=120)
    changed = _differences(ROOT / 'nbs', tmp_path / 'nbs')
    assert not changed, f'nbdev_clean changes {changed}: run `nbdev_clean` and commit the notebooks'


def test_package_in_sync_with_notebooks(tmp_path):
    _copy_project(tmp_path)
    subprocess.run(['nbdev_export'], cwd=tmp_path, check=True, capture_output=True, timeout=120)
    changed = _differences(ROOT / 'fktnb', tmp_path / 'fktnb')
    assert not changed, f'nbdev_export changes {changed}: run `nbdev_export` and commit fktnb/'


def test_nbdev_test_runs_every_notebook():
    r = subprocess.run(['nbdev_test', '--timing', '--n_workers', '2'], cwd=ROOT, capture_output=True, text=True,
                       timeout=NB_TIMEOUT)
    print(r.stdout[-5000:], r.stderr[-5000:])
    assert r.returncode == 0, r.stderr[-5000:]


def test_index_runs_under_papermill(tmp_path):
    import papermill as pm
    pm.execute_notebook(str(ROOT / 'nbs' / 'index.ipynb'), str(tmp_path / 'index.ipynb'), kernel_name='python3',
                        cwd=str(tmp_path), progress_bar=False, execution_timeout=300)
    assert (tmp_path / 'index.ipynb').exists()
