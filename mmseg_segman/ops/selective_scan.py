"""Selective scan (Mamba S6) with the semantics of ``mamba_ssm.selective_scan_fn``.

Shapes (``b`` batch, ``d`` channels, ``l`` length, ``n`` d_state, ``g`` groups):

- ``u``, ``delta``, ``z``: (b, d, l)
- ``A``: (d, n), real
- ``B``, ``C``: (b, n, l), grouped (b, g, n, l) with ``d % g == 0`` (channel ``c`` uses group
  ``c // (d // g)``), or constant (d, n)
- ``D``, ``delta_bias``: (d,)

Recurrence, per channel and state::

    dt_t = softplus(delta_t + delta_bias)  (if delta_softplus)
    x_t  = exp(dt_t * A) * x_{t-1} + dt_t * B_t * u_t,   x_{-1} = 0
    y_t  = <x_t, C_t> + D * u_t            (then * silu(z_t) if z is given)

Implementations, all built on the steps of :mod:`.selective_scan_common` (dt, the input
dt * B * u, the read-out with C, D and z); :func:`selective_scan_fn` picks one:

- :func:`selective_scan_ref`: one Python step per token. Obviously right, slow; for tests.
- :func:`selective_scan_chunked`: pure PyTorch, forward and hand-written backward. The linear
  recurrence is solved in chunks (:mod:`.linear_recurrence`), its adjoint in the backward likewise;
  chunks whose decay leaves the float range are solved step by step, so any decay keeps float
  precision. Without autograd it runs a leaner forward that reuses buffers.
- :func:`~.selective_scan_export.selective_scan_export`: static control flow, used while a
  graph is exported (:func:`mmseg_segman.ops.export.is_exporting`).
- mamba-ssm's CUDA kernel, for CUDA tensors when ``mamba_ssm`` is installed (through
  :func:`mamba_kernel_call`).
- :func:`~.selective_scan_triton.selective_scan_triton`: Triton kernels (float32 throughout,
  no float64), for CUDA tensors when mamba-ssm is not installed.

:func:`scan_backend` names the one :func:`selective_scan_fn` runs for given inputs.

All of them compute in float32 (float64 for float64 ``u``) and return ``u``'s dtype.
"""
import warnings
from typing import Callable, Optional

import torch
from torch import Tensor

from . import selective_scan_triton
from .export import is_exporting
from .linear_recurrence import (
    SCAN_CHUNK,
    ScanOverflow,
    forward_scan,
    linear_scan,
    reverse_scan,
    within_chunk_products,
)
from .selective_scan_common import (
    LOG2E,
    ScanResult,
    as_shape,
    check_args,
    compute_dtype,
    grouped,
    operands,
    read_out,
    scan_input,
    step_sizes,
)
from .selective_scan_export import selective_scan_export

__all__ = [
    'selective_scan_fn', 'selective_scan_chunked', 'selective_scan_ref', 'linear_scan',
    'mamba_kernel_call', 'scan_backend', 'SCAN_CHUNK'
]

# The no-grad forward puts the decays' products over the decays when a chunk's total decay is
# provably at most 2**-90 (> the closed form's 2**-100 limit): then no chunk needs the decays
# again.
_IN_PLACE_DECAY_BITS = 90.0
# mamba-ssm's CUDA kernel: supported input dtypes and largest d_state.
_MAMBA_IO_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_MAMBA_MAX_DSTATE = 256


# --------------------------------------------------------------------------------------------
# Sequential reference
# --------------------------------------------------------------------------------------------


def selective_scan_ref(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                       D: Optional[Tensor] = None, z: Optional[Tensor] = None,
                       delta_bias: Optional[Tensor] = None, delta_softplus: bool = False,
                       return_last_state: bool = False) -> ScanResult:
    """Sequential reference, one step per token (O(l) Python steps). For tests only.

    Same arguments and results as :func:`selective_scan_fn`; differentiable through autograd.
    """
    _, _, length, _ = check_args(u, delta, A, B, C, D, z, delta_bias)
    ct = compute_dtype(u)
    ops = operands(u, A, B, C, D, z, ct)
    dt, _ = step_sizes(delta, delta_bias, delta_softplus, ct)
    decay = torch.exp(dt.unsqueeze(2) * ops.A[:, :, None])  # (b, d, n, l)
    inp = scan_input(dt, ops)  # (b, d, n, l)
    x = inp.new_zeros(inp.shape[:3])
    states = []
    for t in range(length):
        x = decay[..., t] * x + inp[..., t]
        states.append(x)
    out, _ = read_out(torch.stack(states, dim=-1), ops)
    out = out.to(u.dtype)
    return (out, x) if return_last_state else out


