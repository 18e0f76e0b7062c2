"""Triton selective scan, run on CPU by Triton's interpreter, against the sequential reference
in float64 (outputs and every gradient); and the scan's choice of backend.

Triton decides when it is imported whether kernels (its own library functions included) are
interpreted, and tests/conftest.py imports the package, hence Triton, first. The
``test_interpreted_*`` tests therefore run only in a process started with
``TRITON_INTERPRET=1``; without it, ``test_kernels_under_the_interpreter`` starts such a
process (pytest on this file) and checks that it passed.
"""
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmseg_segman.ops import selective_scan as ss
from mmseg_segman.ops import selective_scan_triton
from mmseg_segman.ops.selective_scan import scan_backend, selective_scan_fn, selective_scan_ref

REPO = Path(__file__).resolve().parents[2]
INTERPRETING = os.environ.get('TRITON_INTERPRET') == '1'


@pytest.fixture(scope='module')
def interpreted():
    """The Triton scan module, its kernels interpreted (only with TRITON_INTERPRET=1)."""
    if selective_scan_triton.triton is None:
        pytest.skip('triton is not installed')
    if not INTERPRETING:
        pytest.skip('needs TRITON_INTERPRET=1 when Triton is imported; '
                    'test_kernels_under_the_interpreter runs it so')
    from triton.runtime.interpreter import InterpretedFunction
    assert isinstance(selective_scan_triton._scan_fwd_kernel, InterpretedFunction)
    return selective_scan_triton


