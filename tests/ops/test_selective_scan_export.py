"""The export-friendly selective scan against the sequential reference, and the export switch.

Errors are measured against ``selective_scan_ref`` run in float64 (or a float64 Python loop for
the bare recurrence), so they are the float32 rounding of the export form alone.
"""
import math

import pytest
import torch

from mmseg_segman.models.layers.ss2d import SS2D
from mmseg_segman.ops import selective_scan_fn
from mmseg_segman.ops.export import is_exporting
from mmseg_segman.ops.selective_scan import selective_scan_ref
from mmseg_segman.ops.selective_scan_export import linear_scan_export, selective_scan_export


def loop_scan(s, b):
    """x_t = exp(s_t) x_{t-1} + b_t, one step at a time, in float64."""
    s, b = s.double(), b.double()
    x = torch.zeros_like(b[..., 0])
    out = []
    for t in range(s.shape[-1]):
        x = torch.exp(s[..., t]) * x + b[..., t]
        out.append(x)
    return torch.stack(out, -1)


def scan_inputs(bsz, d, length, n, groups, seed, a_scale=3.0):
    """SS2D-like inputs: grouped B/C (b, g, n, l), A < 0, D, z, delta_bias."""
    g = torch.Generator().manual_seed(seed)
    return dict(u=torch.randn(bsz, d, length, generator=g),
                delta=torch.randn(bsz, d, length, generator=g),
                A=-a_scale * torch.rand(d, n, generator=g) - 0.01,
                B=torch.randn(bsz, groups, n, length, generator=g),
                C=torch.randn(bsz, groups, n, length, generator=g),
                D=torch.randn(d, generator=g), z=torch.randn(bsz, d, length, generator=g),
                delta_bias=torch.randn(d, generator=g))


def as_double(kw):
    return {k: v.double() if torch.is_tensor(v) else v for k, v in kw.items()}


# One chunk, shorter than a chunk, exact multiple, ragged, and three recursion levels
# (259 steps = 17 chunks of 16 -> 2 chunks -> 1).
@pytest.mark.parametrize('length', [1, 7, 16, 48, 259])
def test_matches_reference_float32(length):
    kw = scan_inputs(2, 8, length, 3, groups=4, seed=length)
    out, last = selective_scan_export(**kw, delta_softplus=True, return_last_state=True)
    ref, ref_last = selective_scan_ref(**as_double(kw), delta_softplus=True,
                                       return_last_state=True)
    assert out.dtype == torch.float32 and out.shape == (2, 8, length)
    assert last.shape == (2, 8, 3)
    scale = ref.abs().max().item()
    assert scale > 1.0  # the outputs are not trivially small
    assert (out.double() - ref).abs().max().item() <= 2e-6 * scale
    assert (last.double() - ref_last).abs().max().item() <= 2e-6 * ref_last.abs().max().item()


def test_float64_is_exact_to_rounding():
    kw = as_double(scan_inputs(1, 4, 300, 2, groups=2, seed=1))
    out = selective_scan_export(**kw, delta_softplus=True)
    ref = selective_scan_ref(**kw, delta_softplus=True)
    assert out.dtype == torch.float64
    assert (out - ref).abs().max().item() <= 1e-12 * ref.abs().max().item()


@pytest.mark.parametrize('layout', ['constant', 'shared', 'per_channel_groups'])
def test_bc_layouts_and_optional_terms(layout):
    bsz, d, length, n = 2, 6, 40, 2
    kw = scan_inputs(bsz, d, length, n, groups=1, seed=3)
    g = torch.Generator().manual_seed(4)
    shapes = dict(constant=(d, n), shared=(bsz, n, length),
                  per_channel_groups=(bsz, d, n, length))
    kw['B'] = torch.randn(*shapes[layout], generator=g)
    kw['C'] = torch.randn(*shapes[layout], generator=g)
    kw['delta'] = kw['delta'].abs()  # no softplus below: keep dt >= 0 (decay, not growth)
    kw['delta_bias'] = kw['delta_bias'].abs()
    for drop in ({}, dict(D=None, z=None, delta_bias=None)):
        args = {**kw, **drop}
        out = selective_scan_export(**args)
        ref = selective_scan_ref(**as_double(args))
        assert (out.double() - ref).abs().max().item() <= 1e-5 * ref.abs().max().item()


