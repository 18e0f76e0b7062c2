"""What every selective-scan implementation shares: argument checks, operand layouts, and the
steps around the recurrence (the step sizes dt, the scan input dt * B * u, and the read-out
with C, D and the gate z).

Used by the sequential reference and the chunked scan (:mod:`.selective_scan`) and by the export
scan (:mod:`.selective_scan_export`); the layout and the recurrence are described in
:mod:`.selective_scan`. Each step has two forms: without a buffer it uses out-of-place tensor
operations only (the reference, and the export scan, whose graph must not depend on data);
with one (the chunked scan) it works in that buffer and takes faster in-place routes.
"""
import math
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    'check_args', 'compute_dtype', 'Operands', 'operands', 'grouped', 'as_shape', 'step_sizes',
    'scan_input', 'read_out', 'LOG2E', 'ScanResult'
]

# What a selective scan returns: out, or (out, last_state) with return_last_state=True.
ScanResult = Union[Tensor, Tuple[Tensor, Tensor]]

# exp(x) == exp2(x * log2(e)); exp2 is the faster of the two on CPU (docs/benchmarks.md).
LOG2E = 1.0 / math.log(2.0)
# softplus(s) == s to float32 precision above this (same threshold as F.softplus).
_SOFTPLUS_LINEAR = 20.0


def check_args(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
               z: Optional[Tensor], delta_bias: Optional[Tensor]) -> Tuple[int, int, int, int]:
    """Validate shapes against the layout of :mod:`.selective_scan`; return (b, d, l, n)."""
    if u.dim() != 3:
        raise ValueError(f'u must have shape (batch, channels, length), got {tuple(u.shape)}')
    bsz, d, length = u.shape
    if length == 0:
        raise ValueError('u has sequence length 0; the scan needs at least one token')
    if delta.shape != u.shape:
        raise ValueError(f'delta must have the shape of u {tuple(u.shape)}, '
                         f'got {tuple(delta.shape)}')
    if A.dim() != 2 or A.shape[0] != d or A.shape[1] < 1:
        raise ValueError(f'A must have shape (channels={d}, d_state>=1), got {tuple(A.shape)}')
    if A.is_complex():
        raise ValueError('A must be real; complex A is not supported')
    n = A.shape[1]
    for name, t in (('B', B), ('C', C)):
        if t.dim() == 2:
            ok = tuple(t.shape) == (d, n)
        elif t.dim() == 3:
            ok = tuple(t.shape) == (bsz, n, length)
        elif t.dim() == 4:
            ok = tuple(t.shape) == (bsz, t.shape[1], n, length) and t.shape[1] > 0
            if ok and d % t.shape[1]:
                raise ValueError(f'{name} has {t.shape[1]} groups, which does not divide '
                                 f'the {d} channels')
        else:
            ok = False
        if not ok:
            raise ValueError(f'{name} must have shape ({d}, {n}), ({bsz}, {n}, {length}) or '
                             f'({bsz}, groups, {n}, {length}); got {tuple(t.shape)}')
    for name, t in (('D', D), ('delta_bias', delta_bias)):
        if t is not None and tuple(t.shape) != (d, ):
            raise ValueError(f'{name} must have shape ({d},), got {tuple(t.shape)}')
    if z is not None and z.shape != u.shape:
        raise ValueError(f'z must have the shape of u {tuple(u.shape)}, got {tuple(z.shape)}')
    for name, t in (('u', u), ('delta', delta), ('A', A), ('B', B), ('C', C), ('D', D),
                    ('z', z), ('delta_bias', delta_bias)):
        if t is None:
            continue
        if not t.is_floating_point():
            raise TypeError(f'{name} must be a floating-point tensor, got {t.dtype}')
        if t.device != u.device:
            raise ValueError(f'{name} is on {t.device} but u is on {u.device}')
    return bsz, d, length, n


def compute_dtype(u: Tensor) -> torch.dtype:
    """float64 for float64 ``u``, else float32."""
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def _bc_view(t):
    """B or C as a 5-D view that broadcasts against (b, g, d // g, n, l); returns (view, g)."""
    if t.dim() == 2:  # constant (d, n)
        return t[None, None, :, :, None], 1
    if t.dim() == 3:  # (b, n, l): one group
        return t[:, None, None], 1
    return t.unsqueeze(2), t.shape[1]


class Operands(NamedTuple):
    """The operands a scan reads besides delta, in the compute dtype."""
    u: Tensor  # (b, d, l)
    A: Tensor  # (d, n)
    B: Tensor  # 5-D view broadcasting against (b, gB, d // gB, n, l)
    gB: int
    C: Tensor  # likewise, gC groups
    gC: int
    D: Optional[Tensor]  # (d,)
    z: Optional[Tensor]  # (b, d, l)


