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
  recurrence is solved in chunks with cumulative products (see :func:`linear_scan`); chunks whose
  decay leaves the float range are re-solved step by step, so any decay keeps float precision.
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

# Chunk length of linear_scan: short enough to keep the cumulative products accurate
# (rounding grows with the length) and inside the float range for ordinary decays, long enough
# that the pass over chunk states is small. 16..256 time alike at SegMAN-T stage-1 sizes.
SCAN_CHUNK = 64
# A chunk is solved in closed form only if all its cumulative products of decays stay within
# [2**-100, 2**100]: then P is far from subnormal and b / P far from overflow.
_PROD_MIN = 2.0**-100
_PROD_MAX = 2.0**100
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


def _scan_steps(a, b):
    """x_t = a_t * x_{t-1} + b_t along dim 1 of (k, t) tensors, one vectorised step per t."""
    a_cols, b_cols = a.t().contiguous(), b.t().contiguous()
    x = torch.empty_like(b_cols)
    x[0] = b_cols[0]
    for t in range(1, x.shape[0]):
        torch.addcmul(b_cols[t], a_cols[t], x[t - 1], out=x[t])
    return x.t()


def _scan_within_chunks(a, b, x, prod, decaying, in_place):
    """Solve every chunk from a zero state: (rows, chunks, t) views ``a``, ``b`` -> ``x``.

    Closed form x_t = P_t * sum_{s<=t} b_s / P_s with P the cumulative product of ``a`` inside
    the chunk (written to ``prod``). Chunks where P leaves [2**-100, 2**100] or the result is
    not finite are solved again step by step. ``decaying`` (all a <= 1) makes P monotone, so
    its last entry bounds the whole chunk. ``in_place``: ``x`` is ``b``, and the caller has
    checked that b / P cannot overflow.
    """
    torch.cumprod(a, -1, out=prod)
    if decaying:
        bad = ~(prod[..., -1] >= _PROD_MIN)
    else:
        lo, hi = prod.aminmax(dim=-1)
        bad = ~((lo >= _PROD_MIN) & (hi <= _PROD_MAX))
    redo = None
    if bad.any():
        redo = a[bad], b[bad]  # copies, taken before x (maybe b itself) is overwritten
        # Products below 2**-100 only scale contributions that are 2**-77 below float32
        # resolution; zero them so that no later pass computes with (very slow) subnormals.
        prod.masked_fill_(prod < _PROD_MIN, 0.0)
    torch.div(b, prod, out=x)
    x.cumsum_(-1)
    x.mul_(prod)
    if not in_place:
        overflow = ~torch.isfinite(x[..., -1]) & ~bad  # |b| so large that b / P overflowed
        if overflow.any():
            bad |= overflow
            redo = a[bad], b[bad]
    if redo is not None:
        x[bad] = _scan_steps(*redo)


def _closed_form_cannot_overflow(b, chunk):
    """True if |b| / P summed over ``chunk`` steps stays finite for all P >= 2**-100."""
    if b.numel() == 0:
        return True
    bound = 2.0**(126 + math.log2(_PROD_MIN) - math.ceil(math.log2(chunk)))
    lo, hi = torch.aminmax(b)
    return bool((lo > -bound) & (hi < bound))  # False for nan / inf as well


def _linear_scan(a, b, chunk, decaying, overwrite_b):
    """linear_scan; with ``overwrite_b`` the result may be written over ``b``.

    Returns:
        tuple[Tensor, Tensor]: x, and the buffer of chunk-wise cumulative products (free
        for the caller to reuse).
    """
    rows, length = b.shape
    in_place = overwrite_b and _closed_form_cannot_overflow(b, chunk)
    x = b if in_place else torch.empty((rows, length), dtype=b.dtype, device=b.device)
    prod = torch.empty((rows, length), dtype=b.dtype, device=b.device)
    n_full = length // chunk
    main = n_full * chunk
    pieces = [(0, main, n_full, chunk)] if n_full else []
    if main < length:
        pieces.append((main, length, 1, length - main))
    for start, stop, n, t in pieces:
        _scan_within_chunks(a[:, start:stop].view(rows, n, t), b[:, start:stop].view(rows, n, t),
                            x[:, start:stop].view(rows, n, t),
                            prod[:, start:stop].view(rows, n, t), decaying, in_place)
    n_chunks = len(range(0, length, chunk))
    if n_chunks == 1:
        return x, prod
    ends = torch.arange(chunk - 1, length + chunk - 1, chunk, device=b.device)
    ends.clamp_(max=length - 1)  # the last chunk may be partial
    # state at each chunk end (the gathered copies are free to overwrite)
    carry, _ = _linear_scan(prod[:, ends], x[:, ends], chunk, decaying, True)
    if n_full > 1:
        x[:, chunk:main].view(rows, n_full - 1, chunk).addcmul_(
            prod[:, chunk:main].view(rows, n_full - 1, chunk), carry[:, :n_full - 1, None])
    if main < length:
        x[:, main:].addcmul_(prod[:, main:], carry[:, n_full - 1:n_full])
    return x, prod