# --------------------------------------------------------------------------------------------
# Chunked scan: forward without autograd, forward with autograd, backward
# --------------------------------------------------------------------------------------------


def _new(shape, like):
    return torch.empty(shape, dtype=like.dtype, device=like.device)


def _decays(dt, A, out):
    """exp(dt * A) = exp2(dt * A * log2(e)) into ``out`` (b, d, n, l); ``out`` may be dt's
    buffer (then d_state must be 1)."""
    return torch.mul(dt.unsqueeze(2), A[:, :, None] * LOG2E, out=out).exp2_()


def _chunk_decay_bits(dt_max, A):
    """Upper bound, in bits, of any chunk's total decay: SCAN_CHUNK * max(dt) * max|A|."""
    a_max = float(A.abs().max()) if A.numel() else 0.0
    return SCAN_CHUNK * dt_max * a_max * LOG2E


def _forward_no_grad(ops, delta, delta_bias, delta_softplus, decaying):
    """Forward without a backward to prepare for: (output, states x).

    With d_state 1, dt is dead once the scan input is formed, so its buffer takes the
    products of the decays. If moreover no chunk can decay below the closed form's range (the
    sum of dt * |A| over a chunk is at most SCAN_CHUNK * max(dt) * max|A|), no chunk is solved
    step by step, which would need the decays themselves: then the decays go over dt's buffer
    too, one buffer fewer to fault in and to pull through the caches. With d_state 1 the
    output goes over the decays' buffer.

    Raises:
        ScanOverflow: the in-place scan overflowed; its buffers are spoiled.
    """
    u = ops.u
    bsz, d, length = u.shape
    n = ops.A.shape[1]
    dt, dt_max = step_sizes(delta, delta_bias, delta_softplus, u.dtype, out=_new(u.shape, u))
    inp = scan_input(dt, ops, out=_new((bsz, d, n, length), u))
    if n == 1 and decaying and _chunk_decay_bits(dt_max, ops.A) <= _IN_PLACE_DECAY_BITS:
        a = prod = _decays(dt, ops.A, out=dt.unsqueeze(2))
    else:
        a = _decays(dt, ops.A, out=_new((bsz, d, n, length), u))
        prod = dt if n == 1 else None
    flat = inp.view(-1, length)
    x = forward_scan(a.view(-1, length), flat, SCAN_CHUNK, decaying, out=flat,
                     prod=None if prod is None else prod.view(-1, length)).x
    x = x.view(bsz, d, n, length)
    out, _ = read_out(x, ops, buffer=a)
    return out, x


def _forward_train(ops, delta, delta_bias, delta_softplus, decaying):
    """Forward that keeps what the backward needs: (output, (dt, a, x, y), chunks).

    dt, the decays a and the states x get buffers of their own (the backward reads them);
    the states go over the scan input, and y over the within-chunk products.
    """
    u = ops.u
    bsz, d, length = u.shape
    n = ops.A.shape[1]
    dt, _ = step_sizes(delta, delta_bias, delta_softplus, u.dtype, out=_new(u.shape, u))
    inp = scan_input(dt, ops, out=_new((bsz, d, n, length), u))
    a = _decays(dt, ops.A, out=_new((bsz, d, n, length), u))
    a_flat, flat = a.view(-1, length), inp.view(-1, length)
    try:
        res = forward_scan(a_flat, flat, SCAN_CHUNK, decaying, out=flat)
    except ScanOverflow:  # |dt * B * u| so large that b / P overflowed: form b again
        res = forward_scan(a_flat, scan_input(dt, ops, out=inp).view(-1, length), SCAN_CHUNK,
                           decaying)
    x = res.x.view(bsz, d, n, length)
    out, y = read_out(x, ops, buffer=torch.empty_like(x) if res.prod is None else res.prod)
    return out, (dt, a, x, y), res.chunks


def _reduce_to(t, shape):
    """Sum a broadcast product back to an operand's ``shape``; always a new tensor."""
    dims = [i for i, (m, k) in enumerate(zip(shape, t.shape)) if m == 1 and k != 1]
    return t.sum(dims, keepdim=True) if dims else t.clone()