def operands(u: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
             z: Optional[Tensor], dtype: torch.dtype) -> Operands:
    """Cast the operands to ``dtype`` and give B and C their broadcasting views."""
    Bv, gB = _bc_view(B.to(dtype))
    Cv, gC = _bc_view(C.to(dtype))
    return Operands(u.to(dtype), A.to(dtype), Bv, gB, Cv, gC,
                    None if D is None else D.to(dtype), None if z is None else z.to(dtype))


def grouped(x: Tensor, g: int) -> Tensor:
    """(b, d, ...) -> (b, g, d // g, ...) view."""
    return x.view(x.shape[0], g, x.shape[1] // g, *x.shape[2:])


def as_shape(buffer: Tensor, shape: Sequence[int]) -> Tensor:
    """A tensor of ``shape`` on the (at least as large) contiguous ``buffer``'s storage."""
    return buffer.view(-1)[:math.prod(shape)].view(shape)


def _softplus_exp2_(s2):
    """softplus(s) from ``s2`` = s * log2(e), in place: log1p(exp2(s2)) from vectorised exp2
    and log1p (faster than F.softplus on CPU), linear above s = 20 like F.softplus. Returns it
    and max(s2) (-inf if empty)."""
    limit = _SOFTPLUS_LINEAR * LOG2E
    top = s2.max().item() if s2.numel() else -math.inf
    if top <= limit:
        return s2.exp2_().log1p_(), top
    # log1p(exp(min(s, 20))) + max(s - 20, 0)
    excess = (s2 - limit).clamp_min_(0).div_(LOG2E)
    return s2.clamp_max_(limit).exp2_().log1p_().add_(excess), top


def _softplus_float(s):
    """softplus of a Python float (inf and nan pass through)."""
    return s if s > _SOFTPLUS_LINEAR or math.isnan(s) else math.log1p(math.exp(s))


def step_sizes(delta: Tensor, delta_bias: Optional[Tensor], delta_softplus: bool,
               dtype: torch.dtype, out: Optional[Tensor] = None) -> Tuple[Tensor, float]:
    """Step sizes dt = softplus(delta + delta_bias) (no softplus unless ``delta_softplus``).

    Without ``out``: F.softplus, which exports as ONNX's Softplus (an exp2/log1p form would
    export log1p as log(1 + x), inaccurate for small dt). With ``out`` (delta's shape, in
    ``dtype``): computed in that buffer with the exp2 form of softplus.

    Returns:
        tuple: dt (b, d, l) and an upper bound of it as a float (``math.inf`` without ``out``
        or without softplus).
    """
    if out is None:
        dt = delta.to(dtype)
        if delta_bias is not None:
            dt = dt + delta_bias.to(dtype)[:, None]
        return (F.softplus(dt) if delta_softplus else dt), math.inf
    scale = LOG2E if delta_softplus else 1.0  # exp2 inside softplus wants s * log2(e)
    if delta_bias is not None:
        torch.add(delta_bias.to(dtype)[:, None] * scale, delta.to(dtype), alpha=scale, out=out)
    else:
        torch.mul(delta.to(dtype), scale, out=out)
    if not delta_softplus:
        return out, math.inf
    dt, top = _softplus_exp2_(out)
    return dt, _softplus_float(top / LOG2E)


def scan_input(dt: Tensor, ops: Operands, out: Optional[Tensor] = None) -> Tensor:
    """The recurrence's input dt * B * u: (b, d, n, l), into ``out`` if given."""
    n = ops.A.shape[1]
    if out is None:
        return (grouped((dt * ops.u).unsqueeze(2), ops.gB) * ops.B).flatten(1, 2)
    if n == 1:  # dt * u straight into the buffer, then times B in place
        torch.mul(dt, ops.u, out=out[:, :, 0])
        grouped(out, ops.gB).mul_(ops.B)
    else:
        torch.mul(grouped((dt * ops.u).unsqueeze(2), ops.gB), ops.B, out=grouped(out, ops.gB))
    return out


def read_out(x: Tensor, ops: Operands, buffer: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """The output from the states x (b, d, n, l): y = <x, C> + D * u, times silu(z) if given.

    Args:
        buffer (Tensor, optional): storage the caller no longer needs, of at least b*d*l
            elements: with d_state 1, y is written over it (with more states the sum over
            them makes a new tensor), and D * u is added in place. Without it only
            out-of-place operations are used.

    Returns:
        tuple: the output (b, d, l), and y before the gate (what the gate's gradient needs).
    """
    bsz, d, n, length = x.shape
    if buffer is not None and n == 1:
        y = as_shape(buffer, x.shape)
        torch.mul(grouped(x, ops.gC), ops.C, out=grouped(y, ops.gC))
        y = y.view(bsz, d, length)
    else:
        y = (grouped(x, ops.gC) * ops.C).flatten(1, 2).sum(2)
    if ops.D is not None:
        if buffer is None:
            y = y + ops.u * ops.D[:, None]
        else:
            y.addcmul_(ops.u, ops.D[:, None])
    return (y if ops.z is None else y * F.silu(ops.z)), y
