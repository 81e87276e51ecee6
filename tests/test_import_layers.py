"""Imports go one way (docs/DESIGN.md): scripts and tools -> workflow -> options -> reporting -> refinement ->
evaluation -> models -> records -> data -> util. A package imports only those to its right, and never a
script or a tool."""
import ast
import glob
import os

from conftest import REPO_ROOT

LAYERS = ('workflow', 'options', 'reporting', 'refinement', 'evaluation', 'models', 'records', 'data', 'util')
SCRIPTS = {os.path.basename(path)[:-3] for path in glob.glob(os.path.join(REPO_ROOT, '*.py'))}


def imported_modules(path):
    """Every absolute module name ``path`` imports, at any depth of the file (lazy imports too)."""
    with open(path, encoding='utf-8') as handle:
        tree = ast.parse(handle.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def upward_imports(root):
    """['path: imports name'] for each import in a layer's package of a layer to its left, a script or a tool."""
    rank = {layer: index for index, layer in enumerate(LAYERS)}
    found = []
    for layer in LAYERS:
        for path in sorted(glob.glob(os.path.join(root, layer, '*.py'))):
            for name in imported_modules(path):
                top = name.split('.')[0]
                if rank.get(top, len(LAYERS)) < rank[layer] or top in SCRIPTS or top == 'tools':
                    found.append(f'{os.path.relpath(path, root)}: imports {name}')
    return found


def test_every_package_imports_only_the_layers_below_it():
    assert upward_imports(REPO_ROOT) == []


def test_every_package_is_a_layer():
    inits = glob.glob(os.path.join(REPO_ROOT, '*', '__init__.py'))
    packages = {os.path.basename(os.path.dirname(path)) for path in inits}
    assert packages - {'tools'} == set(LAYERS)


def test_an_upward_import_is_found(tmp_path):
    for layer in ('data', 'evaluation'):
        (tmp_path / layer).mkdir()
    (tmp_path / 'data' / 'late.py').write_text('def f():\n    from evaluation import metrics\n')
    (tmp_path / 'evaluation' / 'fine.py').write_text('from data import late\n')
    assert upward_imports(str(tmp_path)) == ['data/late.py: imports evaluation']
