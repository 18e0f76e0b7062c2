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

    ``mamba_ssm.ops.selective_scan_interface`` imports the compiled ``selective_scan_cuda``
    unconditionally. Where that extension is absent, a placeholder module is put in
    ``sys.modules`` just for the import (the reference never calls it) and removed again.
    """
    if importlib.util.find_spec('mamba_ssm') is None:
        _missing('mamba-ssm is not installed: no external selective-scan oracle')
    placeholder = None
    if importlib.util.find_spec('selective_scan_cuda') is None:
        placeholder = types.ModuleType('selective_scan_cuda')
        sys.modules['selective_scan_cuda'] = placeholder
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_ref
    finally:
        if placeholder is not None and sys.modules.get('selective_scan_cuda') is placeholder:
            del sys.modules['selective_scan_cuda']
    return selective_scan_ref