def _state_gradient(g, ops, dlast, out):
    """Gradient reaching the states x directly, g * C (+ dlast at the end), into ``out``."""
    torch.mul(grouped(g, ops.gC)[:, :, :, None], ops.C, out=grouped(out, ops.gC))
    if dlast is not None:
        out[..., -1] += dlast.to(out.dtype)
    return out.view(-1, out.shape[-1])


def _states_adjoint(g, ops, dlast, a, chunks, decaying, work, prod):
    """Total gradient lam of every state x_t, (b, d, n, l), and a free (b, d, n, l) buffer.

    ``work`` and ``prod`` are free (b, d, n, l) buffers; the within-chunk products go into
    ``prod`` and the state gradient into ``work``, which the adjoint scan then writes over.
    """
    length = a.shape[-1]
    a_flat = a.view(-1, length)
    products = within_chunk_products(a_flat, chunks, SCAN_CHUNK, prod.view(-1, length))
    flat = _state_gradient(g, ops, dlast, work)
    try:
        lam, spare = reverse_scan(a_flat, products, chunks, flat, SCAN_CHUNK, decaying, out=flat)
    except ScanOverflow:  # |g * C| so large that g * P overflowed: form it again
        lam, spare = reverse_scan(a_flat, products, chunks, _state_gradient(g, ops, dlast, work),
                                  SCAN_CHUNK, decaying)
    return lam.view_as(a), spare.view_as(a)


def _backward(saved, need, delta_softplus, decaying, chunks, dout, dlast):
    """Gradients of (u, delta, A, B, C, D, z, delta_bias); None where not needed."""
    u, delta, A, B, C, D, z, delta_bias, dt, a, x, y = saved
    ct = dt.dtype
    ops = operands(u, A, B, C, D, z, ct)
    bsz, d, length = u.shape
    n = A.shape[1]
    g = dout.to(ct).contiguous()  # may be dout itself: read only
    dz = None
    if z is not None:  # out = y * silu(z)
        sig_z = torch.sigmoid(ops.z)
        if need[6]:  # d silu(z) / dz = sig(z) * (1 + z * (1 - sig(z)))
            dz = (g * y * sig_z * (1 + ops.z * (1 - sig_z))).to(z.dtype)
        g = torch.mul(g, ops.z, out=torch.empty_like(g)).mul_(sig_z)
    dD = None if D is None or not need[5] else torch.einsum('bdl,bdl->d', g, ops.u).to(D.dtype)
    work = torch.empty_like(x)
    dC = None
    if need[4]:
        xg = torch.mul(grouped(x, ops.gC), grouped(g, ops.gC)[:, :, :, None],
                       out=grouped(work, ops.gC))
        dC = _reduce_to(xg, ops.C.shape).view(C.shape).to(C.dtype)
    du_buf = torch.empty_like(x)  # first the within-chunk products, later du
    lam, spare = _states_adjoint(g, ops, dlast, a, chunks, decaying, work, du_buf)
    # x_t depends on dt_t through the input dt * B * u and through the decay.
    dtu = torch.mul(dt, ops.u, out=as_shape(du_buf, dt.shape))
    dB = None
    if need[3]:
        lam_dtu = torch.mul(grouped(dtu.unsqueeze(2), ops.gB), grouped(lam, ops.gB),
                            out=grouped(spare, ops.gB))
        dB = _reduce_to(lam_dtu, ops.B.shape).view(B.shape).to(B.dtype)
    # gradient of log(a_t) = dt_t * A: w_t = lam_t * a_t * x_{t-1}
    w = torch.mul(lam, a, out=spare)
    w[..., 1:].mul_(x[..., :-1])
    w[..., 0] = 0
    dA = None if not need[2] else torch.einsum('bdnl,bdl->dn', w, dt).to(A.dtype)
    if n == 1:  # lam is dead after this: B goes over it
        lam_B = grouped(lam, ops.gB).mul_(ops.B).view(bsz, d, length)
    else:
        lam_B = torch.mul(grouped(lam, ops.gB), ops.B).view(bsz, d, n, length).sum(2)
    du = torch.mul(lam_B, dt, out=dtu)
    if D is not None:
        du.addcmul_(g, ops.D[:, None])
    ddt = lam_B.mul_(ops.u)
    if n == 1:
        ddt.addcmul_(w.squeeze(2), ops.A)
    else:
        ddt += torch.einsum('bdnl,dn->bdl', w, ops.A)
    if delta_softplus:  # softplus'(s) = sigmoid(s) = 1 / (1 + exp2(-s * log2(e)))
        s = as_shape(spare, dt.shape)
        if delta_bias is None:
            torch.mul(delta.to(ct), -LOG2E, out=s)
        else:
            torch.add(delta_bias.to(ct)[:, None] * -LOG2E, delta.to(ct), alpha=-LOG2E, out=s)
        ddt.div_(s.exp2_().add_(1.0))
    ddelta_bias = None
    if delta_bias is not None and need[7]:
        ddelta_bias = ddt.sum((0, 2)).to(delta_bias.dtype)
    return du.to(u.dtype), ddt.to(delta.dtype), dA, dB, dC, dD, dz, ddelta_bias