def linear_scan(a, b, chunk=None, decaying=False):
    """Solve x_t = a_t * x_{t-1} + b_t (x_{-1} = 0) along the last dim of 2-D tensors.

    Each chunk of ``chunk`` steps is solved from a zero state (``_scan_within_chunks``); the
    states at chunk ends then form a recurrence of length l / chunk that is solved by the same
    function, and each chunk adds its incoming state times its cumulative decay. Any decay is
    handled: chunks whose products leave the float range are solved step by step.

    Args:
        a (Tensor): (rows, l) coefficients >= 0 (decays exp(dt * A)).
        b (Tensor): (rows, l) inputs; may be a strided view with unit last stride.
        chunk (int, optional): chunk length; defaults to the module's ``SCAN_CHUNK``.
        decaying (bool): promise that all a <= 1 (skips one reduction).

    Returns:
        Tensor: (rows, l) states x, contiguous.
    """
    return _linear_scan(a, b, SCAN_CHUNK if chunk is None else chunk, decaying, False)[0]


def _reverse_decayed_scan(a, g, decaying):
    """rho_t = a_t * (g_t + rho_{t+1}) (rho_l = 0): the adjoint of linear_scan, times ``a``.

    The adjoint lam_t = g_t + a_{t+1} * lam_{t+1} is ``g_t + rho_{t+1}``; rho itself satisfies a
    recurrence with coefficient a_t at the same step, so it is linear_scan of the time-reversed
    inputs (a, a * g) without any shift.

    Returns:
        tuple[Tensor, list[Tensor]]: rho (rows, l), and at least three (rows, l) buffers that
        are no longer needed, for the caller to reuse.
    """
    a_rev = a.flip(-1)
    inp_rev = g.flip(-1).mul_(a_rev)
    rho_rev, prod = _linear_scan(a_rev, inp_rev, SCAN_CHUNK, decaying, True)
    spare = [a_rev, prod, rho_rev] + ([] if rho_rev is inp_rev else [inp_rev])
    return rho_rev.flip(-1), spare


def _carve(buffers, like):
    """A tensor shaped like ``like`` on the storage of the next spare buffer."""
    return buffers.pop().view(-1)[:like.numel()].view(like.shape)


# --------------------------------------------------------------------------------------------
# Pure-PyTorch selective scan with a hand-written backward
# --------------------------------------------------------------------------------------------


def _softplus(s):
    """F.softplus(s) from vectorised exp/log1p (several times faster on CPU); ``s`` is consumed."""
    if s.numel() == 0 or s.max() <= _SOFTPLUS_LINEAR:
        return s.exp_().log1p_()
    # log1p(exp(min(s, 20))) + max(s - 20, 0): exact below 20, s (to rounding) above.
    excess = (s - _SOFTPLUS_LINEAR).clamp_min_(0)
    return s.clamp_max_(_SOFTPLUS_LINEAR).exp_().log1p_().add_(excess)


def _reduce_to(t, shape):
    """Sum a broadcast product back to an operand's ``shape``; always a new tensor."""
    dims = [i for i, (m, k) in enumerate(zip(shape, t.shape)) if m == 1 and k != 1]
    return t.sum(dims, keepdim=True) if dims else t.clone()


