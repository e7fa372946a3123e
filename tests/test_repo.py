"""The literate repo stays consistent: README from index, notebooks clean, package in sync, notebooks run."""
import filecmp, json, os, re, shutil, subprocess, sys
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


# --- notebooks as chapters (issue 17) ---------------------------------------------------------------------------
LIBRARY_NOTEBOOKS = sorted(p for p in ROOT.glob('nbs/[0-9][0-9]*_*.ipynb'))
MAX_NOTEBOOK_BYTES = 1_000_000


def _code_cells(nb_path):
    import json
    cells = json.loads(nb_path.read_text(encoding='utf-8'))['cells']
    return [c for c in cells if c['cell_type'] == 'code' and ''.join(c['source']).strip()]


def _directives(src):
    return {l[3:].split()[0] for l in src.splitlines() if l.startswith('#| ') and len(l) > 3}


def _only_imports(src):
    import ast
    body = ast.parse('\n'.join(l for l in src.splitlines() if not l.startswith('#|'))).body
    return all(isinstance(s, (ast.Import, ast.ImportFrom)) for s in body)


def test_every_exported_cell_is_shown():
    "Each exported cell (other than a cell of imports) is followed by a code cell that shows or tests it."
    bare = []
    for nb in LIBRARY_NOTEBOOKS:
        cells = _code_cells(nb)
        for i, c in enumerate(cells):
            src = ''.join(c['source'])
            if 'export' not in _directives(src) or _only_imports(src): continue
            nxt = cells[i + 1] if i + 1 < len(cells) else None
            if nxt is None or 'export' in _directives(''.join(nxt['source'])):
                bare.append(f'{nb.name}: {src.splitlines()[1][:70] if len(src.splitlines()) > 1 else src[:70]}')
    assert not bare, 'exported cells with no cell that shows or tests them:\n' + '\n'.join(bare)


def _shows_a_value(src):
    "The cell ends in a bare value or in print/display/show_doc: run, it displays something (other calls may return None)."
    import ast
    try: body = ast.parse('\n'.join(l for l in src.splitlines() if not l.startswith(('#|', '%')))).body
    except SyntaxError: return False
    if not body or not isinstance(body[-1], ast.Expr): return False
    v = body[-1].value
    if isinstance(v, ast.Call): return getattr(v.func, 'id', getattr(v.func, 'attr', '')) in ('print', 'display', 'show_doc')
    return not isinstance(v, ast.Constant)


def test_library_notebooks_are_committed_executed():
    "Demo cells that display something carry their output; outputs are small and free of paths, timings and bars."
    missing, leaks = [], []
    for nb in LIBRARY_NOTEBOOKS:
        assert nb.stat().st_size < MAX_NOTEBOOK_BYTES, f'{nb.name} is {nb.stat().st_size:,} bytes'
        for c in _code_cells(nb):
            src = ''.join(c['source'])
            if 'export' in _directives(src) or 'hide' in _directives(src): continue
            if _shows_a_value(src) and not c.get('outputs'):
                missing.append(f'{nb.name}: {src.splitlines()[-1][:70]}')
            text = json.dumps(c.get('outputs', []))
            for bad in ('/work/', '/tmp/', '/root/', 'it/s]', 's/it]', 'Traceback'):
                if bad in text: leaks.append(f'{nb.name}: {bad!r} in the output of {src.splitlines()[0][:60]}')
    assert not missing, 'run the notebook and commit it with its outputs; cells without output:\n' + '\n'.join(missing)
    assert not leaks, 'outputs must be deterministic and portable:\n' + '\n'.join(leaks)


@pytest.mark.parametrize('name', ['05_train', '06_measures', '13_figures'])
def test_chapters_show_their_figures(name):
    "The training chapter shows a curve, the measures chapter A and P distributions, the figures chapter its plots."
    outputs = [o for c in _code_cells(ROOT / 'nbs' / f'{name}.ipynb') for o in c.get('outputs', [])]
    assert any('image/png' in o.get('data', {}) for o in outputs), f'{name} is committed without its figures'

