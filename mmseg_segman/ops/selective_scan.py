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

Three implementations share this module:

- :func:`selective_scan_ref`: one Python step per token. Obviously right, slow; for tests.
- :func:`selective_scan_chunked`: pure PyTorch, forward and hand-written backward. The linear
  recurrence is solved in chunks with cumulative products (see :func:`linear_scan`), its
  adjoint in the backward likewise; chunks whose decay leaves the float range are solved step
  by step, so any decay keeps float precision.
- mamba-ssm's CUDA kernel, which :func:`selective_scan_fn` calls for CUDA tensors when
  ``mamba_ssm`` is installed (through :func:`mamba_kernel_call`).

All of them compute in float32 (float64 for float64 ``u``) and return ``u``'s dtype.
"""
import math
import warnings

import torch
import torch.nn.functional as F

__all__ = [
    'selective_scan_fn', 'selective_scan_chunked', 'selective_scan_ref', 'linear_scan',
    'mamba_kernel_call'
]

# Chunk length of the scans: short chunks make the cumulative products cheap (cumprod/cumsum
# along the last dim are latency-bound: 1.2-1.3 ms per 8 MiB at 16 steps, 1.8-1.9 ms at 64, on
# one Zen 3 core) and keep the decay over a chunk within the float range for all but strong
# decays; the suffix sums of the backward are a matrix product whose cost grows with it.
SCAN_CHUNK = 16
# A chunk is solved in closed form only if all its cumulative products of decays stay within
# [2**-100, 2**100] (float32) or [2**-900, 2**900] (float64): then P is far from subnormal and
# b / P far from overflow.
_PROD_LIMITS = {torch.float32: (2.0**-100, 2.0**100), torch.float64: (2.0**-900, 2.0**900)}
# The recurrence across chunk ends (1/SCAN_CHUNK of the data) runs in float64 with longer
# chunks: its products span many steps and would often leave float32's range, sending rows to
# the slow step-by-step path, while at this size the call overhead, not the arithmetic, counts.
CHUNK_LEVEL_CHUNK = 32
# The no-grad forward puts the decays' products over the decays when a chunk's total decay is
# provably at most 2**-90 (> the 2**-100 limit): then no chunk needs the decays again.
_IN_PLACE_DECAY_BITS = 90.0
# exp(x) == exp2(x * log2(e)); exp2 is about twice as fast as exp on CPU.
_LOG2E = 1.0 / math.log(2.0)
# softplus(s) == s to float32 precision above this (same threshold as F.softplus).
_SOFTPLUS_LINEAR = 20.0
# mamba-ssm's CUDA kernel: supported input dtypes and largest d_state.
_MAMBA_IO_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_MAMBA_MAX_DSTATE = 256


def _check_args(u, delta, A, B, C, D, z, delta_bias):
    """Validate shapes against the layout in the module docstring; return (b, d, l, n)."""
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


def _compute_dtype(u):
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def _bc_view(t):
    """B or C as a 5-D view that broadcasts against (b, g, d // g, n, l); returns (view, g)."""
    if t.dim() == 2:  # constant (d, n)
        return t[None, None, :, :, None], 1
    if t.dim() == 3:  # (b, n, l): one group
        return t[:, None, None], 1
    return t.unsqueeze(2), t.shape[1]


def _grouped(x, g):
    """(b, d, ...) -> (b, g, d // g, ...) view."""
    return x.view(x.shape[0], g, x.shape[1] // g, *x.shape[2:])


# --------------------------------------------------------------------------------------------
# Sequential reference
# --------------------------------------------------------------------------------------------


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                       delta_softplus=False, return_last_state=False):
    """Sequential reference, one step per token (O(l) Python steps). For tests only.

    Same arguments and results as :func:`selective_scan_fn`; differentiable through autograd.
    """
    _, d, length, _ = _check_args(u, delta, A, B, C, D, z, delta_bias)
    dtype_in, ct = u.dtype, _compute_dtype(u)
    delta = delta.to(ct)
    if delta_bias is not None:
        delta = delta + delta_bias.to(ct)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    u = u.to(ct)
    Bv, gB = _bc_view(B.to(ct))
    Cv, gC = _bc_view(C.to(ct))
    decay = torch.exp(delta.unsqueeze(2) * A.to(ct)[:, :, None])  # (b, d, n, l)
    inp = (_grouped((delta * u).unsqueeze(2), gB) * Bv).flatten(1, 2)  # (b, d, n, l)
    Cx = Cv.expand(_grouped(inp, gC).shape).reshape(inp.shape)  # (b, d, n, l)
    x = inp.new_zeros(inp.shape[:3])
    ys = []
    for t in range(length):
        x = decay[..., t] * x + inp[..., t]
        ys.append((x * Cx[..., t]).sum(-1))
    out = torch.stack(ys, dim=-1)
    if D is not None:
        out = out + u * D.to(ct)[:, None]
    if z is not None:
        out = out * F.silu(z.to(ct))
    out = out.to(dtype_in)
    return (out, x) if return_last_state else out


# --------------------------------------------------------------------------------------------
# Chunked linear recurrence
# --------------------------------------------------------------------------------------------


def _pieces(length, chunk):
    """(start, stop, chunks, steps) of the run of full chunks and of the partial last chunk."""
    n_full = length // chunk
    main = n_full * chunk
    pieces = [(0, main, n_full, chunk)] if n_full else []
    if main < length:
        pieces.append((main, length, 1, length - main))
    return pieces


def _piece_views(length, chunk, *tensors):
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


def _linear_scan(a, b, chunk, decaying, out=None, prod=None):
    """linear_scan into optional buffers: ``out`` for x (may be ``b`` itself), ``prod`` for the
    cumulative products of ``a`` inside each chunk.

    Returns:
        tuple | None: (x, prod, chunks), where ``chunks`` holds per piece of :func:`_pieces`
        the chunks' total products and which chunks were solved step by step, for
        :func:`_reverse_linear_scan` (None if the whole recurrence was solved step by step,
        and then ``prod`` is unset). None if ``out`` is ``b`` and |b| / P overflowed: b is
        then spoiled and the caller must start again with a separate ``out``.
    """
    rows, length = b.shape
    if length <= chunk:  # a single chunk: step by step
        x = _scan_steps(a, b)
        return (x.contiguous() if out is None else out.copy_(x)), prod, None
    in_place = out is b
    # products over the decays themselves: no chunk may need them for step-by-step solving
    prod_over_a = prod is not None and prod.data_ptr() == a.data_ptr()
    prod_min, prod_max = _PROD_LIMITS[b.dtype]
    x = torch.empty((rows, length), dtype=b.dtype, device=b.device) if out is None else out
    if prod is None:
        prod = torch.empty((rows, length), dtype=b.dtype, device=b.device)
    ends, chunks, pending = [], [], []
    for a3, b3, x3, p3 in _piece_views(length, chunk, a, b, x, prod):
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
                raise RuntimeError('selective scan: a chunk left the closed form\'s range although '
                                   'its decay bound said it could not (internal error)')
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
                return None
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
    return x, prod, chunks


def _chunk_level_scan(a, b, decaying):
    """linear_scan of the chunk-end recurrence, in float64 (see ``CHUNK_LEVEL_CHUNK``)."""
    return _linear_scan(a.double(), b.double(), CHUNK_LEVEL_CHUNK, decaying)[0].to(b.dtype)


def linear_scan(a, b, chunk=None, decaying=False):
    """Solve x_t = a_t * x_{t-1} + b_t (x_{-1} = 0) along the last dim of 2-D tensors.

    Each chunk of ``chunk`` steps is first solved from a zero state in closed form,
    x_t = P_t * sum_{s<=t} b_s / P_s with P the cumulative product of ``a`` inside the chunk;
    chunks where P leaves [2**-100, 2**100] (or b / P overflows) are solved step by step
    instead, so any decay keeps float precision. The states at chunk ends then form a
    recurrence of length l / chunk, solved by the same function, and every chunk adds its
    incoming state times P. A recurrence of at most one chunk is solved step by step.

    Args:
        a (Tensor): (rows, l) coefficients >= 0 (decays exp(dt * A)).
        b (Tensor): (rows, l) inputs; may be a strided view with unit last stride.
        chunk (int, optional): chunk length; defaults to the module's ``SCAN_CHUNK``.
        decaying (bool): promise that all a <= 1 (skips one reduction).

    Returns:
        Tensor: (rows, l) states x, contiguous.
    """
    return _linear_scan(a, b, SCAN_CHUNK if chunk is None else chunk, decaying)[0]


def _reverse_linear_scan(a, prod, chunks, g, chunk, decaying, out=None):
    """The adjoint of linear_scan: lam_t = g_t + a_{t+1} * lam_{t+1} (lam past the end = 0).

    ``prod`` are the within-chunk products of ``a`` as :func:`_linear_scan` forms them (the
    backward recomputes them) and ``chunks`` comes from that call (same ``chunk``).
    Inside a chunk lam_t = (S_t + P_end * R_next) / P_t, where S_t = sum_{s>=t} P_s g_s (suffix
    sums as one matrix product with a triangular matrix of ones: no flip) and R_next is
    a * lam at the start of the next chunk. R satisfies the chunk-level recurrence
    R_c = P_end,c * R_{c+1} + S_0,c, solved by linear_scan over the reversed chunk sequence.
    Chunks that linear_scan solved step by step are solved step by step here too.

    Args:
        out (Tensor, optional): buffer for g * P; may be ``g`` itself.

    Returns:
        tuple | None: lam (rows, l), and a (rows, l) buffer that is free again. None if
        ``out`` is ``g`` and g * P overflowed (the caller must start again).
    """
    rows, length = g.shape
    if chunks is None:  # solved step by step in the forward: likewise
        lam = _scan_steps(a, g, reverse=True).contiguous()
        return lam, (out if out is not None else torch.empty_like(lam))
    in_place = out is g
    w = torch.empty((rows, length), dtype=g.dtype, device=g.device) if out is None else out
    lam = torch.empty((rows, length), dtype=g.dtype, device=g.device)
    starts, pending = [], []
    for (a3, p3, g3, w3, l3), (p_end, bad) in zip(
            _piece_views(length, chunk, a, prod, g, w, lam), chunks):
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
                return None
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


# --------------------------------------------------------------------------------------------
# Pure-PyTorch selective scan with a hand-written backward
# --------------------------------------------------------------------------------------------


def _softplus_exp2(s2):
    """softplus(s) from ``s2`` = s * log2(e), in place: log1p(exp2(s2)) from vectorised exp2
    and log1p (several times faster than F.softplus on CPU), linear above s = 20 like
    F.softplus. Returns it and max(s2) (-inf if empty)."""
    limit = _SOFTPLUS_LINEAR * _LOG2E
    top = s2.max().item() if s2.numel() else -math.inf
    if top <= limit:
        return s2.exp2_().log1p_(), top
    # log1p(exp(min(s, 20))) + max(s - 20, 0)
    excess = (s2 - limit).clamp_min_(0).div_(_LOG2E)
    return s2.clamp_max_(limit).exp2_().log1p_().add_(excess), top


def _softplus_float(s):
    """softplus of a Python float (inf and nan pass through)."""
    return s if s > _SOFTPLUS_LINEAR or math.isnan(s) else math.log1p(math.exp(s))


def _chunk_decay_bound(s2_max, A):
    """Upper bound, in bits, of any chunk's total decay SCAN_CHUNK * max(dt) * max|A| * log2(e),
    from the largest softplus argument times log2(e) (as :func:`_softplus_exp2` returns it)."""
    a_max = float(A.abs().max()) if A.numel() else 0.0
    return SCAN_CHUNK * _softplus_float(s2_max / _LOG2E) * a_max * _LOG2E


def _reduce_to(t, shape):
    """Sum a broadcast product back to an operand's ``shape``; always a new tensor."""
    dims = [i for i, (m, k) in enumerate(zip(shape, t.shape)) if m == 1 and k != 1]
    return t.sum(dims, keepdim=True) if dims else t.clone()


def _new(shape, like):
    return torch.empty(shape, dtype=like.dtype, device=like.device)


def _as(buffer, shape):
    """A tensor of ``shape`` on the (at least as large) contiguous ``buffer``'s storage."""
    return buffer.view(-1)[:math.prod(shape)].view(shape)


class _SelectiveScanChunked(torch.autograd.Function):
    """Forward with linear_scan, backward with its adjoint _reverse_linear_scan.

    Saves dt (b, d, l), the decays a = exp(dt * A) and the states x ((b, d, n, l) each) for the
    backward, which recomputes the within-chunk products of a and the softplus derivative.
    Large temporaries are reused in place where possible: on CPU a fresh multi-megabyte buffer
    costs page faults that take longer than an arithmetic pass over it.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state):
        ct = _compute_dtype(u)
        bsz, d, length = u.shape
        n = A.shape[1]
        uc = u.to(ct)
        Ac = A.to(ct)
        training = any(ctx.needs_input_grad[:8])

        def step_sizes(out):  # dt into a private contiguous buffer; and max(s2) (softplus)
            scale = _LOG2E if delta_softplus else 1.0  # exp2 inside softplus wants s * log2(e)
            if delta_bias is not None:
                torch.add(delta_bias.to(ct)[:, None] * scale, delta.to(ct), alpha=scale, out=out)
            else:
                torch.mul(delta.to(ct), scale, out=out)
            return _softplus_exp2(out) if delta_softplus else (out, math.inf)

        def decays(out):  # exp(dt * A) = exp2(dt * A * log2(e)): (b, d, n, l)
            return torch.mul(dt.unsqueeze(2), Ac[:, :, None] * _LOG2E, out=out).exp2_()

        dt, s2_max = step_sizes(_new(u.shape, uc))
        Bv, gB = _bc_view(B.to(ct))
        Cv, gC = _bc_view(C.to(ct))

        def scan_input(out):  # dt * B * u: (b, d, n, l)
            dtu = torch.mul(dt, uc, out=out[:, :, 0] if n == 1 else None).unsqueeze(2)
            if n == 1:
                return _grouped(dtu, gB).mul_(Bv).view(out.shape)
            return torch.mul(_grouped(dtu, gB), Bv, out=_grouped(out, gB)).view(out.shape)

        inp = scan_input(_new((bsz, d, n, length), uc))
        decaying = delta_softplus and bool((Ac <= 0).all())
        # Without a backward and with d_state 1, dt is dead once the scan input is formed, and
        # if no chunk can decay below the closed form's range (the sum of dt * |A| over a chunk
        # is at most SCAN_CHUNK * max(dt) * max|A|), no chunk is solved step by step, which
        # would need the decays themselves: then the decays and their products go over dt's
        # buffer, one buffer fewer to fault in and to pull through the caches. Otherwise
        # dt's buffer takes the products.
        in_place = (n == 1 and not training and decaying
                    and _chunk_decay_bound(s2_max, Ac) <= _IN_PLACE_DECAY_BITS)
        if in_place:
            a = decays(dt.unsqueeze(2))
            prod = a.view(-1, length)
        else:
            a = decays(_new((bsz, d, n, length), uc))
            prod = dt.view(-1, length) if n == 1 and not training else None
        flat = inp.view(-1, length)
        res = _linear_scan(a.view(-1, length), flat, SCAN_CHUNK, decaying, out=flat, prod=prod)
        if res is None:  # |dt * B * u| so large that the closed form overflowed in place
            if prod is not None:  # the products went over dt (and over a if in_place)
                dt = step_sizes(dt)[0]
            if in_place:  # from here on as without in_place: products over dt's buffer
                a = decays(_new((bsz, d, n, length), uc))
            inp = scan_input(inp)
            res = _linear_scan(a.view(-1, length), inp.view(-1, length), SCAN_CHUNK, decaying,
                               prod=prod)
        x, prod, chunks = res
        x = x.view(bsz, d, n, length)
        if n == 1:  # y = x * C over a free buffer: the products (training), else the decays
            if training:  # (whose products went over them if in_place)
                y = torch.empty_like(x) if prod is None else _as(prod, x.shape)
            else:
                y = a
            torch.mul(_grouped(x, gC), Cv, out=_grouped(y, gC))
            y = y.view(bsz, d, length)
        else:
            y = torch.mul(_grouped(x, gC), Cv).view(bsz, d, n, length).sum(2)
        del prod
        if D is not None:
            y.addcmul_(uc, D.to(ct)[:, None])
        out = y if z is None else y * F.silu(z.to(ct))
        if training:
            ctx.delta_softplus = delta_softplus
            ctx.decaying = decaying
            ctx.chunks = chunks  # small: chunk totals and which chunks went step by step
            ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, dt, a, x,
                                  y if z is not None else None)
        out = out.to(u.dtype)
        if return_last_state:
            return out, x[..., -1].clone()
        return out

    @staticmethod
    def backward(ctx, dout, dlast=None):
        u, delta, A, B, C, D, z, delta_bias, dt, a, x, y = ctx.saved_tensors
        need = ctx.needs_input_grad
        ct = dt.dtype
        bsz, d, length = u.shape
        n = A.shape[1]
        uc = u.to(ct)
        Ac = A.to(ct)
        Bv, gB = _bc_view(B.to(ct))
        Cv, gC = _bc_view(C.to(ct))
        g = dout.to(ct).contiguous()  # may be dout itself: read only
        dz = None
        if z is not None:
            zc = z.to(ct)
            sig_z = torch.sigmoid(zc)
            if need[6]:
                # d silu(z) / dz = sig(z) * (1 + z * (1 - sig(z)))
                dz = (g * y * sig_z * (1 + zc * (1 - sig_z))).to(z.dtype)
            g = torch.mul(g, zc, out=torch.empty_like(g)).mul_(sig_z)
        dD = None if D is None or not need[5] else torch.einsum('bdl,bdl->d', g, uc).to(D.dtype)
        g5 = _grouped(g, gC)[:, :, :, None]  # (b, g, d/g, 1, l)
        work = torch.empty_like(x)
        work5 = _grouped(work, gC)
        dC = None
        if need[4]:
            dC = _reduce_to(torch.mul(_grouped(x, gC), g5, out=work5), Cv.shape)
            dC = dC.view(C.shape).to(C.dtype)

        def state_gradient():  # the gradient reaching the states directly
            torch.mul(g5, Cv, out=work5)
            if dlast is not None:
                work[..., -1] += dlast.to(ct)
            return work.view(-1, length)

        # the forward's within-chunk products again, in the buffer that later takes du
        du_buf = torch.empty_like(x)
        prod = du_buf.view(-1, length)
        if ctx.chunks is not None:
            for (a3, p3), (_, bad) in zip(_piece_views(length, SCAN_CHUNK, a.view(-1, length),
                                                       prod), ctx.chunks):
                torch.cumprod(a3, -1, out=p3)
                if bad.any():  # as in the forward: no subnormals
                    p3.masked_fill_(p3 < _PROD_LIMITS[p3.dtype][0], 0.0)
        flat = state_gradient()
        res = _reverse_linear_scan(a.view(-1, length), prod, ctx.chunks, flat, SCAN_CHUNK,
                                   ctx.decaying, out=flat)
        if res is None:  # |g * C| so large that the closed form overflowed in place
            res = _reverse_linear_scan(a.view(-1, length), prod, ctx.chunks, state_gradient(),
                                       SCAN_CHUNK, ctx.decaying)
        lam, spare = res
        lam = lam.view(bsz, d, n, length)  # total gradient of each state x_t
        spare = spare.view_as(lam)
        # x_t depends on dt_t through the input dt * B * u and through the decay.
        dtu = torch.mul(dt, uc, out=_as(du_buf, dt.shape))
        dB = None
        if need[3]:
            lam_dtu = torch.mul(_grouped(dtu.unsqueeze(2), gB), _grouped(lam, gB),
                                out=_grouped(spare, gB))
            dB = _reduce_to(lam_dtu, Bv.shape).view(B.shape).to(B.dtype)
        # gradient of log(a_t) = dt_t * A: w_t = lam_t * a_t * x_{t-1}
        w = torch.mul(lam, a, out=spare)
        w[..., 1:].mul_(x[..., :-1])
        w[..., 0] = 0
        dA = None if not need[2] else torch.einsum('bdnl,bdl->dn', w, dt).to(A.dtype)
        if n == 1:
            lam_B = _grouped(lam, gB).mul_(Bv).view(bsz, d, length)
        else:
            lam_B = torch.mul(_grouped(lam, gB), Bv).view(bsz, d, n, length).sum(2)
        du = torch.mul(lam_B, dt, out=dtu)
        if D is not None:
            du.addcmul_(g, D.to(ct)[:, None])
        ddt = lam_B.mul_(uc)
        if n == 1:
            ddt.addcmul_(w.squeeze(2), Ac)
        else:
            ddt += torch.einsum('bdnl,dn->bdl', w, Ac)
        if ctx.delta_softplus:  # softplus'(s) = sigmoid(s) = 1 / (1 + exp2(-s * log2(e)))
            t = _as(spare, dt.shape)
            if delta_bias is None:
                torch.mul(delta.to(ct), -_LOG2E, out=t)
            else:
                torch.add(delta_bias.to(ct)[:, None] * -_LOG2E, delta.to(ct), alpha=-_LOG2E,
                          out=t)
            ddt.div_(t.exp2_().add_(1.0))
        ddelta_bias = None
        if delta_bias is not None and need[7]:
            ddelta_bias = ddt.sum((0, 2)).to(delta_bias.dtype)
        return (du.to(u.dtype), ddt.to(delta.dtype), dA, dB, dC, dD, dz, ddelta_bias, None,
                None)


def selective_scan_chunked(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                           delta_softplus=False, return_last_state=False):
    """Pure-PyTorch selective scan with a hand-written backward; any device.

    Arguments and results as :func:`selective_scan_fn`. Memory: besides the output it keeps
    three (b, d, n, l)-sized tensors per call for the backward.
    """
    _check_args(u, delta, A, B, C, D, z, delta_bias)
    return _SelectiveScanChunked.apply(u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus),
                                       bool(return_last_state))


# --------------------------------------------------------------------------------------------
# Dispatch
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
                          'the pure-PyTorch chunked scan, which is slower.')
        _mamba_kernel_cache.append(kernel)
    return _mamba_kernel_cache[0]


def mamba_kernel_call(kernel, u, delta, A, B, C, D=None, z=None, delta_bias=None,
                      delta_softplus=False, return_last_state=False):
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


def selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                      delta_softplus=False, return_last_state=False):
    """Selective scan (shapes in the module docstring); differentiable in every tensor.

    CUDA tensors go to mamba-ssm's kernel when it is installed and supports the inputs
    (float32/float16/bfloat16 ``u``, d_state <= 256); everything else to
    :func:`selective_scan_chunked`. One difference: mamba-ssm's kernel ignores gradients
    that reach the returned last state; the chunked scan back-propagates them.

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
    _check_args(u, delta, A, B, C, D, z, delta_bias)
    if u.is_cuda and u.dtype in _MAMBA_IO_DTYPES and A.shape[1] <= _MAMBA_MAX_DSTATE:
        kernel = _mamba_kernel()
        if kernel is not None:
            return mamba_kernel_call(kernel, u, delta, A, B, C, D, z, delta_bias,
                                     delta_softplus, return_last_state)
    return _SelectiveScanChunked.apply(u, delta, A, B, C, D, z, delta_bias, bool(delta_softplus),
                                       bool(return_last_state))
