"""Chunked solver of the linear recurrence x_t = a_t * x_{t-1} + b_t, and of its adjoint.

This is the core of the selective scan's pure-PyTorch path
(:func:`mmseg_segman.ops.selective_scan_chunked`): rows of a 2-D tensor are independent
recurrences along the last dim.

Method. The sequence is cut into chunks of ``chunk`` steps. Inside a chunk, from a zero state,
x_t = P_t * sum_{s<=t} b_s / P_s with P the cumulative product of ``a`` inside the chunk: a
cumulative product, a division and a cumulative sum, each one vectorised pass. Chunks where P
leaves a safe range (or b / P overflows) are solved step by step instead, so any decay keeps
float precision. The states at the chunk ends form a recurrence of length l / chunk, solved
the same way in float64; every chunk then adds its incoming state times P. The adjoint (for
the backward) runs the same plan backwards in time, reusing the forward's chunk products.

In place. The solvers can write their result over their input to save a buffer (on CPU a
fresh multi-megabyte buffer costs page faults that take longer than an arithmetic pass over
it). If the closed form overflows after part of the input is overwritten they raise
:class:`ScanOverflow`; the caller forms the input again and calls once more with a separate
output.
"""
from typing import Iterator, List, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

__all__ = ['SCAN_CHUNK', 'ScanOverflow', 'ForwardScan', 'linear_scan', 'forward_scan',
           'reverse_scan', 'within_chunk_products', 'piece_views']

# Chunk length: short chunks keep the cumulative products cheap (cumprod and cumsum along the
# last dim are latency-bound, and slower on longer chunks; docs/benchmarks.md) and keep a
# chunk's total decay within the float range for all but strong decays; the adjoint's suffix
# sums are a (chunk x chunk) matrix product whose cost grows with it.
SCAN_CHUNK = 16
# A chunk is solved in closed form only if all its cumulative products of decays stay within
# [2**-100, 2**100] (float32) or [2**-900, 2**900] (float64): then P is far from subnormal and
# b / P far from overflow.
PROD_LIMITS = {torch.float32: (2.0**-100, 2.0**100), torch.float64: (2.0**-900, 2.0**900)}
# The recurrence across chunk ends (1/SCAN_CHUNK of the data) runs in float64 with longer
# chunks: its products span many steps and would often leave float32's range, sending rows to
# the slow step-by-step path, while at this size the call overhead, not the arithmetic, counts.
CHUNK_LEVEL_CHUNK = 32


class ScanOverflow(ArithmeticError):
    """The closed form overflowed while the solver wrote over its own input, which is now
    spoiled: form the input again and call the solver with a separate output."""


class ForwardScan(NamedTuple):
    """Result of :func:`forward_scan`."""
    x: Tensor  # (rows, l) states
    # (rows, l) within-chunk products of a; None if the recurrence was one chunk
    prod: Optional[Tensor]
    # per piece of _pieces: (chunks' total products, which chunks went step by step), for
    # reverse_scan; None if the whole recurrence was solved step by step
    chunks: Optional[List[Tuple[Tensor, Tensor]]]


def _pieces(length, chunk):
    """(start, stop, chunks, steps) of the run of full chunks and of the partial last chunk."""
    n_full = length // chunk
    main = n_full * chunk
    pieces = [(0, main, n_full, chunk)] if n_full else []
    if main < length:
        pieces.append((main, length, 1, length - main))
    return pieces


def piece_views(length: int, chunk: int, *tensors: Tensor) -> Iterator[List[Tensor]]:
    """Per piece of _pieces: (rows, n, t) views of each (rows, length) tensor."""
    for start, stop, n, t in _pieces(length, chunk):
        yield [x[:, start:stop].view(x.shape[0], n, t) for x in tensors]


def _scan_steps(a, b, reverse=False):
    """Rows (k, t) solved step by step from a zero state, one vectorised step per t:
    x_t = a_t * x_{t-1} + b_t, or with ``reverse`` x_t = b_t + a_{t+1} * x_{t+1}."""
    a_cols, b_cols = a.t().contiguous(), b.t().contiguous()
    x = torch.empty_like(b_cols)
    last = x.shape[0] - 1
    if reverse:
        x[last] = b_cols[last]
        for t in range(last - 1, -1, -1):
            torch.addcmul(b_cols[t], a_cols[t + 1], x[t + 1], out=x[t])
    else:
        x[0] = b_cols[0]
        for t in range(1, last + 1):
            torch.addcmul(b_cols[t], a_cols[t], x[t - 1], out=x[t])
    return x.t()


def _writes_over(out, t):
    return out is not None and out.data_ptr() == t.data_ptr()