class _SelectiveScanChunked(torch.autograd.Function):
    """Forward with the chunked linear scan, backward with its adjoint.

    Saves dt (b, d, l), the decays a = exp(dt * A) and the states x ((b, d, n, l) each) for the
    backward, which recomputes the within-chunk products of a and the softplus derivative.
    Large temporaries are reused in place where possible: on CPU a fresh multi-megabyte buffer
    costs page faults that take longer than an arithmetic pass over it.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state):
        ops = operands(u, A, B, C, D, z, compute_dtype(u))
        decaying = delta_softplus and bool((ops.A <= 0).all())
        args = (ops, delta, delta_bias, delta_softplus, decaying)
        if any(ctx.needs_input_grad[:8]):
            out, (dt, a, x, y), chunks = _forward_train(*args)
            ctx.delta_softplus, ctx.decaying = delta_softplus, decaying
            ctx.chunks = chunks  # small: chunk totals and which chunks went step by step
            ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, dt, a, x,
                                  y if z is not None else None)
        else:
            try:
                out, x = _forward_no_grad(*args)
            except ScanOverflow:  # its reused buffers are spoiled: start again without reuse
                out, (_, _, x, _), _ = _forward_train(*args)
        out = out.to(u.dtype)
        if return_last_state:
            return out, x[..., -1].clone()
        return out

    @staticmethod
    def backward(ctx, dout, dlast=None):
        grads = _backward(ctx.saved_tensors, ctx.needs_input_grad, ctx.delta_softplus,
                          ctx.decaying, ctx.chunks, dout, dlast)
        return (*grads, None, None)


def selective_scan_chunked(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                           D: Optional[Tensor] = None, z: Optional[Tensor] = None,
                           delta_bias: Optional[Tensor] = None, delta_softplus: bool = False,
                           return_last_state: bool = False) -> ScanResult:
    """Pure-PyTorch selective scan with a hand-written backward; any device.

    Arguments and results as :func:`selective_scan_fn`. Memory: besides the output it keeps
    three (b, d, n, l)-sized tensors per call for the backward.
    """
    check_args(u, delta, A, B, C, D, z, delta_bias)
    return _SelectiveScanChunked.apply(u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus),
                                       bool(return_last_state))


# --------------------------------------------------------------------------------------------
# mamba-ssm's CUDA kernel, and the dispatch
# --------------------------------------------------------------------------------------------

_mamba_kernel_cache = []


def _mamba_kernel():
    """mamba-ssm's ``selective_scan_fn`` if it imports (it needs its CUDA extension), else None."""
    if not _mamba_kernel_cache:
        try:
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as kernel
        except ImportError as err:
            kernel = None
            warnings.warn(f'mamba-ssm CUDA selective scan unavailable ({err}); CUDA tensors use '
                          'the Triton scan where Triton runs, else the pure-PyTorch chunked '
                          'scan; both are slower.')
        _mamba_kernel_cache.append(kernel)
    return _mamba_kernel_cache[0]


