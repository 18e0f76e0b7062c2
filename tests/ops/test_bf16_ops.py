"""bfloat16 autocast against float64, operator by operator, with bounds a real defect breaks.

Each check runs one operator (or SegMAN block) twice on the same values: once under CPU
``torch.autocast(dtype=torch.bfloat16)`` with the inputs that autocast would hand it
(bf16 activations, float32 parameters), once in float64 (the reference, never under a
defect). Errors are ``||x - x64|| / ||x64||`` over the output and over each gradient.
Bounds are multiples of bfloat16's unit roundoff ``U = 2**-8``:

check (sizes in the functions below)        bound  measured          under the defect
selective scan L=1024: out/du/dB/dA         1 U    0.43/0.42/0.41/0  4.6/6.5/5.9/13.7 U
SS2D 16ch 24x24: out/dx/param grads         2 U    0.67/0.82/0.43 U  8.7/8.1/6.0 U
local attention 24x24: out/dx               2 U    1.29/1.38 U       14.8/7.9 U
local attention 24x24: SS2D param grads     3 U    1.34 U            1.8 U (not caught)
local attention 5x6 (padded; 30-step scan)  2-3 U  1.06-1.62 U       1.2-1.6 U (not caught)
global attention 8x9, 5x6, 3x11             3 U    0.99-1.26 U       unchanged (no scan)
na2d 12x13, 12x15 dilation 2;               3 U    0.91-1.73 U       unchanged (no scan)
  padded 5x9, 9x4, 3x3
key mask dropped: na2d padded / global      3 U                      53-192 U / 33-62 U
  attention padded

"Under the defect" is the same check with the scan recurrence computed in bfloat16 (the
state rounded to bf16 at every step, forward and adjoint): :func:`bf16_recurrence`, and the
test :func:`test_bounds_catch_a_bf16_scan_recurrence`. The same defect injected by editing
``mmseg_segman/ops/linear_recurrence.py`` (``forward_scan`` / ``reverse_scan`` solving
float32 rows step by step in bfloat16) makes ``test_scan_bf16``, ``test_ss2d_bf16`` and
``test_local_attention_bf16[24x24]`` fail with the numbers in the last column. That
defect cannot reach ``na2d`` or the global attention (they contain no scan); their bounds
are shown to catch a defect of their own kind, the key mask of the padded small-map path
dropped (:func:`test_bounds_catch_a_dropped_key_mask`).

Why these sizes: a long scan (1024 steps) with slow decays (dt down to 1e-3) is where a
bf16 state loses most (a decay exp(-1e-3) rounds to 1 in bf16); the SS2D skip term
``D * u`` is exact in float32 and would hide the state's error in the output, so the SS2D
and local-attention checks set ``D = 0`` (any value is a valid trained weight).
"""
import contextlib
import math
from typing import Callable, Dict, Optional

import pytest
import torch
from torch import Tensor

from mmseg_segman.models.backbones.segman import LASSAttention
from mmseg_segman.models.layers.segman_blocks import RoPE2d, neighborhood_attention
from mmseg_segman.models.layers.ss2d import SS2D
from mmseg_segman.ops import linear_recurrence, na2d
from mmseg_segman.ops import selective_scan as ss
from mmseg_segman.ops.neighborhood_attention import api as na_api

U = 2.0**-8  # bfloat16 unit roundoff


def rel(x: Tensor, ref: Tensor) -> float:
    x, ref = x.detach().double(), ref.detach().double()
    return float((x - ref).norm() / ref.norm())


def autocast():
    return torch.autocast('cpu', dtype=torch.bfloat16)


