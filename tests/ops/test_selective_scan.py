"""Selective scan: the chunked pure-PyTorch scan against independent references.

References: the sequential scan of this package run in float64 (ground truth), the same
sequential scan in float32, and mamba-ssm's own ``selective_scan_ref`` (external oracle).
Errors are max |difference| / max |reference| per tensor.
"""
import math

import pytest
import torch

from mmseg_segman.ops import linear_recurrence as ls
from mmseg_segman.ops import selective_scan as ss
from mmseg_segman.ops import selective_scan_common as common
from mmseg_segman.ops import selective_scan_fn
from mmseg_segman.ops.linear_recurrence import ScanOverflow
from mmseg_segman.ops.selective_scan import (
    linear_scan,
    mamba_kernel_call,
    selective_scan_chunked,
    selective_scan_ref,
)

NAMES = ('u', 'delta', 'A', 'B', 'C', 'D', 'z', 'delta_bias')
TOL = 1e-5


def make_inputs(batch=2, channels=4, length=16, d_state=1, groups=None, constant_bc=False,
                decay=(1e-3, 0.5), seed=0, with_z=True):
    """Float64 inputs. ``groups`` None gives (b, n, l) B/C; ``decay`` is the range of
    dt * |A| per step (log-uniform), set through delta_bias with delta_softplus=True."""
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    u = randn(batch, channels, length)
    delta = 0.3 * randn(batch, channels, length)
    log_lo, log_hi = (math.log(v) for v in decay)
    A = -torch.exp(torch.empty(channels, d_state, dtype=torch.float64).uniform_(
        log_lo, log_hi, generator=gen) / 2)
    dt_target = torch.exp(torch.empty(channels, dtype=torch.float64).uniform_(
        log_lo, log_hi, generator=gen) / 2)
    delta_bias = dt_target + torch.log(-torch.expm1(-dt_target))  # softplus^-1
    if constant_bc:
        B, C = randn(channels, d_state), randn(channels, d_state)
    elif groups is None:
        B, C = randn(batch, d_state, length), randn(batch, d_state, length)
    else:
        B, C = randn(batch, groups, d_state, length), randn(batch, groups, d_state, length)
    D = randn(channels)
    z = randn(batch, channels, length) if with_z else None
    return dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=delta_bias)


def run(fn, inputs, dtype, seed=1, return_last_state=False, delta_softplus=True):
    """Output and gradients of every input for a fixed random cotangent (float64 results)."""
    leaves = {k: (v.detach().clone().to(dtype).requires_grad_() if v is not None else None)
              for k, v in inputs.items()}
    res = fn(**leaves, delta_softplus=delta_softplus, return_last_state=return_last_state)
    outs = res if return_last_state else (res, )
    gen = torch.Generator().manual_seed(seed)
    loss = sum((o.double() * torch.randn(o.shape, generator=gen, dtype=torch.float64)).sum()
               for o in outs)
    params = [v for v in leaves.values() if v is not None]
    grads = torch.autograd.grad(loss, params)
    names = [k for k, v in leaves.items() if v is not None]
    result = {'out': outs[0].double()}
    if return_last_state:
        result['last_state'] = outs[1].double()
    result.update({'d' + k: g.double() for k, g in zip(names, grads)})
    return result


def rel_err(x, ref):
    return ((x - ref).abs().max() / ref.abs().max().clamp_min(1e-300)).item()


def assert_close(result, truth, tol=TOL, label=''):
    assert result.keys() == truth.keys()
    errors = {k: rel_err(result[k], truth[k]) for k in truth}
    for k, v in result.items():
        assert torch.isfinite(v).all(), f'{label}{k} is not finite'
    bad = {k: f'{e:.2e}' for k, e in errors.items() if not e <= tol}
    assert not bad, f'{label}relative errors above {tol}: {bad}'


# ---------------------------------------------------------------------------------------------
# linear_scan: the recurrence solver on its own
# ---------------------------------------------------------------------------------------------


def sequential(a, b):
    x, out = torch.zeros_like(b[:, 0]), torch.empty_like(b)
    for t in range(b.shape[1]):
        x = a[:, t] * x + b[:, t]
        out[:, t] = x
    return out