def mamba_kernel_call(kernel: Callable[..., ScanResult], u: Tensor, delta: Tensor, A: Tensor,
                      B: Tensor, C: Tensor,
                      D: Optional[Tensor] = None, z: Optional[Tensor] = None,
                      delta_bias: Optional[Tensor] = None, delta_softplus: bool = False,
                      return_last_state: bool = False) -> ScanResult:
    """Call a function with mamba-ssm's ``selective_scan_fn`` interface, meeting its kernel's
    input contract: delta, z and per-token B/C in u's dtype; A, constant B/C, D and
    delta_bias in float32 with unit last stride. Autograd flows through the casts.
    """
    io = u.dtype

    def per_token(t):
        return t.to(io) if t.dim() >= 3 else t.float().contiguous()

    return kernel(u, delta.to(io), A.float(), per_token(B), per_token(C),
                  None if D is None else D.float().contiguous(),
                  None if z is None else z.to(io),
                  None if delta_bias is None else delta_bias.float().contiguous(),
                  delta_softplus, return_last_state)


def _on_cuda(u) -> bool:
    """Whether the CUDA backends may be tried (a function, so tests can pretend on CPU)."""
    return u.is_cuda


def scan_backend(u: Tensor, A: Tensor) -> str:
    """The implementation :func:`selective_scan_fn` runs for ``u`` (b, d, l) and ``A`` (d, n).

    Order: the export scan while exporting; on CUDA, mamba-ssm's kernel if it imports and
    takes the inputs (float32/float16/bfloat16 ``u``, d_state <= 256), else the Triton kernels
    if Triton runs here and takes ``u``'s dtype; otherwise (CPU, float64, no Triton) the
    chunked PyTorch scan.

    Returns:
        str: ``'export'``, ``'mamba'``, ``'triton'`` or ``'chunked'``.
    """
    if is_exporting():
        return 'export'
    if not _on_cuda(u):
        return 'chunked'
    if u.dtype in _MAMBA_IO_DTYPES and A.shape[1] <= _MAMBA_MAX_DSTATE and \
            _mamba_kernel() is not None:
        return 'mamba'
    if u.dtype in _MAMBA_IO_DTYPES and selective_scan_triton.available():
        return 'triton'
    return 'chunked'


def selective_scan_fn(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                      D: Optional[Tensor] = None, z: Optional[Tensor] = None,
                      delta_bias: Optional[Tensor] = None, delta_softplus: bool = False,
                      return_last_state: bool = False) -> ScanResult:
    """Selective scan (shapes in the module docstring); differentiable in every tensor.

    While a graph is exported this is :func:`~.selective_scan_export.selective_scan_export`.
    Otherwise CUDA tensors go to mamba-ssm's kernel when it is installed and supports the
    inputs (float32/float16/bfloat16 ``u``, d_state <= 256), else to the Triton kernels;
    everything else to :func:`selective_scan_chunked` (:func:`scan_backend`). One
    difference: mamba-ssm's kernel ignores gradients that reach the returned last state; the
    chunked and Triton scans back-propagate them.

    Args:
        u (Tensor): (b, d, l) input.
        delta (Tensor): (b, d, l) step sizes (before ``delta_bias`` and softplus).
        A (Tensor): (d, n) state matrix (diagonal per channel), usually negative.
        B (Tensor): (b, n, l), (b, g, n, l) or (d, n) input projection.
        C (Tensor): (b, n, l), (b, g, n, l) or (d, n) output projection.
        D (Tensor, optional): (d,) skip connection.
        z (Tensor, optional): (b, d, l) gate; the output is multiplied by silu(z).
        delta_bias (Tensor, optional): (d,) added to delta.
        delta_softplus (bool): apply softplus to delta + delta_bias.
        return_last_state (bool): also return the state after the last token.

    Returns:
        Tensor | tuple[Tensor, Tensor]: output (b, d, l) in u's dtype, and with
        ``return_last_state`` the final state (b, d, n) in float32 (float64 for float64 u).
    """
    backend = scan_backend(u, A)
    if backend == 'export':
        return selective_scan_export(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                     return_last_state)
    check_args(u, delta, A, B, C, D, z, delta_bias)
    if backend == 'mamba':
        return mamba_kernel_call(_mamba_kernel(), u, delta, A, B, C, D, z, delta_bias,
                                 delta_softplus, return_last_state)
    if backend == 'triton':
        return selective_scan_triton.selective_scan_triton(u, delta, A, B, C, D, z, delta_bias,
                                                           delta_softplus, return_last_state)
    if not return_last_state:
        from . import library  # here: it imports this module
        if library.use_library_ops():  # torch.compile: one custom op, no graph break
            return library.selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return _SelectiveScanChunked.apply(u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus),
                                       bool(return_last_state))