# ------------------------------------------------------------------------------ defects
@contextlib.contextmanager
def bf16_recurrence():
    """The injected defect: the scan's linear recurrence (forward and adjoint) solved step by
    step with its state in bfloat16, where the scan means float32."""

    def forward_scan(a, b, chunk, decaying, out=None, prod=None):
        x = linear_recurrence._scan_steps(a.bfloat16(), b.bfloat16()).to(b.dtype)
        return linear_recurrence.ForwardScan(
            x.contiguous() if out is None else out.copy_(x), prod, None)

    def reverse_scan(a, prod, chunks, g, chunk, decaying, out=None):
        lam = linear_recurrence._scan_steps(a.bfloat16(), g.bfloat16(), reverse=True)
        lam = lam.to(g.dtype).contiguous()
        return lam, (out if out is not None else torch.empty_like(lam))

    saved = ss.forward_scan, ss.reverse_scan
    ss.forward_scan, ss.reverse_scan = forward_scan, reverse_scan
    try:
        yield
    finally:
        ss.forward_scan, ss.reverse_scan = saved


@contextlib.contextmanager
def dropped_key_mask():
    """A defect of the padded small-map path: the key mask is ignored, so queries attend to
    the zero padding too."""
    original = na_api.key_slots
    na_api.key_slots = lambda *args: torch.ones_like(original(*args))
    try:
        yield
    finally:
        na_api.key_slots = original


# ------------------------------------------------------------------------------ selective scan
def scan_errors(defect: Callable = contextlib.nullcontext, length: int = 1024,
                channels: int = 8) -> Dict[str, float]:
    """Selective scan as SS2D calls it under autocast (u, delta, B, C, z in bf16; A and
    delta_bias in float32) against the sequential reference in float64."""
    gen = torch.Generator().manual_seed(0)

    def bf16(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=gen)).bfloat16()

    dt = torch.exp(torch.linspace(math.log(1e-3), math.log(0.1), channels))  # SS2D's range
    inputs = dict(u=bf16(2, channels, length), delta=bf16(2, channels, length, scale=0.5),
                  A=-torch.ones(channels, 1), B=bf16(2, 1, length), C=bf16(2, 1, length),
                  delta_bias=dt + torch.log(-torch.expm1(-dt)))
    ref = {k: v.double().requires_grad_() for k, v in inputs.items()}
    y64 = ss.selective_scan_ref(**ref, delta_softplus=True)
    cotangent = torch.randn(y64.shape, generator=gen, dtype=torch.float64).bfloat16()
    y64.backward(cotangent.double())
    low = {k: v.clone().requires_grad_() for k, v in inputs.items()}
    with defect(), autocast():
        y = ss.selective_scan_fn(**low, delta_softplus=True)
    assert y.dtype == torch.bfloat16
    with defect():
        y.backward(cotangent)
    errors = {'out': rel(y, y64)}
    errors.update({f'd{k}': rel(low[k].grad, ref[k].grad) for k in inputs})
    return errors


# ------------------------------------------------------------------------------ modules
def _zero_scan_skip(module: torch.nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, SS2D):
            with torch.no_grad():
                m.Ds.zero_()


def module_errors(build: Callable[[], torch.nn.Module], shape, extra: Callable = None,
                  defect: Callable = contextlib.nullcontext,
                  param_prefix: Optional[str] = None) -> Dict[str, float]:
    """A module (float32 weights) under bf16 autocast against its float64 copy.

    ``extra(dtype)`` gives further forward arguments; ``param_prefix`` selects the
    parameters whose gradients form the ``dparams`` error (all of them by default)."""
    torch.manual_seed(0)
    module = build().eval()
    _zero_scan_skip(module)
    for name, p in module.named_parameters():
        if name.startswith('rpb'):  # zero at init; a trained model has a bias
            with torch.no_grad():
                p.normal_(0, 0.5)
    ref = build().double().eval()
    ref.load_state_dict(module.state_dict())
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    x = x.bfloat16().float()  # a bf16 activation
    x64 = x.double().requires_grad_()
    args64 = () if extra is None else (extra(torch.float64), )
    y64 = ref(x64, *args64)
    cotangent = torch.randn(y64.shape, generator=torch.Generator().manual_seed(2),
                            dtype=torch.float64)
    y64.backward(cotangent)
    x32 = x.clone().requires_grad_()
    args = () if extra is None else (extra(torch.float32), )
    with defect():
        with autocast():
            y = module(x32, *args)
        y.float().backward(cotangent.float())

    def params(m):
        return torch.cat([p.grad.double().flatten() for n, p in m.named_parameters()
                          if p.grad is not None and n.startswith(param_prefix or '')])

    return {'out': rel(y, y64), 'dx': rel(x32.grad, x64.grad),
            'dparams': rel(params(module), params(ref))}


