"""The torch.compile selective scan against the float64 sequential reference.

Compilation takes tens of seconds per new set of shapes, so the shapes are few and the
compiling tests are marked slow; the fallback test compiles nothing.
"""
import shutil

import pytest
import torch

from mmseg_segman.ops import selective_scan_compiled as sc
from mmseg_segman.ops.selective_scan import selective_scan_chunked, selective_scan_ref

from test_selective_scan import assert_close, make_inputs, run

needs_compiler = pytest.mark.skipif(
    shutil.which('g++') is None and shutil.which('c++') is None
    or not torch._dynamo.is_dynamo_supported(),
    reason='torch.compile needs a C++ compiler and a Python version Dynamo supports')


@pytest.fixture
def fresh_state(monkeypatch):
    """A clean compile state, restored afterwards (a failure switches the module off)."""
    monkeypatch.setattr(sc, '_FAILED', [])
    monkeypatch.setattr(sc, '_compiled', {})


@pytest.mark.slow
@needs_compiler
@pytest.mark.parametrize('length,d_state,groups', [
    (1, 1, 2), (2, 2, None), (63, 1, 2), (64, 2, None), (65, 1, 2), (4097, 1, 2)])
def test_compiled_matches_float64_reference(length, d_state, groups):
    """Outputs, last state and all eight gradients in float32 within 1e-5 of float64; the
    compiled pieces really ran (no fallback)."""
    inputs = make_inputs(batch=2, channels=4, length=length, d_state=d_state, groups=groups)
    truth = run(selective_scan_ref, inputs, torch.float64, return_last_state=True)
    got = run(sc.selective_scan_compiled, inputs, torch.float32, return_last_state=True)
    assert not sc._FAILED, sc._FAILED  # compiled, no fallback
    assert set(sc._compiled) == set(sc._PIECES)
    assert_close(got, truth)


@pytest.mark.slow
@needs_compiler
def test_compiled_strong_decay_and_optional_inputs():
    """dt * |A| up to 2000 per step (whole chunks leave the float range) stays finite and
    exact; also without z, D and delta_bias, and with constant (d, n) B/C."""
    inputs = make_inputs(batch=2, channels=4, length=65, d_state=2, groups=2, decay=(50, 2000))
    truth = run(selective_scan_ref, inputs, torch.float64)
    assert_close(run(sc.selective_scan_compiled, inputs, torch.float32), truth)
    bare = make_inputs(batch=1, channels=4, length=40, d_state=2, constant_bc=True,
                       with_z=False)
    bare.update(D=None, delta_bias=None)
    for softplus in (True, False):
        truth = run(selective_scan_ref, bare, torch.float64, delta_softplus=softplus)
        got = run(sc.selective_scan_compiled, bare, torch.float32, delta_softplus=softplus)
        assert_close(got, truth, label=f'softplus={softplus}: ')


def test_falls_back_with_one_warning_when_compilation_fails(fresh_state, monkeypatch):
    """A backend that cannot compile: one warning, then every call gives the chunked scan's
    results (exactly) and no compilation is tried again."""
    attempts = []

    def broken_compile(fn, **kwargs):
        def call(*args):
            attempts.append(fn.__name__)
            raise RuntimeError('no C++ compiler')
        return call

    monkeypatch.setattr(torch, 'compile', broken_compile)
    inputs = make_inputs(batch=1, channels=4, length=40, d_state=2, groups=2)
    with pytest.warns(UserWarning, match='no C\\+\\+ compiler') as record:
        first = run(sc.selective_scan_compiled, inputs, torch.float32, return_last_state=True)
        second = run(sc.selective_scan_compiled, inputs, torch.float32)
    assert len(record) == 1
    assert attempts == ['_prologue']
    assert not sc.compile_available()
    chunked = run(selective_scan_chunked, inputs, torch.float32)
    for k, v in chunked.items():
        assert torch.equal(second[k], v), k
    # the first call finished with the uncompiled pieces: same math, float32 rounding
    assert_close(first, run(selective_scan_ref, inputs, torch.float64, return_last_state=True))