@pytest.mark.parametrize('chunk,length', [(2, 1), (3, 50), (4, 300), (8, 64), (5, 1000)])
def test_linear_scan_levels_match_sequential(chunk, length):
    """Small chunks force several levels of chunk-state recursion and a partial last chunk."""
    gen = torch.Generator().manual_seed(chunk * 1000 + length)
    a = torch.rand(6, length, generator=gen, dtype=torch.float64)
    a[0] = 1.0  # no decay: plain cumulative sum
    a[1, ::7] = 0.0  # resets
    b = torch.randn(6, length, generator=gen, dtype=torch.float64)
    truth = sequential(a, b)
    got = linear_scan(a.float(), b.float(), chunk=chunk, decaying=True).double()
    assert rel_err(got, truth) <= TOL
    # the same in float64 is exact to rounding
    assert rel_err(linear_scan(a, b, chunk=chunk, decaying=True), truth) <= 1e-12


def test_linear_scan_any_decay_and_growth():
    """Per-step decays from ~1e-289 (0 in float32) to 0.999, and growth (a up to 2.9), stay
    finite and match float64."""
    gen = torch.Generator().manual_seed(0)
    length = 700
    log_a = -torch.exp(torch.empty(8, length, dtype=torch.float64).uniform_(-7, 6.5, generator=gen))
    log_a[5:] = torch.empty(3, length, dtype=torch.float64).uniform_(-1.0, 1.05, generator=gen)
    a, b = log_a.exp(), torch.randn(8, length, generator=gen, dtype=torch.float64)
    truth = sequential(a, b)
    got = linear_scan(a.float(), b.float(), chunk=16, decaying=False).double()
    assert torch.isfinite(got).all()
    assert rel_err(got[:5], truth[:5]) <= TOL
    assert rel_err(got[5:], truth[5:]) <= TOL
    got_decaying = linear_scan(a[:5].float(), b[:5].float(), chunk=16, decaying=True).double()
    assert rel_err(got_decaying, truth[:5]) <= TOL


def test_linear_scan_huge_inputs_do_not_overflow():
    """|b| ~ 1e35 with decays whose products stay in range: b / P overflows float32 in the
    closed form, which must be detected and the chunk solved step by step."""
    gen = torch.Generator().manual_seed(1)
    a = torch.full((3, 200), 0.5, dtype=torch.float64)  # P >= 0.5**64 ~ 5e-20: in range
    b = torch.randn(3, 200, generator=gen, dtype=torch.float64) * 1e35
    truth = sequential(a, b)
    got = linear_scan(a.float(), b.float(), decaying=True).double()
    assert torch.isfinite(got).all()
    assert rel_err(got, truth) <= TOL
    spoiled = b.float()  # working in place, the scan reports the overflow instead
    with pytest.raises(ScanOverflow):
        ls.forward_scan(a.float(), spoiled, ls.SCAN_CHUNK, True, out=spoiled)


def sequential_adjoint(a, g):
    """lam_t = g_t + a_{t+1} * lam_{t+1}, lam past the end = 0: the gradient of sum(x * G)."""
    lam, nxt = torch.empty_like(g), torch.zeros_like(g[:, 0])
    for t in range(g.shape[1] - 1, -1, -1):
        nxt = g[:, t] + (a[:, t + 1] * nxt if t + 1 < g.shape[1] else 0)
        lam[:, t] = nxt
    return lam


@pytest.mark.parametrize('chunk,length,decaying', [(3, 50, True), (4, 300, False),
                                                    (16, 65, True), (16, 1000, False)])