def forward_scan(a: Tensor, b: Tensor, chunk: int, decaying: bool, out: Optional[Tensor] = None,
                 prod: Optional[Tensor] = None) -> ForwardScan:
    """:func:`linear_scan` into optional buffers, keeping what :func:`reverse_scan` needs.

    Args:
        a, b (Tensor): (rows, l) decays (>= 0) and inputs.
        chunk (int): Chunk length.
        decaying (bool): Promise that all a <= 1 (skips one reduction).
        out (Tensor, optional): (rows, l) buffer for x; may be ``b`` itself.
        prod (Tensor, optional): (rows, l) buffer for the within-chunk products of ``a``; may be
            ``a`` itself if no chunk will be solved step by step (which needs the decays).

    Raises:
        ScanOverflow: ``out`` is ``b`` and |b| / P overflowed, after ``b`` was overwritten.
    """
    rows, length = b.shape
    if length <= chunk:  # a single chunk: step by step
        x = _scan_steps(a, b)
        return ForwardScan(x.contiguous() if out is None else out.copy_(x), prod, None)
    in_place = _writes_over(out, b)
    prod_over_a = _writes_over(prod, a)
    prod_min, prod_max = PROD_LIMITS[b.dtype]
    x = torch.empty((rows, length), dtype=b.dtype, device=b.device) if out is None else out
    if prod is None:
        prod = torch.empty((rows, length), dtype=b.dtype, device=b.device)
    ends, chunks, pending = [], [], []
    for a3, b3, x3, p3 in piece_views(length, chunk, a, b, x, prod):
        # each chunk from a zero state: x_t = P_t * sum_{s<=t} b_s / P_s
        torch.cumprod(a3, -1, out=p3)
        p_end = p3[..., -1].contiguous()
        if decaying:  # all a <= 1: the products fall, so the last one bounds the chunk
            bad = ~(p_end >= prod_min)
        else:
            lo, hi = p3.aminmax(dim=-1)
            bad = ~((lo >= prod_min) & (hi <= prod_max))
        local = None
        if bad.any():
            if prod_over_a:
                raise RuntimeError('linear scan: a chunk left the closed form\'s range although '
                                   'the caller promised it could not (internal error)')
            local = _scan_steps(a3[bad], b3[bad])  # taken before x (maybe b) is overwritten
            # Products below the limit only scale contributions far below the float
            # resolution; zero them so that no later pass computes with (very slow) subnormals.
            p3.masked_fill_(p3 < prod_min, 0.0)
        torch.div(b3, p3, out=x3)
        x3.cumsum_(-1)
        end = x3[..., -1] * p_end
        overflow = ~torch.isfinite(end) & ~bad  # |b| so large that b / P overflowed
        if overflow.any():
            if in_place:
                raise ScanOverflow('b / P overflowed while x was written over b')
            bad |= overflow
            local = _scan_steps(a3[bad], b3[bad])
        if local is not None:
            end[bad] = local[:, -1]
        ends.append(end)
        chunks.append((p_end, bad))
        pending.append((x3, p3, bad, local))
    # state entering each chunk: the chunk ends form a recurrence of length l / chunk
    end = torch.cat(ends, 1)
    incoming = torch.zeros_like(end)
    if end.shape[1] > 1:
        p_end = torch.cat([p for p, _ in chunks], 1)
        incoming[:, 1:] = _chunk_level_scan(p_end[:, :-1], end[:, :-1], decaying)
    col = 0
    for x3, p3, bad, local in pending:
        inc = incoming[:, col:col + x3.shape[1]]
        col += x3.shape[1]
        x3.add_(inc[..., None]).mul_(p3)  # x_t = P_t * (state in + sum_{s<=t} b_s / P_s)
        if local is not None:
            x3[bad] = torch.addcmul(local, p3[bad], inc[bad][:, None])
    return ForwardScan(x, prod, chunks)


def _chunk_level_scan(a, b, decaying):
    """linear_scan of the chunk-end recurrence, in float64 (see ``CHUNK_LEVEL_CHUNK``)."""
    return forward_scan(a.double(), b.double(), CHUNK_LEVEL_CHUNK, decaying).x.to(b.dtype)


def linear_scan(a: Tensor, b: Tensor, chunk: Optional[int] = None,
                decaying: bool = False) -> Tensor:
    """Solve x_t = a_t * x_{t-1} + b_t (x_{-1} = 0) along the last dim of 2-D tensors.

    See the module docstring for the method; a recurrence of at most one chunk is solved step
    by step.

    Args:
        a (Tensor): (rows, l) coefficients >= 0 (decays exp(dt * A)).
        b (Tensor): (rows, l) inputs; may be a strided view with unit last stride.
        chunk (int, optional): chunk length; defaults to ``SCAN_CHUNK``.
        decaying (bool): promise that all a <= 1 (skips one reduction).

    Returns:
        Tensor: (rows, l) states x, contiguous.
    """
    return forward_scan(a, b, SCAN_CHUNK if chunk is None else chunk, decaying).x


