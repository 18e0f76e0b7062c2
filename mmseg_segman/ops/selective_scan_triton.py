"""Selective scan on Triton kernels (CUDA without mamba-ssm; CPU tensors under the interpreter).

Triton ships with CUDA builds of PyTorch, so this path needs nothing compiled ahead of time.
Its interpreter (``TRITON_INTERPRET=1`` set before Triton is imported) runs the same kernels on
CPU tensors, which is how the tests check them on a machine without a GPU.

Split of the work. The kernels compute the core recurrence (layout in :mod:`.selective_scan`)::

    x_t = exp(dt_t * A) * x_{t-1} + dt_t * B_t * u_t,   y_t = <x_t, C_t>

and its backward; the step sizes dt (softplus, delta_bias), the skip ``D * u`` and the gate
``silu(z)`` are elementwise and stay in PyTorch autograd around it.

Kernels. One program owns ``BLOCK_D`` channels of one batch item, all their states at once
(rows = (channel, state) pairs), and walks the sequence in chunks of ``CHUNK`` tokens: inside a
chunk the recurrence is a parallel prefix scan (``tl.associative_scan`` with the operator
(a1, b1) o (a2, b2) = (a1 a2, a2 b1 + b2)), and the state is carried from chunk to chunk in
registers. Everything is float32, there is no division by decay products (so no range limit on
the decay, unlike the chunked PyTorch path) and no float64. The forward saves the state at the
start of every chunk ((b, d, n, l / CHUNK) floats); the backward walks the chunks in reverse,
recomputes each chunk's states from its saved start, and solves the adjoint recurrence
``lam_t = g_t C_t + a_{t+1} lam_{t+1}`` with a reverse prefix scan. The per-channel gradients
of B and C ((b, d, n, l)) are reduced to B's and C's shapes in PyTorch.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .selective_scan_common import ScanResult, check_args

__all__ = ['available', 'supports', 'selective_scan_triton', 'CHUNK', 'BLOCK_D']

_IO_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# Tokens per prefix scan and channels per program. A tile is BLOCK_D * n_pad x CHUNK floats.
CHUNK = 64
BLOCK_D = 16

try:
    import triton
    import triton.language as tl
except ImportError:  # no Triton: available() is False and nothing below is defined
    triton = None


def _interpreting() -> bool:
    import os
    return os.environ.get('TRITON_INTERPRET') == '1'


def available() -> bool:
    """Whether Triton imports and can run kernels here (a CUDA driver, or the interpreter)."""
    if triton is None:
        return False
    if _interpreting():
        return True
    try:
        from torch.utils._triton import has_triton
    except ImportError:
        return False
    return has_triton()


def supports(u: Tensor) -> bool:
    """Whether :func:`selective_scan_triton` runs on ``u``'s device and dtype: a CUDA tensor
    (any device under the interpreter) in float32, float16 or bfloat16."""
    return ((u.is_cuda or _interpreting()) and u.dtype in _IO_DTYPES and available())


if triton is not None:

    @triton.jit
    def _combine(a1, b1, a2, b2):
        return a1 * a2, a2 * b1 + b2

    @triton.jit
    def _last_col(x, cols, CHUNK: tl.constexpr):
        return tl.sum(tl.where(cols[None, :] == CHUNK - 1, x, 0.0), axis=1)

    @triton.jit
    def _scan_fwd_kernel(U, DT, A, B, C, Y, XS, XLAST, L, D, N, n_chunks,
                         sBb, sBg, sBn, sBl, dpgB, sCb, sCg, sCn, sCl, dpgC,
                         SAVE: tl.constexpr, BLOCK_D: tl.constexpr, N_P2: tl.constexpr,
                         CHUNK: tl.constexpr):
        pid_b = tl.program_id(0)
        pid_d = tl.program_id(1)
        rows = tl.arange(0, BLOCK_D * N_P2)
        ch = pid_d * BLOCK_D + rows // N_P2
        st = rows % N_P2
        row_ok = (ch < D) & (st < N)
        a_row = tl.load(A + ch * N + st, mask=row_ok, other=0.0).to(tl.float32)
        cols = tl.arange(0, CHUNK)
        out_ch = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
        b_row = pid_b * sBb + (ch // dpgB) * sBg + st * sBn
        c_row = pid_b * sCb + (ch // dpgC) * sCg + st * sCn
        state = tl.zeros([BLOCK_D * N_P2], dtype=tl.float32)
        for ci in range(n_chunks):
            t = ci * CHUNK + cols
            m = row_ok[:, None] & (t < L)[None, :]
            io = pid_b * D * L + ch[:, None] * L + t[None, :]
            dt = tl.load(DT + io, mask=m, other=0.0).to(tl.float32)
            u = tl.load(U + io, mask=m, other=0.0).to(tl.float32)
            bv = tl.load(B + b_row[:, None] + t[None, :] * sBl, mask=m, other=0.0).to(tl.float32)
            cv = tl.load(C + c_row[:, None] + t[None, :] * sCl, mask=m, other=0.0).to(tl.float32)
            if SAVE:
                tl.store(XS + ((pid_b * D + ch) * N + st) * n_chunks + ci, state, mask=row_ok)
            a = tl.exp(dt * a_row[:, None])  # 1 where masked: identity steps
            prod, local = tl.associative_scan((a, dt * bv * u), 1, _combine)
            x = prod * state[:, None] + local
            y = tl.sum(tl.reshape(x * cv, [BLOCK_D, N_P2, CHUNK]), axis=1)
            y_mask = (out_ch < D)[:, None] & (t < L)[None, :]
            tl.store(Y + pid_b * D * L + out_ch[:, None] * L + t[None, :], y, mask=y_mask)
            state = _last_col(x, cols, CHUNK)
        tl.store(XLAST + (pid_b * D + ch) * N + st, state, mask=row_ok)

    @triton.jit
    def _scan_bwd_kernel(U, DT, A, B, C, XS, G, DLAST, DU, DDT, DA, DB, DC, L, D, N, n_chunks,
                         sBb, sBg, sBn, sBl, dpgB, sCb, sCg, sCn, sCl, dpgC,
                         HAS_DLAST: tl.constexpr, BLOCK_D: tl.constexpr, N_P2: tl.constexpr,
                         CHUNK: tl.constexpr):
        pid_b = tl.program_id(0)
        pid_d = tl.program_id(1)
        rows = tl.arange(0, BLOCK_D * N_P2)
        ch = pid_d * BLOCK_D + rows // N_P2
        st = rows % N_P2
        row_ok = (ch < D) & (st < N)
        a_row = tl.load(A + ch * N + st, mask=row_ok, other=0.0).to(tl.float32)
        cols = tl.arange(0, CHUNK)
        out_ch = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
        b_row = pid_b * sBb + (ch // dpgB) * sBg + st * sBn
        c_row = pid_b * sCb + (ch // dpgC) * sCg + st * sCn
        state_row = (pid_b * D + ch) * N + st
        dlast = tl.zeros([BLOCK_D * N_P2], dtype=tl.float32)
        if HAS_DLAST:
            dlast = tl.load(DLAST + state_row, mask=row_ok, other=0.0).to(tl.float32)
        lam_next = tl.zeros([BLOCK_D * N_P2], dtype=tl.float32)  # lam at the next chunk's start
        da_acc = tl.zeros([BLOCK_D * N_P2], dtype=tl.float32)
        for i in range(n_chunks):
            ci = n_chunks - 1 - i
            t = ci * CHUNK + cols
            m = row_ok[:, None] & (t < L)[None, :]
            io = pid_b * D * L + ch[:, None] * L + t[None, :]
            dt = tl.load(DT + io, mask=m, other=0.0).to(tl.float32)
            u = tl.load(U + io, mask=m, other=0.0).to(tl.float32)
            bv = tl.load(B + b_row[:, None] + t[None, :] * sBl, mask=m, other=0.0).to(tl.float32)
            cv = tl.load(C + c_row[:, None] + t[None, :] * sCl, mask=m, other=0.0).to(tl.float32)
            g = tl.load(G + io, mask=m, other=0.0).to(tl.float32)
            a = tl.exp(dt * a_row[:, None])
            # States before each step, x_{t-1}: the scan of the chunk's steps shifted by one
            # (an identity step first), started from the saved chunk-start state.
            mp = m & (cols >= 1)[None, :]
            dtp = tl.load(DT + io - 1, mask=mp, other=0.0).to(tl.float32)
            up = tl.load(U + io - 1, mask=mp, other=0.0).to(tl.float32)
            bp = tl.load(B + b_row[:, None] + (t[None, :] - 1) * sBl, mask=mp,
                         other=0.0).to(tl.float32)
            prod_p, local_p = tl.associative_scan((tl.exp(dtp * a_row[:, None]), dtp * bp * up),
                                                  1, _combine)
            state0 = tl.load(XS + state_row * n_chunks + ci, mask=row_ok, other=0.0)
            x_prev = prod_p * state0[:, None] + local_p
            dtu = dt * u
            x = a * x_prev + dtu * bv
            # Adjoint: lam_t = g_t C_t + a_{t+1} lam_{t+1}, a reverse scan with a_{t+1}.
            mn = row_ok[:, None] & (t + 1 < L)[None, :]
            dtn = tl.load(DT + io + 1, mask=mn, other=0.0).to(tl.float32)
            a_next = tl.where(mn, tl.exp(dtn * a_row[:, None]), 0.0)
            gc = g * cv
            if HAS_DLAST:
                gc += tl.where((t == L - 1)[None, :], dlast[:, None], 0.0)
            prod_n, local_n = tl.associative_scan((a_next, gc), 1, _combine, reverse=True)
            lam = local_n + prod_n * lam_next[:, None]
            lam_next = tl.sum(tl.where(cols[None, :] == 0, lam, 0.0), axis=1)
            full = state_row[:, None] * L + t[None, :]
            tl.store(DC + full, g * x, mask=m)
            tl.store(DB + full, lam * dtu, mask=m)
            w = lam * a * x_prev  # gradient of log a_t = dt_t * A
            da_acc += tl.sum(w * dt, axis=1)
            lam_b = tl.sum(tl.reshape(lam * bv, [BLOCK_D, N_P2, CHUNK]), axis=1)
            w_a = tl.sum(tl.reshape(w * a_row[:, None], [BLOCK_D, N_P2, CHUNK]), axis=1)
            dt_c = tl.sum(tl.reshape(tl.where(st[:, None] == 0, dt, 0.0),
                                     [BLOCK_D, N_P2, CHUNK]), axis=1)
            u_c = tl.sum(tl.reshape(tl.where(st[:, None] == 0, u, 0.0),
                                    [BLOCK_D, N_P2, CHUNK]), axis=1)
            y_mask = (out_ch < D)[:, None] & (t < L)[None, :]
            out_io = pid_b * D * L + out_ch[:, None] * L + t[None, :]
            tl.store(DU + out_io, dt_c * lam_b, mask=y_mask)
            tl.store(DDT + out_io, u_c * lam_b + w_a, mask=y_mask)
        tl.store(DA + state_row, da_acc, mask=row_ok)


def _bc_layout(t: Tensor, d: int):
    """(stride_b, stride_g, stride_n, stride_l, channels per group) of B or C such that the
    kernels read entry (batch, channel c, state, token) at
    ``b * s_b + (c // per_group) * s_g + n * s_n + l * s_l``."""
    if t.dim() == 2:  # constant (d, n)
        return 0, t.stride(0), t.stride(1), 0, 1
    if t.dim() == 3:  # (b, n, l): one group
        return t.stride(0), 0, t.stride(1), t.stride(2), d
    return t.stride(0), t.stride(1), t.stride(2), t.stride(3), d // t.shape[1]


def _reduce_bc(full: Tensor, like: Tensor) -> Tensor:
    """Per-channel gradient (b, d, n, l) -> the shape of B or C (``like``)."""
    bsz, d, n, length = full.shape
    if like.dim() == 2:
        return full.sum((0, 3))
    if like.dim() == 3:
        return full.sum(1)
    groups = like.shape[1]
    return full.view(bsz, groups, d // groups, n, length).sum(2)


def _grid(bsz, d):
    return (bsz, triton.cdiv(d, BLOCK_D))


class _ScanCore(torch.autograd.Function):
    """y = <x, C> with x_t = exp(dt_t A) x_{t-1} + dt_t B_t u_t, on the Triton kernels.

    Returns y (b, d, l) and the last state (b, d, n), both float32.
    """

    @staticmethod
    def forward(ctx, u, dt, A, B, C):
        bsz, d, length = u.shape
        n = A.shape[1]
        u, dt = u.contiguous(), dt.contiguous()
        A32 = A.float().contiguous()
        n_chunks = triton.cdiv(length, CHUNK)
        y = torch.empty((bsz, d, length), dtype=torch.float32, device=u.device)
        last = torch.empty((bsz, d, n), dtype=torch.float32, device=u.device)
        save = any(ctx.needs_input_grad)
        starts = torch.empty((bsz, d, n, n_chunks) if save else (1, ), dtype=torch.float32,
                             device=u.device)
        _scan_fwd_kernel[_grid(bsz, d)](u, dt, A32, B, C, y, starts, last, length, d, n,
                                        n_chunks, *_bc_layout(B, d), *_bc_layout(C, d),
                                        SAVE=save, BLOCK_D=BLOCK_D,
                                        N_P2=triton.next_power_of_2(n), CHUNK=CHUNK)
        if save:
            ctx.save_for_backward(u, dt, A32, B, C, starts)
            ctx.dtypes = (u.dtype, dt.dtype, A.dtype, B.dtype, C.dtype)
        return y, last

    @staticmethod
    def backward(ctx, grad_y, grad_last):
        u, dt, A32, B, C, starts = ctx.saved_tensors
        bsz, d, length = u.shape
        n = A32.shape[1]
        grad_y = (torch.zeros_like(u, dtype=torch.float32) if grad_y is None else
                  grad_y.float().contiguous())
        has_dlast = grad_last is not None
        dlast = grad_last.float().contiguous() if has_dlast else grad_y
        f32 = dict(dtype=torch.float32, device=u.device)
        du, ddt = torch.empty((bsz, d, length), **f32), torch.empty((bsz, d, length), **f32)
        da = torch.empty((bsz, d, n), **f32)
        db_full = torch.empty((bsz, d, n, length), **f32)
        dc_full = torch.empty((bsz, d, n, length), **f32)
        _scan_bwd_kernel[_grid(bsz, d)](u, dt, A32, B, C, starts, grad_y, dlast, du, ddt, da,
                                        db_full, dc_full, length, d, n, starts.shape[-1],
                                        *_bc_layout(B, d), *_bc_layout(C, d),
                                        HAS_DLAST=has_dlast, BLOCK_D=BLOCK_D,
                                        N_P2=triton.next_power_of_2(n), CHUNK=CHUNK)
        u_dt, dt_dt, a_dt, b_dt, c_dt = ctx.dtypes
        return (du.to(u_dt), ddt.to(dt_dt), da.sum(0).to(a_dt),
                _reduce_bc(db_full, B).to(b_dt), _reduce_bc(dc_full, C).to(c_dt))


def selective_scan_triton(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                          D: Optional[Tensor] = None, z: Optional[Tensor] = None,
                          delta_bias: Optional[Tensor] = None, delta_softplus: bool = False,
                          return_last_state: bool = False) -> ScanResult:
    """Selective scan on the Triton kernels; arguments and results as
    :func:`mmseg_segman.ops.selective_scan_fn` (float32 inside, output in u's dtype).

    Raises:
        RuntimeError: Triton is not available (see :func:`available`).
    """
    if not available():
        raise RuntimeError('selective_scan_triton needs Triton with a CUDA device (or '
                           'TRITON_INTERPRET=1 set before importing Triton, for CPU tensors); '
                           'use selective_scan_fn, which falls back to the chunked scan')
    check_args(u, delta, A, B, C, D, z, delta_bias)
    dt = delta.float()
    if delta_bias is not None:
        dt = dt + delta_bias.float()[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    y, last = _ScanCore.apply(u, dt, A, B, C)
    if D is not None:
        y = y + u.float() * D.float()[:, None]
    if z is not None:
        y = y * F.silu(z.float())
    out = y.to(u.dtype)
    return (out, last) if return_last_state else out