def test_reverse_linear_scan_matches_sequential_adjoint(chunk, length, decaying):
    """The backward's adjoint scan, given the forward's chunk products: ordinary, reset,
    constant, and strong decays (chunks solved step by step), growth, partial last chunk."""
    gen = torch.Generator().manual_seed(chunk * 7 + length)
    log_a = -torch.exp(torch.empty(6, length, dtype=torch.float64).uniform_(-7, 2, generator=gen))
    log_a[1] = -torch.exp(torch.empty(length, dtype=torch.float64).uniform_(1, 6.5, generator=gen))
    if not decaying:
        log_a[4:] = torch.empty(2, length, dtype=torch.float64).uniform_(-1, 1.05, generator=gen)
    a, g = log_a.exp(), torch.randn(6, length, generator=gen, dtype=torch.float64)
    a[2] = 1.0
    a[3, ::5] = 0.0
    truth = sequential_adjoint(a, g)
    for dtype, tol in ((torch.float32, TOL), (torch.float64, 1e-12)):
        _, prod, chunks = ls.forward_scan(a.to(dtype), torch.zeros_like(g, dtype=dtype), chunk,
                                          decaying)
        assert any(bad.any() for _, bad in chunks)  # some chunks went step by step
        # the backward recomputes the products instead of keeping them
        again = ls.within_chunk_products(a.to(dtype), chunks, chunk, torch.empty_like(prod))
        assert torch.equal(again, prod)
        lam, _ = ls.reverse_scan(a.to(dtype), again, chunks, g.to(dtype), chunk, decaying)
        assert torch.isfinite(lam).all()
        assert rel_err(lam.double(), truth) <= tol, dtype


def test_reverse_linear_scan_overflow_in_closed_form():
    """Growth by 2**6 per step over one 16-step chunk keeps P <= 2**96 (closed form), but
    P * g reaches 2**129 although every lam (at most 2**123) fits in float32. Working in place
    the scan must say so (ScanOverflow); otherwise it solves that chunk step by step."""
    a = torch.ones(2, 80)
    a[:, :16] = 64.0
    g = torch.zeros(2, 80)
    g[:, 15] = 2.0**33
    g[1, 40] = 1.0
    truth = sequential_adjoint(a.double(), g.double())
    _, prod, chunks = ls.forward_scan(a, torch.zeros_like(g), 16, False)
    spoiled = g.clone()
    with pytest.raises(ScanOverflow):
        ls.reverse_scan(a, prod, chunks, spoiled, 16, False, out=spoiled)
    lam, _ = ls.reverse_scan(a, prod, chunks, g, 16, False)
    assert torch.isfinite(lam).all() and lam[0, 0] == 2.0**123
    assert rel_err(lam.double(), truth) <= TOL


def test_selective_scan_huge_values_match_float64():
    inputs = make_inputs(length=130, groups=2, decay=(0.3, 1.0))
    inputs['u'] = inputs['u'] * 1e35  # dt * B * u / P overflows float32 (P >= e**-16)
    truth = run(selective_scan_ref, inputs, torch.float64)
    fast = run(selective_scan_chunked, inputs, torch.float32)
    assert_close(fast, truth)
    with torch.no_grad():  # the inference path reuses other buffers
        out = selective_scan_chunked(**{k: v.float() for k, v in inputs.items()},
                                     delta_softplus=True)
    assert rel_err(out.double(), truth['out']) <= TOL


def test_backward_starts_again_when_the_adjoint_overflows_in_place(monkeypatch):
    """If the in-place adjoint scan reports an overflow (here simulated: it spoils its input
    and raises ScanOverflow), the backward rebuilds the state gradient and solves out of
    place."""
    real = ls.reverse_scan
    in_place_calls = []

    def overflowing(*args, out=None):
        in_place_calls.append(out is not None)
        if out is not None:
            out.fill_(float('nan'))
            raise ScanOverflow('simulated')
        return real(*args, out=out)

    monkeypatch.setattr(ss, 'reverse_scan', overflowing)
    inputs = make_inputs(length=100, d_state=2, groups=2)
    truth = run(selective_scan_ref, inputs, torch.float64, return_last_state=True)
    assert_close(run(selective_scan_chunked, inputs, torch.float32, return_last_state=True),
                 truth)
    assert in_place_calls == [True, False]


# ---------------------------------------------------------------------------------------------
# selective scan vs the float64 sequential reference
# ---------------------------------------------------------------------------------------------

CASES = [
    # length, d_state, groups, constant_bc
    (1, 1, 2, False),
    (2, 3, None, False),
    (63, 1, None, False),
    (64, 2, 2, False),
    (65, 1, 4, False),
    (65, 3, None, True),
    (4097, 1, 2, False),
]