def ss2d_errors(defect: Callable = contextlib.nullcontext) -> Dict[str, float]:
    return module_errors(lambda: SS2D(16), (1, 16, 24, 24), defect=defect)


def attention_errors(size, global_mode: bool,
                     defect: Callable = contextlib.nullcontext) -> Dict[str, float]:
    """SegMAN's token mixer: local (neighborhood attention + SS2D) or global (neighborhood
    + full attention with the resized global bias), 32 channels, 2 heads, kernel 7."""

    def build():
        return LASSAttention(32, 2, 7, global_size=(4, 4) if global_mode else None)

    def rope(dtype):
        return RoPE2d(16).to(dtype)(*size)

    return module_errors(build, (1, 32, *size), extra=rope, defect=defect,
                         param_prefix=None if global_mode else 'ssm.')


# ------------------------------------------------------------------------------ na2d
def dense_neighborhood_reference(q, k, v, kernel_size, dilation, rpb, height, width):
    """float64 neighborhood attention of the real ``height x width`` map, written from the
    documented rule (NATTEN's window, clipped to the map when an axis is shorter than the
    kernel) as one dense masked softmax; independent of the package's backends."""

    def axis(length, pos):
        if length < kernel_size * dilation:  # small map: every real position of the axis
            return [p for p in range(length) if p % dilation == pos % dilation]
        residue, group_pos = pos % dilation, pos // dilation
        group_len = (length - residue + dilation - 1) // dilation
        start = min(max(group_pos - kernel_size // 2, 0), group_len - kernel_size)
        return [(start + o) * dilation + residue for o in range(kernel_size)]

    q, k, v = (t[:, :, :height, :width].double() for t in (q, k, v))
    logits = torch.einsum('bnijc,bnklc->bnijkl', q, k)
    bias = torch.full((q.shape[1], height, width, height, width), float('-inf'),
                      dtype=torch.float64)
    for i in range(height):
        for j in range(width):
            for r in axis(height, i):
                for c in axis(width, j):
                    offset_r = (r - i) // dilation + kernel_size - 1
                    offset_c = (c - j) // dilation + kernel_size - 1
                    bias[:, i, j, r, c] = 0 if rpb is None else rpb[:, offset_r, offset_c]
    attn = (logits + bias).flatten(-2).softmax(-1).view_as(logits)
    return torch.einsum('bnijkl,bnklc->bnijc', attn, v)


def na2d_errors(size, kernel_size: int = 7, dilation: int = 1,
                defect: Callable = contextlib.nullcontext) -> Dict[str, float]:
    """``neighborhood_attention`` (which pads maps smaller than the kernel and passes a
    key_mask to ``na2d``) under autocast against :func:`dense_neighborhood_reference`.
    With ``dilation > 1`` it calls ``na2d`` directly (full-size map)."""
    gen = torch.Generator().manual_seed(0)
    height, width = size
    q, k, v = (torch.randn(2, 2, height, width, 16, generator=gen).bfloat16()
               for _ in range(3))
    q = (q.float() * 0.25).bfloat16()  # scaled, as SegMAN's queries arrive
    rpb = torch.randn(2, 2 * kernel_size - 1, 2 * kernel_size - 1, generator=gen)
    ref = [t.double().requires_grad_() for t in (q, k, v, rpb)]
    y64 = dense_neighborhood_reference(*ref[:3], kernel_size, dilation, ref[3], height,
                                       width)
    cotangent = torch.randn(y64.shape, generator=gen, dtype=torch.float64)
    y64.backward(cotangent)
    low = [t.clone().requires_grad_() for t in (q, k, v, rpb)]
    with defect():
        with autocast():
            if dilation == 1:
                y = neighborhood_attention(*low[:3], kernel_size, low[3])
            else:
                y = na2d(*low[:3], kernel_size, dilation, rpb=low[3], scale=1.0)
        y.float().backward(cotangent.float())
    errors = {'out': rel(y, y64)}
    errors.update({f'd{n}': rel(t.grad, r.grad) for n, t, r in zip('qkvb', low, ref)})
    return errors


# ------------------------------------------------------------------------------ bounds
SCAN_BOUND = 1 * U
SS2D_BOUND = 2 * U
ATTENTION_BOUNDS = {'out': 2 * U, 'dx': 2 * U, 'dparams': 3 * U}
NA2D_BOUND = 3 * U
GLOBAL_BOUND = 3 * U


def violations(errors: Dict[str, float], bound) -> Dict[str, str]:
    """Entries above their bound, as 'error (bound)' in units of U."""
    bounds = bound if isinstance(bound, dict) else dict.fromkeys(errors, bound)
    return {k: f'{e / U:.2f} U (bound {bounds[k] / U:.0f} U)' for k, e in errors.items()
            if not e <= bounds[k]}


def test_scan_bf16():
    errors = scan_errors()
    # A and delta_bias are float32 parameters: their gradients are float32 sums
    assert not violations(errors, SCAN_BOUND), violations(errors, SCAN_BOUND)
    assert errors['out'] > 0.1 * U  # it did run in bf16 (output rounded to bf16)


def test_ss2d_bf16():
    errors = ss2d_errors()
    assert not violations(errors, SS2D_BOUND), violations(errors, SS2D_BOUND)


@pytest.mark.parametrize('size', [(24, 24), (5, 6)], ids=['24x24', '5x6-padded'])
def test_local_attention_bf16(size):
    errors = attention_errors(size, global_mode=False)
    assert not violations(errors, ATTENTION_BOUNDS), violations(errors, ATTENTION_BOUNDS)


@pytest.mark.parametrize('size', [(8, 9), (5, 6), (3, 11)],
                         ids=['8x9', '5x6-padded', '3x11-padded'])
def test_global_attention_bf16(size):
    errors = attention_errors(size, global_mode=True)
    assert not violations(errors, GLOBAL_BOUND), violations(errors, GLOBAL_BOUND)


@pytest.mark.parametrize('size,dilation', [((12, 13), 1), ((5, 9), 1), ((9, 4), 1),
                                           ((3, 3), 1), ((12, 15), 2)],
                         ids=['12x13', '5x9-padded', '9x4-padded', '3x3-padded',
                              '12x15-dilated'])
def test_na2d_bf16(size, dilation):
    kernel_size = 5 if dilation > 1 else 7
    errors = na2d_errors(size, kernel_size, dilation)
    assert not violations(errors, NA2D_BOUND), violations(errors, NA2D_BOUND)


# ------------------------------------------------------------------------------ the bounds bite
def test_bounds_catch_a_bf16_scan_recurrence():
    """With the scan's state in bf16 each of the scan checks fails by a wide margin."""
    scan = scan_errors(defect=bf16_recurrence)
    ss2d = ss2d_errors(defect=bf16_recurrence)
    local = attention_errors((24, 24), global_mode=False, defect=bf16_recurrence)
    assert scan['out'] > 2 * SCAN_BOUND and max(scan.values()) > 5 * SCAN_BOUND, scan
    assert min(ss2d.values()) > 2 * SS2D_BOUND, ss2d
    assert local['out'] > 4 * ATTENTION_BOUNDS['out'], local
    assert local['dx'] > 2 * ATTENTION_BOUNDS['dx'], local


def test_bounds_catch_a_dropped_key_mask():
    """The padded small-map paths: attending to the padding breaks the na2d and global
    attention bounds; full-size maps have no mask and are unaffected."""
    assert violations(na2d_errors((5, 9), defect=dropped_key_mask), NA2D_BOUND)
    assert violations(na2d_errors((9, 4), defect=dropped_key_mask), NA2D_BOUND)
    assert violations(attention_errors((5, 6), True, defect=dropped_key_mask), GLOBAL_BOUND)
    assert not violations(na2d_errors((12, 13), defect=dropped_key_mask), NA2D_BOUND)
