"""Suite-wide settings and fixtures.

* One intra-op thread unless ``OMP_NUM_THREADS`` says otherwise: the suite targets a
  2-core machine, where a second OpenMP thread mostly waits on barriers (measured: a toy
  training step went from 0.14 s to several seconds when the cores were busy). The
  environment variable is also inherited by the subprocesses the tool tests start.
* ``golden_dir``: the reference outputs of the authors' code, ``<repo>/../shared/golden``
  or ``$MMSEG_SEGMAN_GOLDEN``. Missing files skip, except under ``CI`` where they fail.
* Workers: ``pytest.ini`` runs the tests on pytest-xdist workers, one per core (capped by
  memory, :func:`pytest_xdist_auto_num_workers`); each runs one intra-op thread. Tests
  marked ``torchrun_alone`` are skipped on a worker, with the command that runs them.
* Honest tiers: every test that starts a fresh interpreter is marked ``slow`` by rule
  (:func:`pytest_collection_modifyitems`: its source, that of a fixture it requests, or
  that of a module-level helper either calls, starts a subprocess), and a test left
  unmarked that starts a Python interpreter or a shell script anyway fails
  (:func:`_no_subprocess_in_fast_tests`), so ``pytest -m "not slow"`` stays in-process.
* Garbage collection: once collection has imported every test module, the objects alive
  then (modules, classes, functions of torch, mmengine, mmseg and ours) are moved out of
  the collector's reach with :func:`gc.freeze` (:func:`pytest_collection_finish`). MMEngine's
  ``BaseDataset`` calls ``gc.collect()`` each time it serialises its data list, and each
  call traversed that whole heap: 45 calls cost 26 s of the fast tier's 272 s under
  cProfile. Nothing a test checks depends on it: objects made later are collected as before.
* Frozen stack: where mainline mmseg would need it (mmcv-lite), the ``mmcv._ext``
  stand-in of ``mmseg_segman/shims.py`` is installed before anything imports mmseg, and
  ``tests/harness`` goes on the ``PYTHONPATH`` of subprocesses (its ``sitecustomize``
  does the same there), playing the role of full mmcv. Where mainline mmengine lacks
  ``pkg_resources``, the package-scoped-config workaround is applied as our tools do.
"""
import functools
import gc
import importlib.util
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
HARNESS = REPO_ROOT / 'tests' / 'harness'


def _load_shims():
    """mmseg_segman/shims.py without the package __init__ (which imports mmseg)."""
    spec = importlib.util.spec_from_file_location('mmseg_segman_test_shims',
                                                  REPO_ROOT / 'mmseg_segman' / 'shims.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_SHIMS = _load_shims()
if _SHIMS.needs_mmcv_ext_stub():
    _SHIMS.install_mmcv_ext_stub()
    os.environ['PYTHONPATH'] = os.pathsep.join(
        p for p in (str(HARNESS), os.environ.get('PYTHONPATH')) if p)
# Mainline mmengine without pkg_resources (the classification environment): `mmpretrain::`
# bases need the package-scoped-config workaround, as our tools apply it.
_SHIMS.enable_package_scoped_configs()

_ONE_THREAD = 'OMP_NUM_THREADS' not in os.environ
if _ONE_THREAD:
    os.environ['OMP_NUM_THREADS'] = '1'  # before torch loads OpenMP; workers inherit it


def _is_xdist_controller(config) -> bool:
    """The pytest-xdist process that hands tests to its workers and runs none itself."""
    return (getattr(config.option, 'dist', 'no') != 'no' and not hasattr(config, 'workerinput')
            and not config.option.collectonly)


def pytest_configure(config):
    # Where tests run (not in an xdist controller, which would spend 8 s on these imports):
    # one intra-op thread, and the plugin's modules registered before collection.
    if _is_xdist_controller(config):
        return
    if _ONE_THREAD:
        import torch

        torch.set_num_threads(1)
    import mmseg_segman  # noqa: F401  (registers the plugin's modules)

# A test that starts a fresh interpreter: these names in its source, or in the source of a
# module-level function of its file that it calls.
_SPAWNS = re.compile(r'\bsubprocess\.|\bPopen\(|\bsys\.executable\b|\bos\.system\(')


@functools.lru_cache(maxsize=None)
def _spawns(function, module) -> bool:
    # Cached: the parametrized cases of a test share its function, fixtures and helpers.
    try:
        source = inspect.getsource(function)
    except (OSError, TypeError):
        return False
    if _SPAWNS.search(source):
        return True
    for name in getattr(function, '__code__', None).co_names if hasattr(
            function, '__code__') else ():
        helper = getattr(module, name, None)
        if inspect.isfunction(helper) and helper.__module__ == module.__name__:
            try:
                if _SPAWNS.search(inspect.getsource(helper)):
                    return True
            except (OSError, TypeError):
                continue
    return False


def _fixture_functions(item):
    """The functions of the fixtures ``item`` requests (a module-scoped fixture that trains
    a model in a subprocess makes every test using it slow)."""
    info = getattr(item, '_fixtureinfo', None)
    for name in getattr(item, 'fixturenames', ()):
        for fixturedef in (info.name2fixturedefs.get(name, ()) if info else ()):
            func = fixturedef.func
            source = inspect.getsourcefile(func) or ''
            # Only this suite's own fixtures (not pytest's), and not the guard below.
            if source.startswith(str(REPO_ROOT / 'tests')) and \
                    func.__name__ != '_no_subprocess_in_fast_tests':
                yield func


def pytest_collection_modifyitems(config, items):
    for item in items:
        function = getattr(item, 'function', None)
        if function is None:
            continue
        candidates = [function, *_fixture_functions(item)]
        if any(_spawns(f, inspect.getmodule(f) or item.module) for f in candidates):
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.spawns)
    if hasattr(config, 'workerinput'):
        # A pytest-xdist worker (pytest.ini's -n auto): the slow tests first, so that no
        # minute-long test starts last while the other worker idles (a stable sort: every
        # worker derives the same order, as xdist requires).
        items.sort(key=lambda item: item.get_closest_marker('slow') is None)
        # A 2-process run that must end with status 0 gets the cores to itself (the gloo exit
        # abort of docs/get_started.md, Tests): never beside another worker.
        alone = pytest.mark.skip(
            reason='torchrun_alone: runs with the cores to itself, `pytest -n 0 -m '
                   'torchrun_alone` (tools/run_tests.sh does after its parallel pass)')
        for item in items:
            if item.get_closest_marker('torchrun_alone') is not None:
                item.add_marker(alone)


