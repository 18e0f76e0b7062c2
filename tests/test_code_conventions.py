"""Conventions of the code base that no linter here checks: type hints on every public
function of the package, and no script or test that edits ``sys.path`` (the package is
installed; pytest.ini's ``pythonpath`` serves the tests' helper folders).

Ruff's flake8-annotations rules cannot be limited to public functions (398 of their 558
reports are private helpers, nested functions and autograd ``ctx`` methods), hence the scan.
"""
import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ('mmseg_segman', 'tools', 'benchmarks', 'demo', 'tests', 'configs')
UNTYPED_ARGS = {'self', 'cls', 'ctx'}


def _public_functions(tree):
    """Module-level public functions and the methods of public classes (``__init__``
    included; other private and dunder methods not)."""
    functions = (ast.FunctionDef, ast.AsyncFunctionDef)
    candidates = [node for node in tree.body if isinstance(node, functions)]
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and not node.name.startswith('_'):
            candidates += [n for n in node.body if isinstance(n, functions)]
    return [f for f in candidates if not f.name.startswith('_') or f.name == '__init__']


def _missing_hints(function):
    """What of ``function``'s signature has no annotation. ``*args`` and ``**kwargs`` are
    left alone: they pass through to the parent class, as in MMSeg's own modules."""
    args = function.args
    named = args.posonlyargs + args.args + args.kwonlyargs
    missing = [a.arg for a in named if a.annotation is None and a.arg not in UNTYPED_ARGS]
    if function.returns is None and function.name != '__init__':
        missing.append('return')
    return missing


def test_public_functions_of_the_package_have_type_hints():
    checked, missing = 0, []
    for path in sorted((REPO / 'mmseg_segman').rglob('*.py')):
        for function in _public_functions(ast.parse(path.read_text())):
            checked += 1
            gaps = _missing_hints(function)
            if gaps:
                missing.append(f'{path.relative_to(REPO)}:{function.lineno} '
                               f'{function.name}: {", ".join(gaps)}')
    assert checked > 200  # the scan found the package's functions
    assert not missing, 'public functions without type hints:\n' + '\n'.join(missing)


def test_the_scan_sees_a_missing_hint():
    tree = ast.parse('def f(x, *args, y: int = 0, **kwargs):\n    pass\n'
                     'class C:\n    def __init__(self, a):\n        pass\n'
                     '    def g(self) -> int:\n        return 1\n'
                     '    def _h(self, b):\n        pass\n'
                     'def _private(c):\n    pass\n')
    found = {f.name: _missing_hints(f) for f in _public_functions(tree)}
    assert found == {'f': ['x', 'return'], '__init__': ['a'], 'g': []}


def test_no_file_edits_sys_path():
    edits = re.compile(r'\bsys\.path\.(insert|append|extend)\(|\bsys\.path\s*=')
    offenders = []
    scanned = 0
    for folder in SOURCE_DIRS:
        for path in sorted((REPO / folder).rglob('*.py')):
            scanned += 1
            for lineno, line in enumerate(path.read_text().splitlines(), 1):
                if edits.search(line):
                    offenders.append(f'{path.relative_to(REPO)}:{lineno}: {line.strip()}')
    assert scanned > 100
    assert not offenders, 'sys.path edited (install the package instead):\n' + '\n'.join(
        offenders)