def within_chunk_products(a: Tensor, chunks: Optional[List[Tuple[Tensor, Tensor]]], chunk: int,
                          out: Tensor) -> Tensor:
    """The within-chunk products of ``a`` as :func:`forward_scan` left them in its ``prod``
    (recomputed by the backward instead of being kept), written into ``out`` (rows, l)."""
    if chunks is None:
        return out
    for (a3, p3), (_, bad) in zip(piece_views(a.shape[1], chunk, a, out), chunks):
        torch.cumprod(a3, -1, out=p3)
        if bad.any():  # as in the forward: no subnormals
            p3.masked_fill_(p3 < PROD_LIMITS[p3.dtype][0], 0.0)
    return out


def reverse_scan(a: Tensor, prod: Tensor, chunks: Optional[List[Tuple[Tensor, Tensor]]],
                 g: Tensor, chunk: int, decaying: bool,
                 out: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """The adjoint of the linear scan: lam_t = g_t + a_{t+1} * lam_{t+1} (lam past the end = 0).

    ``prod`` are the within-chunk products of ``a`` (:func:`within_chunk_products`) and
    ``chunks`` comes from the :func:`forward_scan` call (same ``chunk``).
    Inside a chunk lam_t = (S_t + P_end * R_next) / P_t, where S_t = sum_{s>=t} P_s g_s (suffix
    sums as one matrix product with a triangular matrix of ones: no flip) and R_next is
    a * lam at the start of the next chunk. R satisfies the chunk-level recurrence
    R_c = P_end,c * R_{c+1} + S_0,c, solved by the forward solver over the reversed chunk
    sequence. Chunks that the forward solved step by step are solved step by step here too.

    Args:
        out (Tensor, optional): buffer for g * P; may be ``g`` itself.

    Returns:
        tuple: lam (rows, l), and a (rows, l) buffer that is free again.

    Raises:
        ScanOverflow: ``out`` is ``g`` and g * P overflowed, after ``g`` was overwritten.
    """
    rows, length = g.shape
    if chunks is None:  # solved step by step in the forward: likewise
        lam = _scan_steps(a, g, reverse=True).contiguous()
        return lam, (out if out is not None else torch.empty_like(lam))
    in_place = _writes_over(out, g)
    w = torch.empty((rows, length), dtype=g.dtype, device=g.device) if out is None else out
    lam = torch.empty((rows, length), dtype=g.dtype, device=g.device)
    starts, pending = [], []
    for (a3, p3, g3, w3, l3), (p_end, bad) in zip(
            piece_views(length, chunk, a, prod, g, w, lam), chunks):
        local = _scan_steps(a3[bad], g3[bad], reverse=True) if bad.any() else None
        torch.mul(g3, p3, out=w3)
        suffix = torch.ones(l3.shape[-1], l3.shape[-1], dtype=g.dtype, device=g.device).tril_()
        if l3.is_contiguous():
            torch.matmul(w3, suffix, out=l3)
        else:  # partial last chunk
            l3.copy_(torch.matmul(w3, suffix))
        start = l3[..., 0].contiguous()  # S_0 = a_0 * lam_0 of the chunk on its own
        overflow = ~torch.isfinite(start) & ~bad  # |g| so large that g * P overflowed
        if overflow.any():
            if in_place:
                raise ScanOverflow('g * P overflowed while it was written over g')
            bad = bad | overflow
            local = _scan_steps(a3[bad], g3[bad], reverse=True)
        if local is not None:
            start[bad] = a3[bad][:, 0] * local[:, 0]
        starts.append(start)
        pending.append((a3, p3, l3, bad, local))
    start = torch.cat(starts, 1)
    nxt = torch.zeros_like(start)  # R_{c+1}: a * lam at the start of the next chunk
    p_end = torch.cat([p for p, _ in chunks], 1)
    if start.shape[1] > 1:
        nxt[:, :-1] = _chunk_level_scan(p_end[:, 1:].flip(1), start[:, 1:].flip(1),
                                        decaying).flip(1)
    incoming = p_end.mul_(nxt)
    col = 0
    for a3, p3, l3, bad, local in pending:
        n = l3.shape[1]
        inc, nxt_piece = incoming[:, col:col + n], nxt[:, col:col + n]
        col += n
        l3.add_(inc[..., None]).div_(p3)
        if local is not None:
            # prod_{t<r<end} a_r, directly for the chunks solved step by step
            a_bad = a3[bad]
            after = torch.ones_like(a_bad)
            after[:, :-1] = a_bad[:, 1:].flip(1).cumprod(1).flip(1)
            l3[bad] = torch.addcmul(local, after, nxt_piece[bad][:, None])
    return lam, w
