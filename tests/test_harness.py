"""The suite's own rules (tests/conftest.py): what marks a test slow, the guard on fast tests,
the pytest-xdist worker count, the order and skips on a worker, and the frozen heap.

Each is checked on the conftest module pytest loaded, in-process.
"""
import gc
import importlib
import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

CONFTEST = Path(__file__).resolve().parent / 'conftest.py'
GiB = 1 << 30
# Spelled so that the slow-marking rule does not match this file's own source.
RUN = getattr(importlib.import_module('sub' + 'process'), 'run')
INTERPRETER = getattr(sys, 'exec' + 'utable')


@pytest.fixture
def rules(request):
    """tests/conftest.py as pytest loaded it."""
    module = request.config.pluginmanager.get_plugin(str(CONFTEST))
    assert module is not None, 'pytest did not load tests/conftest.py'
    return module


# Sources for the slow-marking rule: one starts an interpreter itself, one through a
# helper of its module, one does neither.
SPAWNING_SOURCE = '''
import subprocess
def direct():
    return subprocess.run(['python', '-c', 'pass'])
'''
HELPER_SOURCE = '''
import sys
def _helper():
    return [sys.executable, '-c', 'pass']
def through_helper():
    return _helper()
'''
PLAIN_SOURCE = '''
def plain(x):
    return x + 1
'''


def _module_from_source(tmp_path, name, source):
    path = tmp_path / f'{name}.py'
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_test_that_starts_an_interpreter_is_marked_slow(rules, tmp_path):
    direct = _module_from_source(tmp_path, 'harness_direct', SPAWNING_SOURCE)
    helper = _module_from_source(tmp_path, 'harness_helper', HELPER_SOURCE)
    plain = _module_from_source(tmp_path, 'harness_plain', PLAIN_SOURCE)
    assert rules._spawns(direct.direct, direct)
    assert rules._spawns(helper.through_helper, helper)  # through a module-level helper
    assert not rules._spawns(plain.plain, plain)
    assert not rules._spawns(len, plain)  # no Python source: not a spawning test


@pytest.mark.parametrize('args, starts', [
    ([INTERPRETER, '-c', 'pass'], True),
    (['python3', 'tools/train.py'], True),
    ('bash tools/dist_train.sh cfg 2', True),
    (['torchrun', '--nproc_per_node', '2'], True),
    (['git', 'rev-parse', 'HEAD'], False),  # what MMEngine's Runner asks, not a Python
    ([], False),
])
def test_which_commands_count_as_a_fresh_interpreter(rules, args, starts):
    assert rules._starts_an_interpreter(args) is starts


def test_a_fast_test_that_starts_an_interpreter_fails(request):
    """This test is not slow (its source avoids the rule's names), so the guard is on."""
    assert request.node.get_closest_marker('slow') is None
    with pytest.raises(AssertionError, match='not marked slow'):
        RUN([INTERPRETER, '-c', 'pass'])


@pytest.mark.parametrize('cores, memory_gib, workers', [
    (2, 23, 2),    # this project's CI machine: one worker per core
    (16, 64, 10),  # memory caps it at one worker per 6 GiB
    (2, 8, 0),     # one worker would only add a process: in-process instead
    (1, 64, 0),
])
def test_xdist_auto_worker_count(rules, monkeypatch, cores, memory_gib, workers):
    monkeypatch.delenv('PYTEST_XDIST_AUTO_NUM_WORKERS', raising=False)
    monkeypatch.setattr(rules.os, 'sched_getaffinity', lambda pid: set(range(cores)),
                        raising=False)
    sysconf = {'SC_PAGE_SIZE': 4096, 'SC_PHYS_PAGES': memory_gib * GiB // 4096}
    monkeypatch.setattr(rules.os, 'sysconf', sysconf.__getitem__)
    assert rules.pytest_xdist_auto_num_workers(None) == workers


def test_xdist_auto_worker_count_defers_to_the_environment(rules, monkeypatch):
    monkeypatch.setenv('PYTEST_XDIST_AUTO_NUM_WORKERS', '3')
    assert rules.pytest_xdist_auto_num_workers(None) is None  # pytest-xdist's hook reads it


@pytest.mark.parametrize('dist, worker, collect_only, controller', [
    ('worksteal', False, False, True),
    ('worksteal', True, False, False),  # a worker runs the tests
    ('no', False, False, False),        # -n 0: this process runs them
    ('worksteal', False, True, False),  # --collect-only lists them here
])
def test_xdist_controller(rules, dist, worker, collect_only, controller):
    config = SimpleNamespace(option=SimpleNamespace(dist=dist, collectonly=collect_only))
    if worker:
        config.workerinput = {}
    assert rules._is_xdist_controller(config) is controller


class _Item:
    """What pytest_collection_modifyitems reads of an item (no test function: the
    slow-marking rule leaves it alone)."""

    function = None

    def __init__(self, name, *markers):
        self.name, self.markers = name, [getattr(pytest.mark, m).mark for m in markers]

    def get_closest_marker(self, name):
        return next((m for m in self.markers if m.name == name), None)

    def add_marker(self, marker):
        self.markers.append(marker.mark)


def test_a_worker_starts_the_slow_tests_first_and_skips_torchrun_alone(rules):
    items = [_Item('fast1'), _Item('slow1', 'slow'), _Item('fast2'),
             _Item('alone', 'slow', 'torchrun_alone'), _Item('slow2', 'slow')]
    rules.pytest_collection_modifyitems(SimpleNamespace(workerinput={}), items)
    assert [i.name for i in items] == ['slow1', 'alone', 'slow2', 'fast1', 'fast2']
    skip = items[1].get_closest_marker('skip')
    assert skip is not None and 'pytest -n 0 -m torchrun_alone' in skip.kwargs['reason']
    assert all(i.get_closest_marker('skip') is None for i in items if i.name != 'alone')


def test_in_one_process_the_order_is_kept_and_nothing_is_skipped(rules):
    items = [_Item('fast1'), _Item('alone', 'slow', 'torchrun_alone'), _Item('slow1', 'slow')]
    rules.pytest_collection_modifyitems(SimpleNamespace(), items)
    assert [i.name for i in items] == ['fast1', 'alone', 'slow1']
    assert all(i.get_closest_marker('skip') is None for i in items)


def test_the_heap_of_the_collected_modules_is_frozen():
    """pytest_collection_finish moved what collection imported out of the collector's
    reach (MMEngine's datasets call gc.collect() each time they serialise)."""
    assert gc.get_freeze_count() > 100_000
    assert gc.isenabled()  # new objects are still collected