@pytest.hookimpl(optionalhook=True)  # without pytest-xdist (-o addopts=): not called
def pytest_xdist_auto_num_workers(config):
    """The worker count of ``-n auto`` (pytest.ini): one per core this process may use, at
    most one per 6 GiB of memory (a worker of the main suite peaked at 4.7 GB resident, in the
    compile tests); fewer than two means none (in-process). ``PYTEST_XDIST_AUTO_NUM_WORKERS``
    overrides, as in pytest-xdist."""
    if os.environ.get('PYTEST_XDIST_AUTO_NUM_WORKERS'):
        return None  # pytest-xdist's own hook reads it
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else (
        os.cpu_count() or 1)
    memory = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
    workers = min(cores, memory // (6 << 30))
    return workers if workers > 1 else 0


def pytest_collection_finish(session):
    gc.collect()
    gc.freeze()


def pytest_unconfigure(config):
    # Back into the collector's reach before the interpreter's shutdown frees them (frozen,
    # triton's nanobind objects are reported as leaked at exit).
    gc.unfreeze()


def _starts_an_interpreter(args) -> bool:
    """A command that runs Python: the interpreter itself or a shell script (ours start
    torchrun). Short helper commands (mmengine's Runner asks git and the compilers for
    their versions) are not fresh interpreters."""
    argv = [str(a) for a in (args if isinstance(args, (list, tuple)) else [args])]
    if not argv:
        return False
    first = os.path.basename(argv[0].split()[0])
    return (argv[0] == sys.executable or first.startswith('python')
            or first in ('bash', 'sh', 'torchrun'))


@pytest.fixture(autouse=True)
def _no_subprocess_in_fast_tests(request, monkeypatch):
    """A test not marked slow may not start a fresh interpreter (the rule above missed it)."""
    if request.node.get_closest_marker('slow') is not None:
        return
    original = subprocess.Popen.__init__

    def guarded(self, args, *rest, **kwargs):
        if _starts_an_interpreter(args):
            raise AssertionError(
                f'{request.node.nodeid} starts a fresh interpreter ({args!r}) but is not '
                f'marked slow: mark it @pytest.mark.slow, or run it in-process')
        original(self, args, *rest, **kwargs)

    monkeypatch.setattr(subprocess.Popen, '__init__', guarded)


def golden_root():
    return Path(os.environ.get('MMSEG_SEGMAN_GOLDEN',
                               REPO_ROOT.parent / 'shared' / 'golden'))


@pytest.fixture(scope='session')
def golden_dir():
    """Directory of the golden files; skips (fails under CI) when it is missing."""
    root = golden_root()
    if not root.is_dir():
        reason = (f'golden directory {root} not found; set MMSEG_SEGMAN_GOLDEN '
                  f'to its location')
        if os.environ.get('CI'):
            pytest.fail(reason + ' (CI is set)')
        pytest.skip(reason)
    return root


@pytest.fixture(scope='session')
def load_golden(golden_dir):
    """``load_golden('segman-t.pt')``: the golden dict (loaded weights-only, once per session)."""
    import torch

    cache = {}

    def load(name):
        if name not in cache:
            path = golden_dir / name
            if not path.is_file():
                reason = f'golden file {path} is missing'
                if os.environ.get('CI'):
                    pytest.fail(reason + ' (CI is set)')
                pytest.skip(reason)
            cache[name] = torch.load(path, weights_only=True)
        return cache[name]

    return load


@pytest.fixture
def free_port():
    """``free_port()``: a TCP port nothing listens on now, for a launcher's rendezvous
    (``PORT`` of tools/dist_*.sh). Drawn at random below the kernel's ephemeral range
    (``ip_local_port_range``, from 32768): a client retrying a connection to an ephemeral
    port that nobody listens on yet can be handed that same port as its own and connect to
    itself. Random and checked by binding it, so tests running side by side
    (pytest-xdist workers) do not collide as ports derived from a pid can."""
    import random
    import socket

    rng = random.Random()  # seeded from os.urandom: independent across workers

    def pick() -> int:
        for _ in range(100):
            port = rng.randrange(20000, 32000)
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind(('', port))
                except OSError:
                    continue
                return port
        raise RuntimeError('no free TCP port found in 20000-31999')

    return pick
