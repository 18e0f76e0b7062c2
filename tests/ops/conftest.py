"""Shared fixtures for the operator tests: external oracles from optional packages."""
import importlib.util
import os
import sys
import types

import pytest


def _missing(reason):
    """Skip a test whose oracle is not installed; in CI (which installs it) fail instead."""
    if os.environ.get('CI'):
        pytest.fail(f'{reason} (CI is set, so the oracle must be installed)')
    pytest.skip(reason)


@pytest.fixture(scope='session')
def mamba_selective_scan_ref():
    """mamba-ssm's ``selective_scan_ref`` (pure PyTorch), usable on CPU.

    Only ``mamba_ssm.ops.selective_scan_interface`` is imported, not the package's
    ``__init__``: that one imports mamba-ssm's language model, hence ``transformers``, which
    tools/install.sh leaves out (installing mamba-ssm with ``--no-deps``), because mmengine's
    optimizer builder imports ``transformers`` whenever it is installed (about 1 s in every
    fresh interpreter). The interface module also imports the compiled
    ``selective_scan_cuda`` unconditionally; where it is absent a placeholder stands in for
    the import (the reference never calls it). Every module put in ``sys.modules`` here is
    removed again, so a later ``import mamba_ssm`` gets the real package.
    """
    spec = importlib.util.find_spec('mamba_ssm')
    if spec is None:
        _missing('mamba-ssm is not installed: no external selective-scan oracle')
    before = set(sys.modules)
    if 'mamba_ssm' not in sys.modules:
        package = types.ModuleType('mamba_ssm')
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        sys.modules['mamba_ssm'] = package
    if importlib.util.find_spec('selective_scan_cuda') is None:
        sys.modules['selective_scan_cuda'] = types.ModuleType('selective_scan_cuda')
    try:
        interface = importlib.import_module('mamba_ssm.ops.selective_scan_interface')
    finally:
        for name in set(sys.modules) - before:
            if name == 'selective_scan_cuda' or name.split('.')[0] == 'mamba_ssm':
                del sys.modules[name]
    return interface.selective_scan_ref