def test_strong_decay_underflows_to_the_true_limit():
    # dt * A down to about -1e4 per step: every decay factor underflows to 0 in float32, so
    # x_t = b_t exactly; the form must not produce inf or nan.
    kw = scan_inputs(1, 4, 70, 1, groups=1, seed=5, a_scale=1e4)
    kw['delta_bias'] = torch.full((4, ), 2.0)
    out = selective_scan_export(**kw, delta_softplus=True)
    ref = selective_scan_ref(**as_double(kw), delta_softplus=True)
    assert torch.isfinite(out).all()
    assert (out.double() - ref).abs().max().item() <= 1e-5 * ref.abs().max().item()


def test_weak_decay_long_sequence():
    # A = -1e-4: the state accumulates over 5000 steps (output grows to ~ sqrt(5000)).
    g = torch.Generator().manual_seed(6)
    s = torch.full((3, 5000), -1e-4)
    b = torch.randn(3, 5000, generator=g)
    x = linear_scan_export(s, b)
    ref = loop_scan(s, b)
    assert ref.abs().max().item() > 30
    assert (x.double() - ref).abs().max().item() <= 1e-5 * ref.abs().max().item()


@pytest.mark.parametrize('chunk', [2, 3, 16])
def test_linear_scan_chunk_sizes(chunk):
    g = torch.Generator().manual_seed(chunk)
    s = -torch.rand(2, 5, 100, generator=g) * 2
    b = torch.randn(2, 5, 100, generator=g)
    x = linear_scan_export(s, b, chunk)
    ref = loop_scan(s, b)
    assert (x.double() - ref).abs().max().item() <= 2e-6 * ref.abs().max().item()


def test_growth_beyond_float_range_is_not_handled():
    # Documented limit: no step-by-step fallback. exp(sum s) over 100 steps of s = 1 is e^100,
    # above float32's range, so the result is not finite (the true value is ~1e43 as well).
    s = torch.ones(1, 100)
    b = torch.ones(1, 100)
    x = linear_scan_export(s, b)
    assert not torch.isfinite(x[0, -1])
    # Moderate growth stays accurate.
    s = torch.full((1, 100), 0.05)
    x = linear_scan_export(s, b)
    assert (x.double() - loop_scan(s, b)).abs().max().item() <= 1e-5 * math.exp(5) / 0.05


def test_argument_errors():
    with pytest.raises(ValueError, match='chunk must be an int >= 2'):
        linear_scan_export(torch.zeros(4), torch.zeros(4), chunk=1)
    with pytest.raises(ValueError, match='same shape'):
        linear_scan_export(torch.zeros(4), torch.zeros(5))
    kw = scan_inputs(1, 4, 10, 1, groups=1, seed=0)
    kw['B'] = torch.zeros(1, 3, 1, 10)  # 3 groups do not divide 4 channels
    with pytest.raises(ValueError, match='B has 3 groups, which does not divide'):
        selective_scan_export(**kw)


def test_ss2d_switches_to_the_export_scan_under_torch_export():
    torch.manual_seed(0)
    layer = SS2D(8).eval()
    x = torch.randn(1, 8, 5, 7)  # 35 tokens: three chunks, the last one partial
    assert not is_exporting()
    with torch.no_grad():
        eager = layer(x)
        # The normal scan cannot be exported (data-dependent branches); the switch makes it work.
        program = torch.export.export(layer, (x, ))
        exported = program.module()(x)
    assert not is_exporting()
    assert exported.shape == (1, 8, 5, 7)
    assert (exported - eager).abs().max().item() <= 1e-5 * eager.abs().max().item()
    assert eager.abs().max().item() > 0.1


def test_selective_scan_fn_switches_to_the_export_scan_by_itself():
    """Exported, selective_scan_fn is the export scan: torch.export succeeds (the chunked
    scan's data-dependent branches would make it fail) and the program follows its inputs."""
    kw = scan_inputs(1, 4, 40, 2, groups=2, seed=7)

    class Scan(torch.nn.Module):

        def forward(self, u, delta):
            return selective_scan_fn(u, delta, kw['A'], kw['B'], kw['C'], kw['D'], kw['z'],
                                     kw['delta_bias'], delta_softplus=True)

    program = torch.export.export(Scan(), (kw['u'], kw['delta']))
    for scale in (1.0, -2.0):
        u = kw['u'] * scale
        ref = selective_scan_ref(**as_double({**kw, 'u': u}), delta_softplus=True)
        out = program.module()(u, kw['delta'])
        assert (out.double() - ref).abs().max().item() <= 2e-6 * ref.abs().max().item()
    nodes = {str(node.target) for node in program.graph.nodes}
    assert not any('cumprod' in name for name in nodes)  # the chunked scan's closed form