@pytest.mark.parametrize('length,d_state,groups,constant_bc', CASES)
def test_chunked_and_reference_match_float64(length, d_state, groups, constant_bc):
    channels = 4
    inputs = make_inputs(batch=2 if length < 4097 else 1, channels=channels, length=length,
                         d_state=d_state, groups=groups, constant_bc=constant_bc)
    truth = run(selective_scan_ref, inputs, torch.float64, return_last_state=True)
    fast = run(selective_scan_chunked, inputs, torch.float32, return_last_state=True)
    assert_close(fast, truth, label='chunked fp32: ')
    if length < 4097:  # the float32 reference itself is within tolerance too
        assert_close(run(selective_scan_ref, inputs, torch.float32, return_last_state=True),
                     truth, label='sequential fp32: ')
    # float64 in, float64 computation: agrees to rounding
    assert_close(run(selective_scan_chunked, inputs, torch.float64, return_last_state=True),
                 truth, tol=1e-11, label='chunked fp64: ')


def test_chunked_gradcheck_float64(monkeypatch):
    """Analytic gradients of every input vs finite differences, with 3-step chunks so that
    two levels of chunk-state recursion (40 steps -> 14 chunks -> 5) and the partial last
    chunk are inside the checked function."""
    monkeypatch.setattr(ss, 'SCAN_CHUNK', 3)
    inputs = make_inputs(batch=1, channels=4, length=40, d_state=2, groups=2)
    args = [inputs[k].clone().requires_grad_() for k in NAMES]

    def fn(*tensors):
        return selective_scan_chunked(*tensors, delta_softplus=True, return_last_state=True)

    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_without_optional_inputs_and_without_softplus():
    inputs = make_inputs(length=70, d_state=2, groups=2, with_z=False)
    inputs.update(D=None, delta_bias=None)
    inputs['delta'] = inputs['delta'].abs() * 0.2  # dt used as given: keep it a valid step
    truth = run(selective_scan_ref, inputs, torch.float64, delta_softplus=False)
    fast = run(selective_scan_chunked, inputs, torch.float32, delta_softplus=False)
    assert_close(fast, truth)


@pytest.mark.parametrize('groups', [None, 4])
def test_strong_decay_stays_finite_and_exact(groups):
    """dt * |A| up to ~1e4 per step (exp underflows to 0 in float32), mixed with weak decays
    so that the within-chunk closed form fails for some chunks but not others."""
    inputs = make_inputs(batch=1, channels=8, length=300, groups=groups, decay=(1e-3, 1e4))
    inputs['delta'] = inputs['delta'] * 10  # dt spans softplus of roughly -3..+3 around bias
    truth = run(selective_scan_ref, inputs, torch.float64)
    fast = run(selective_scan_chunked, inputs, torch.float32)
    assert_close(fast, truth)


@pytest.mark.parametrize('scale,expect_in_place', [(1.0, True), (40.0, False), (1e4, False)])
def test_no_grad_forward_products_over_decays(monkeypatch, scale, expect_in_place):
    """Without autograd (d_state 1, softplus, A <= 0) the forward puts the decays' products
    over the decays when its bound proves no chunk needs them again; otherwise (strong decay)
    it keeps them apart. Both must match float64, and the bound must pick as expected."""
    inputs = make_inputs(batch=1, channels=8, length=300, groups=4, decay=(1e-3, 0.5))
    inputs['A'] = inputs['A'] * scale
    aliased = []
    original = ls.forward_scan

    def spy(a, b, chunk, decaying, out=None, prod=None):
        aliased.append(prod is not None and prod.data_ptr() == a.data_ptr())
        return original(a, b, chunk, decaying, out=out, prod=prod)

    monkeypatch.setattr(ss, 'forward_scan', spy)
    truth = selective_scan_ref(**inputs, delta_softplus=True)
    with torch.no_grad():
        fast = selective_scan_chunked(**{k: v.float() if v is not None else None
                                         for k, v in inputs.items()}, delta_softplus=True)
    assert aliased[0] is expect_in_place
    assert rel_err(fast.double(), truth) <= TOL