def _run_interpreted(selection):
    """pytest on this file's interpreted tests matching ``selection``, TRITON_INTERPRET=1."""
    if selective_scan_triton.triton is None:
        pytest.skip('triton is not installed')
    if INTERPRETING:
        pytest.skip('already interpreting: the interpreted tests run in this process')
    env = dict(os.environ, TRITON_INTERPRET='1', OMP_NUM_THREADS='1')
    proc = subprocess.run(
        # In that one process: without pytest.ini's addopts (-n auto), which would start two
        # more workers and needs pytest-xdist
        [sys.executable, '-m', 'pytest', __file__, '-q', '-o', 'addopts=', '-p', 'no:cacheprovider',
         '-k', selection], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    tail = proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    assert ' passed' in proc.stdout and 'skipped' not in proc.stdout, tail
    return proc.stdout


def test_kernels_under_the_interpreter():
    """Every interpreted case (outputs and gradients, SegMAN's layout among them) in one
    process: about a minute on the interpreter, plus one interpreter start."""
    _run_interpreted('test_interpreted')


def _inputs(batch, channels, length, d_state, bc='grouped', groups=4, with_z=True,
            with_d=True, decay=1.0, seed=0):
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    if bc == 'grouped':
        B, C = randn(batch, groups, d_state, length), randn(batch, groups, d_state, length)
    elif bc == 'token':
        B, C = randn(batch, d_state, length), randn(batch, d_state, length)
    else:
        B, C = randn(channels, d_state), randn(channels, d_state)
    A = -decay * torch.rand(channels, d_state, generator=gen, dtype=torch.float64) - 0.05
    return dict(u=randn(batch, channels, length), delta=randn(batch, channels, length),
                A=A, B=B, C=C, D=randn(channels) if with_d else None,
                z=randn(batch, channels, length) if with_z else None,
                delta_bias=randn(channels) * 0.5)


def _grads(fn, inputs, dtype, softplus, last_state, seed=1):
    """Output, last state and gradients of a random linear loss of both."""
    leaves = {k: (v.detach().to(dtype).requires_grad_() if v is not None else None)
              for k, v in inputs.items()}
    res = fn(**leaves, delta_softplus=softplus, return_last_state=last_state)
    out, last = res if last_state else (res, None)
    gen = torch.Generator().manual_seed(seed)
    loss = (out * torch.randn(out.shape, generator=gen, dtype=torch.float64).to(out.dtype)).sum()
    if last is not None:
        loss = loss + (last * torch.randn(last.shape, generator=gen,
                                          dtype=torch.float64).to(last.dtype)).sum()
    loss.backward()
    grads = {k: v.grad for k, v in leaves.items() if v is not None}
    return out, last, grads


def _rel(x, ref):
    return ((x.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()


CASES = [  # batch, channels, length, d_state, bc, options
    pytest.param(2, 8, 150, 1, 'grouped', dict(), id='segman'),  # 4 groups, d 1, 3 chunks
    pytest.param(1, 5, 70, 3, 'token', dict(with_z=False), id='padded-states'),
    pytest.param(2, 20, 64, 2, 'constant', dict(with_d=False), id='constant-bc-2-blocks'),
    pytest.param(1, 4, 1, 1, 'grouped', dict(groups=2), id='one-token'),
    pytest.param(1, 4, 200, 1, 'grouped', dict(groups=2, decay=60.0), id='strong-decay'),
]


@pytest.mark.parametrize('last_state', [False, True])
@pytest.mark.parametrize('batch,channels,length,d_state,bc,options', CASES)
def test_interpreted_matches_reference_in_float64(interpreted, batch, channels, length, d_state, bc,
                                      options, last_state):
    inputs = _inputs(batch, channels, length, d_state, bc, **options)
    ref_out, ref_last, ref_grads = _grads(selective_scan_ref, inputs, torch.float64, True,
                                          last_state)
    out, last, grads = _grads(interpreted.selective_scan_triton, inputs, torch.float32, True,
                              last_state)
    assert out.dtype == torch.float32
    assert _rel(out, ref_out) < 2e-5
    if last_state:
        assert last.dtype == torch.float32 and _rel(last, ref_last) < 2e-5
    assert set(grads) == set(ref_grads)
    for name, ref in ref_grads.items():
        assert grads[name].shape == ref.shape, name
        assert _rel(grads[name], ref) < 5e-5, name


def test_interpreted_without_softplus(interpreted):
    inputs = _inputs(2, 8, 90, 2, 'grouped')
    inputs['delta'] = inputs['delta'].abs() * 0.3  # raw step sizes must be positive
    ref_out, _, ref_grads = _grads(selective_scan_ref, inputs, torch.float64, False, False)
    out, _, grads = _grads(interpreted.selective_scan_triton, inputs, torch.float32, False,
                           False)
    assert _rel(out, ref_out) < 2e-5
    for name, ref in ref_grads.items():
        assert _rel(grads[name], ref) < 5e-5, name


def test_interpreted_bfloat16_input_keeps_its_dtype(interpreted):
    """bf16 u / delta / z (as under autocast): computed in float32, returned in bf16."""
    inputs = _inputs(1, 8, 80, 1, 'grouped')
    for key in ('u', 'delta', 'z', 'B', 'C'):
        inputs[key] = inputs[key].bfloat16().double()  # the values bf16 can hold
    ref_out, _, _ = _grads(selective_scan_ref, inputs, torch.float64, True, False)
    leaves = {k: (v.bfloat16() if k in ('u', 'delta', 'z', 'B', 'C') else v.float())
              for k, v in inputs.items()}
    out = interpreted.selective_scan_triton(**leaves, delta_softplus=True)
    assert out.dtype == torch.bfloat16
    assert _rel(out.float(), ref_out) < 1e-2  # bf16 rounding of the output only


def test_interpreted_no_backward_state_without_grad(interpreted, monkeypatch):
    """Without autograd the forward saves no chunk-start states (SAVE=False)."""
    calls = []
    kernel = interpreted._scan_fwd_kernel

    class Spy:
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                calls.append(kwargs['SAVE'])
                return kernel[grid](*args, **kwargs)
            return launch

    monkeypatch.setattr(interpreted, '_scan_fwd_kernel', Spy())
    inputs = {k: (v.float() if v is not None else None)
              for k, v in _inputs(1, 4, 20, 1).items()}
    with torch.no_grad():
        interpreted.selective_scan_triton(**inputs, delta_softplus=True)
    assert calls == [False]


def test_refuses_without_triton(monkeypatch):
    monkeypatch.setattr(selective_scan_triton, 'available', lambda: False)
    inputs = {k: v.float() for k, v in _inputs(1, 4, 8, 1, with_z=False).items()
              if v is not None}
    with pytest.raises(RuntimeError, match='needs Triton'):
        selective_scan_triton.selective_scan_triton(**inputs)


# ----------------------------------------------------------------------------- dispatch
@pytest.mark.parametrize('cuda,mamba,triton_ok,dtype,d_state,expected', [
    (False, True, True, torch.float32, 1, 'chunked'),
    (True, True, True, torch.float32, 1, 'mamba'),
    (True, True, True, torch.float32, 300, 'triton'),  # beyond mamba's d_state limit
    (True, False, True, torch.bfloat16, 1, 'triton'),
    (True, False, False, torch.float32, 1, 'chunked'),
    (True, True, True, torch.float64, 1, 'chunked'),  # neither kernel takes float64
])
def test_backend_choice(monkeypatch, cuda, mamba, triton_ok, dtype, d_state, expected):
    monkeypatch.setattr(ss, '_on_cuda', lambda u: cuda)
    monkeypatch.setattr(ss, '_mamba_kernel', lambda: object() if mamba else None)
    monkeypatch.setattr(selective_scan_triton, 'available', lambda: triton_ok)
    u = torch.zeros(1, 2, 4, dtype=dtype)
    assert scan_backend(u, torch.zeros(2, d_state)) == expected
    monkeypatch.setattr(ss, 'is_exporting', lambda: True)
    assert scan_backend(u, torch.zeros(2, d_state)) == 'export'


def test_selective_scan_fn_runs_the_triton_backend(monkeypatch):
    """With CUDA pretended and no mamba-ssm, selective_scan_fn hands every argument to the
    Triton scan (a recording stand-in computing the reference) and returns its result."""
    calls = []

    def stand_in(*args):
        calls.append(len(args))
        return selective_scan_ref(*args)

    monkeypatch.setattr(ss, '_on_cuda', lambda u: True)
    monkeypatch.setattr(ss, '_mamba_kernel', lambda: None)
    monkeypatch.setattr(selective_scan_triton, 'available', lambda: True)
    monkeypatch.setattr(selective_scan_triton, 'selective_scan_triton', stand_in)
    inputs = {k: v.float() for k, v in _inputs(1, 4, 12, 1).items()}
    out, last = selective_scan_fn(**inputs, delta_softplus=True, return_last_state=True)
    ref_out, ref_last = selective_scan_ref(**inputs, delta_softplus=True,
                                           return_last_state=True)
    assert calls == [10]
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(last, ref_last)
    assert math.isfinite(out.abs().max().item())