class _SelectiveScanChunked(torch.autograd.Function):
    """Forward with linear_scan, backward with its adjoint (the same scan in reverse).

    Saves the states x, the decays exp(dt * A) (both (b, d, n, l)) and dt (b, d, l) for the
    backward, so that the backward needs no transcendental except one sigmoid. Large
    temporaries are reused in place where possible: on CPU every fresh multi-megabyte
    buffer costs page faults that take longer than the arithmetic on it.
    """

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state):
        ct = _compute_dtype(u)
        bsz, d, length = u.shape
        n = A.shape[1]
        uc = u.to(ct)
        Ac = A.to(ct)
        # dt must be contiguous (its products are viewed per group) and private when softplus
        # overwrites it.
        if delta_bias is not None:
            dt = (delta.to(ct) + delta_bias.to(ct)[:, None]).contiguous()
        elif delta_softplus:
            dt = delta.to(ct, memory_format=torch.contiguous_format, copy=True)
        else:
            dt = delta.to(ct).contiguous()
        if delta_softplus:
            dt = _softplus(dt)
        Bv, gB = _bc_view(B.to(ct))
        Cv, gC = _bc_view(C.to(ct))
        dtu = torch.mul(dt, uc, out=torch.empty_like(dt)).unsqueeze(2)  # (b, d, 1, l)
        training = any(ctx.needs_input_grad[:8])
        if n == 1 and not training:  # dt is not needed any more: overwrite it
            decay = dt.unsqueeze(2).mul_(Ac[:, :, None]).exp_()
        else:
            decay = torch.mul(dt.unsqueeze(2), Ac[:, :, None]).exp_()  # (b, d, n, l)
        if n == 1:
            inp = dtu
            _grouped(inp, gB).mul_(Bv)
        else:
            inp = torch.mul(_grouped(dtu, gB), Bv).view(bsz, d, n, length)
        decaying = delta_softplus and bool((Ac <= 0).all())
        x, spare = _linear_scan(decay.view(-1, length), inp.view(-1, length), SCAN_CHUNK,
                                decaying, True)
        x = x.view(bsz, d, n, length)
        if n == 1:  # y = x * C, written over the no longer needed products
            y = torch.mul(_grouped(x, gC), Cv, out=_grouped(spare.view_as(x), gC))
            y = y.view(bsz, d, length)
        else:
            y = torch.mul(_grouped(x, gC), Cv).view(bsz, d, n, length).sum(2)
        del inp, spare
        if D is not None:
            y.addcmul_(uc, D.to(ct)[:, None])
        out = y if z is None else y * F.silu(z.to(ct))
        if training:
            ctx.delta_softplus = delta_softplus
            ctx.decaying = decaying
            ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, dt, decay, x,
                                  y if z is not None else None)
        out = out.to(u.dtype)
        if return_last_state:
            return out, x[..., -1].clone()
        return out

    @staticmethod
    def backward(ctx, dout, dlast=None):
        u, delta, A, B, C, D, z, delta_bias, dt, decay, x, y = ctx.saved_tensors
        need = ctx.needs_input_grad
        ct = dt.dtype
        bsz, d, length = u.shape
        n = A.shape[1]
        uc = u.to(ct)
        Ac = A.to(ct)
        Bv, gB = _bc_view(B.to(ct))
        Cv, gC = _bc_view(C.to(ct))
        g = dout.to(ct).contiguous()  # autograd may pass expanded or strided gradients
        dz = None
        if z is not None:
            zc = z.to(ct)
            sig_z = torch.sigmoid(zc)
            if need[6]:
                # d silu(z) / dz = sig(z) * (1 + z * (1 - sig(z)))
                dz = (g * y * sig_z * (1 + zc * (1 - sig_z))).to(z.dtype)
            g = torch.mul(g, zc, out=torch.empty_like(g)).mul_(sig_z)  # keeps g contiguous
        dD = None if D is None or not need[5] else torch.einsum('bdl,bdl->d', g, uc).to(D.dtype)
        g5 = _grouped(g, gC)[:, :, :, None]  # (b, g, d/g, 1, l)
        work = torch.empty_like(x)
        work5 = _grouped(work, gC)
        dC = None
        if need[4]:
            dC = _reduce_to(torch.mul(_grouped(x, gC), g5, out=work5), Cv.shape)
            dC = dC.view(C.shape).to(C.dtype)
        torch.mul(g5, Cv, out=work5)  # gradient reaching the states directly
        if dlast is not None:
            work[..., -1] += dlast.to(ct)
        rho, spare = _reverse_decayed_scan(decay.view(-1, length), work.view(-1, length),
                                           ctx.decaying)
        rho = rho.view(bsz, d, n, length)
        lam = work  # lam_t = g_t C_t + rho_{t+1}: total gradient of x_t
        lam[..., :-1] += rho[..., 1:]
        # gradient of log(decay_t) = dt_t * A: lam_t * decay_t * x_{t-1} = rho_t * x_{t-1}
        w = rho[..., 1:].mul_(x[..., :-1])  # (b, d, n, l-1)
        dA = None if not need[2] else torch.einsum('bdnl,bdl->dn', w, dt[..., 1:]).to(A.dtype)
        # x_t depends on dt_t through the input dt * B * u and through the decay.
        dB = None
        if need[3]:
            dtu5 = _grouped(torch.mul(dt, uc, out=_carve(spare, dt)).unsqueeze(2), gB)
            prod = dtu5.mul_(_grouped(lam, gB)) if n == 1 else dtu5 * _grouped(lam, gB)
            dB = _reduce_to(prod, Bv.shape).view(B.shape).to(B.dtype)
        if n == 1:
            lam_B = _grouped(lam, gB).mul_(Bv).view(bsz, d, length)
        else:
            lam_B = torch.mul(_grouped(lam, gB), Bv).view(bsz, d, n, length).sum(2)
        # (with d_state > 1 a spare buffer is n times larger than du: do not pin it)
        du = torch.mul(lam_B, dt, out=_carve(spare, dt)) if n == 1 else lam_B * dt
        if D is not None:
            du.addcmul_(g, D.to(ct)[:, None])
        ddt = lam_B.mul_(uc)
        if n == 1:
            ddt[..., 1:].addcmul_(w.squeeze(2), Ac)
        else:
            ddt[..., 1:] += torch.einsum('bdnl,dn->bdl', w, Ac)
        if ctx.delta_softplus:
            s = _carve(spare, dt)
            if delta_bias is None:
                s.copy_(delta)
            else:
                torch.add(delta.to(ct), delta_bias.to(ct)[:, None], out=s)
            ddt.mul_(s.sigmoid_())
        ddelta_bias = None
        if delta_bias is not None and need[7]:
            ddelta_bias = ddt.sum((0, 2)).to(delta_bias.dtype)
        return (du.to(u.dtype), ddt.to(delta.dtype), dA, dB, dC, dD, dz, ddelta_bias, None, None)


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