def test_no_grad_in_place_forward_starts_again_on_overflow(monkeypatch):
    """|dt * B * u| so large that b / P overflows inside the products-over-decays path: the
    forward must start again without reusing buffers and still match float64."""
    inputs = make_inputs(batch=1, channels=4, length=200, groups=None, decay=(0.5, 3.0),
                         with_z=False)
    inputs['u'] = inputs['u'] * 1e30
    inputs['u'][..., 50:] = 0.0  # huge early inputs, then pure decay
    calls = []
    original = ls.forward_scan

    def spy(a, b, chunk, decaying, out=None, prod=None):
        aliased = prod is not None and prod.data_ptr() == a.data_ptr()
        try:
            res = original(a, b, chunk, decaying, out=out, prod=prod)
        except ScanOverflow:
            calls.append((aliased, True))
            raise
        calls.append((aliased, False))
        return res

    monkeypatch.setattr(ss, 'forward_scan', spy)
    truth = selective_scan_ref(**inputs, delta_softplus=True)
    with torch.no_grad():
        fast = selective_scan_chunked(**{k: v.float() if v is not None else None
                                         for k, v in inputs.items()}, delta_softplus=True)
    # products over the decays overflowed; the restart's own in-place scan overflows as well,
    # then it solves out of place
    assert calls == [(True, True), (False, True), (False, False)]
    assert torch.isfinite(fast).all()
    assert rel_err(fast.double(), truth) <= TOL


def test_long_sequence_forward_matches_float64():
    """L = 65,536 with decay so weak that state accumulates over thousands of steps."""
    inputs = make_inputs(batch=1, channels=2, length=65536, groups=None, decay=(1e-5, 1e-3),
                         with_z=False)
    args = {k: v for k, v in inputs.items()}
    truth = selective_scan_ref(**args, delta_softplus=True)
    fast = selective_scan_chunked(**{k: v.float() if v is not None else None
                                     for k, v in args.items()}, delta_softplus=True)
    assert rel_err(fast.double(), truth) <= TOL


def test_half_precision_inputs_computed_in_float32():
    inputs = make_inputs(length=40, groups=2)
    for dtype in (torch.bfloat16, torch.float16):
        low = {k: v.to(dtype) for k, v in inputs.items()}
        out = selective_scan_fn(**low, delta_softplus=True)
        assert out.dtype == dtype
        expected = selective_scan_chunked(**{k: v.float() for k, v in low.items()},
                                          delta_softplus=True).to(dtype)
        assert torch.equal(out, expected)


# ---------------------------------------------------------------------------------------------
# the steps shared by the implementations (dt, dt * B * u, read-out)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize('with_bias', [False, True])
def test_step_sizes_both_forms_match_softplus_in_float64(with_bias):
    """The in-place exp2 form (chunked scan) and the F.softplus form (reference, export)
    against softplus written out in float64, across the linear threshold at 20; the returned
    bound is at least max(dt)."""
    gen = torch.Generator().manual_seed(0)
    delta = torch.randn(2, 5, 300, generator=gen, dtype=torch.float64) * 15
    bias = torch.randn(5, generator=gen, dtype=torch.float64) * 5 if with_bias else None
    delta = delta.clamp(-60, 60)  # exp(s) stays a normal float32
    s = delta + (bias[:, None] if with_bias else 0)
    truth = s.clamp_min(0) + torch.log1p(torch.exp(-s.abs()))  # softplus, exactly
    assert (s > 20).any() and (s < -20).any()
    # Rounding delta and bias to the dtype moves s by eps * (|delta| + |bias|), and softplus
    # changes by at most 1.45 times that, relative (sigmoid(s) <= 1.45 softplus(s)). Above
    # s = 20 both forms drop part of log1p(exp(-s)) < 2.1e-9 (F.softplus all of it): relative
    # 1.1e-10.
    size = 1 + delta.abs() + (bias.abs()[:, None] if with_bias else 0)
    for dtype, tol in ((torch.float64, 1e-15 * size + 1.1e-10), (torch.float32, 3e-7 * size)):
        plain, plain_bound = common.step_sizes(delta, bias, True, dtype)
        fast, bound = common.step_sizes(delta, bias, True, dtype,
                                        out=torch.empty(delta.shape, dtype=dtype))
        for dt in (plain, fast):
            assert dt.dtype == dtype
            assert ((dt.double() - truth).abs() <= tol * truth).all()
        assert plain_bound == math.inf
        assert truth.max().item() * (1 - 1e-6) <= bound <= truth.max().item() * (1 + 1e-6)
    without, _ = common.step_sizes(delta, bias, False, torch.float64,
                                   out=torch.empty_like(delta))
    torch.testing.assert_close(without, s, rtol=1e-15, atol=1e-13)


@pytest.mark.parametrize('d_state,groups,constant_bc', [(1, 2, False), (3, None, False),
                                                        (2, 4, False), (1, None, True)])
def test_scan_input_and_read_out_forms_agree(d_state, groups, constant_bc):
    """The in-buffer forms (chunked scan) equal the out-of-place forms (reference, export),
    which equal the formulas written out with explicit group indices."""
    inputs = make_inputs(batch=2, channels=4, length=9, d_state=d_state, groups=groups,
                         constant_bc=constant_bc)
    ops = common.operands(*(inputs[k] for k in ('u', 'A', 'B', 'C', 'D', 'z')), torch.float64)
    dt = torch.rand(2, 4, 9, dtype=torch.float64)
    x = torch.randn(2, 4, d_state, 9, dtype=torch.float64)

    def per_channel(t):  # B or C as (b, d, n, l)
        if t.dim() == 2:
            return t[None, :, :, None].expand(2, 4, d_state, 9)
        if t.dim() == 3:
            return t[:, None].expand(2, 4, d_state, 9)
        return t[:, torch.arange(4) // (4 // t.shape[1])]

    B, C = per_channel(inputs['B']), per_channel(inputs['C'])
    expected_input = dt[:, :, None] * B * inputs['u'][:, :, None]
    y = (x * C).sum(2) + inputs['u'] * inputs['D'][:, None]
    expected_out = y * inputs['z'] * torch.sigmoid(inputs['z'])
    plain = common.scan_input(dt, ops)
    in_buffer = common.scan_input(dt, ops, out=torch.empty(2, 4, d_state, 9, dtype=torch.float64))
    for got in (plain, in_buffer):
        torch.testing.assert_close(got, expected_input, rtol=1e-14, atol=1e-14)
    for buffer in (None, torch.empty(2, 4, d_state, 9, dtype=torch.float64)):
        out, before_gate = common.read_out(x, ops, buffer=buffer)
        torch.testing.assert_close(out, expected_out, rtol=1e-14, atol=1e-14)
        torch.testing.assert_close(before_gate, y, rtol=1e-14, atol=1e-14)


# ---------------------------------------------------------------------------------------------
# mamba-ssm's selective_scan_ref as external oracle (slow tier: its module imports triton,
# a few seconds; the fast tier keeps the float64 sequential reference)
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize('length,d_state,groups', [(1, 1, None), (2, 2, 4), (63, 1, 2),
                                                   (64, 1, 4), (65, 4, 2), (4097, 1, 4)])
def test_matches_mamba_reference(mamba_selective_scan_ref, length, d_state, groups):
    inputs = make_inputs(batch=2 if length < 4097 else 1, channels=8, length=length,
                         d_state=d_state, groups=groups)
    theirs = run(mamba_selective_scan_ref, inputs, torch.float32, return_last_state=True)
    ours = run(selective_scan_fn, inputs, torch.float32, return_last_state=True)
    assert_close(ours, theirs)


def checked(kernel):
    """Wrap ``kernel`` with the input checks of mamba-ssm's CUDA ``selective_scan_fwd``."""

    def call(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
             return_last_state=False):
        io = u.dtype
        assert io in (torch.float32, torch.float16, torch.bfloat16)
        assert A.dtype == torch.float32
        assert delta.dtype == io
        for t in (B, C):
            assert t.dtype == (io if t.dim() >= 3 else torch.float32)
        for t in (D, delta_bias):
            assert t is None or (t.dtype == torch.float32 and t.stride(-1) == 1)
        assert z is None or z.dtype == io
        return kernel(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)

    return call


@pytest.mark.slow
def test_mamba_adapter_meets_kernel_contract(mamba_selective_scan_ref):
    """The CUDA path's adapter, run on CPU with mamba's reference in place of its kernel:
    float64/strided arguments are converted as the kernel requires, and outputs and
    gradients (through the conversions) match the chunked scan."""
    inputs = make_inputs(batch=2, channels=8, length=50, d_state=2, groups=4)
    # what a model may pass: float64 parameters, strided views
    inputs['delta_bias'] = torch.stack([inputs['delta_bias']] * 2, 1)[:, 0]
    inputs['D'] = torch.stack([inputs['D']] * 3, 1)[:, 1]
    kernel = checked(mamba_selective_scan_ref)

    def through_adapter(u, delta, A, B, C, D, z, delta_bias, **kwargs):
        return mamba_kernel_call(kernel, u.float(), delta, A, B, C, D, z, delta_bias, **kwargs)

    theirs = run(through_adapter, inputs, torch.float64, return_last_state=True)
    ours = run(selective_scan_chunked, inputs, torch.float32, return_last_state=True)
    assert_close(theirs, ours)
    for name in ('dA', 'dD', 'ddelta_bias', 'dB'):
        assert theirs[name].shape == ours[name].shape


def test_cpu_tensors_never_reach_the_cuda_kernel(monkeypatch):
    def fail():
        raise AssertionError('kernel looked up for CPU tensors')

    monkeypatch.setattr(ss, '_mamba_kernel', fail)
    inputs = make_inputs(length=10)
    out = selective_scan_fn(**{k: v.float() for k, v in inputs.items()}, delta_softplus=True)
    assert out.shape == inputs['u'].shape


# ---------------------------------------------------------------------------------------------
# argument checking
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize('change,match', [
    (dict(B=torch.zeros(2, 3, 1, 16)), 'B has 3 groups'),
    (dict(C=torch.zeros(2, 1, 15)), 'C must have shape'),
    (dict(A=torch.zeros(4)), 'A must have shape'),
    (dict(A=torch.zeros(4, 1, dtype=torch.complex64)), 'complex A'),
    (dict(delta=torch.zeros(2, 4, 15)), 'delta must have the shape of u'),
    (dict(D=torch.zeros(3)), r'D must have shape \(4,\)'),
    (dict(delta_bias=torch.zeros(4, 1)), 'delta_bias must have shape'),
    (dict(z=torch.zeros(2, 4)), 'z must have the shape of u'),
    (dict(u=torch.zeros(2, 4, 0), delta=torch.zeros(2, 4, 0), B=torch.zeros(2, 1, 0),
          C=torch.zeros(2, 1, 0), z=None), 'length 0'),
])
def test_bad_arguments_raise_clear_errors(change, match):
    inputs = {k: v.float() for k, v in make_inputs(length=16).items()}
    inputs.update(change)
    for fn in (selective_scan_fn, selective_scan_ref):
        with pytest.raises(ValueError, match=match):
            fn(**inputs)


def test_integer_input_rejected():
    inputs = {k: v.float() for k, v in make_inputs(length=4).items()}
    inputs['u'] = inputs['u'].long()
    with pytest.raises(TypeError, match='u must be a floating-point tensor'):
        selective_scan_fn(**inputs)


def test_strided_inputs_and_gradient():
    """Views with permuted strides (as model code produces) give the same results."""
    inputs = {k: v.float() for k, v in make_inputs(length=70, d_state=1, groups=2).items()}

    def strided(t):  # same values, last dim not contiguous
        return t.transpose(0, -1).contiguous().transpose(0, -1) if t.dim() > 1 else t[::1]

    gen = torch.Generator().manual_seed(3)
    cotangent = torch.randn(inputs['u'].shape, generator=gen)
    grads = []
    for transform in (lambda t: t, strided):
        leaves = {k: transform(v.clone()).requires_grad_() for k, v in inputs.items()}
        if transform is strided:
            assert not leaves['u'].is_contiguous() and not leaves['B'].is_contiguous()
        out = selective_scan_chunked(**leaves, delta_softplus=True)
        out.backward(transform(cotangent.clone()))
        grads.append([out.detach()] + [leaves[k].grad for k in NAMES])
    for plain, permuted in zip(*grads):
        assert rel_err(permuted.double(), plain.double()) <= 1e-6


def test_empty_batch():
    inputs = {k: v.float()[:0] if k in ('u', 'delta', 'B', 'C', 'z') else v.float()
              for k, v in make_inputs(length=5, groups=2).items()}
    inputs['u'].requires_grad_()
    out = selective_scan_fn(**inputs, delta_softplus=True)
    out.sum().backward()
    assert out.shape == (0, 4, 5) and inputs['u'].grad.shape == (0, 4, 5)
