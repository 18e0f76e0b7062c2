"""Opt-in selective scan whose element-wise work is fused by ``torch.compile`` (Inductor).

The eager chunked scan (:func:`~mmseg_segman.ops.selective_scan.selective_scan_chunked`)
makes separate full passes over (b, d, l) tensors: softplus, the decays exp(dt * A),
dt * B * u, x * C + D * u, and about twenty in the backward. Here those element-wise parts
(and the reductions to the gradients of A, D and delta_bias) are pure functions that Inductor
compiles into a few C++ loops each; the linear recurrence itself is still solved by the eager
chunked code (``_linear_scan`` and its adjoint), which keeps its overflow-safe handling of
strong decay. Inductor on CPU leaves cumsum/cumprod as ATen calls, so they cannot be fused.

Measured on one CPU core (docs/benchmarks.md): no faster than the eager chunked scan, because
the passes it fuses are dominated by transcendental arithmetic (exp2, log1p), not memory
traffic, and Inductor allocates fresh outputs where the eager code reuses buffers.

Compilation takes tens of seconds per new set of shapes (then cached for the process). If
``torch.compile`` cannot run (no C++ compiler, unsupported platform or Python), the first
call warns once and every call uses the eager chunked scan instead.
"""
import warnings

import torch
import torch.nn.functional as F

from .selective_scan import (_LOG2E, _PROD_MIN, SCAN_CHUNK, _bc_view, _check_args, _compute_dtype,
                             _linear_scan, _piece_views, _reverse_linear_scan,
                             selective_scan_chunked)

__all__ = ['selective_scan_compiled']


def _grouped(x, g):
    """(b, d, ...) -> (b, g, d // g, ...)."""
    return x.view(x.shape[0], g, x.shape[1] // g, *x.shape[2:])


def _softplus(s):
    """softplus(s) = max(s, 0) + log1p(e) with e = exp(-|s|), and log1p(e) = 2 atanh(t),
    t = e / (2 + e) <= 1/3, by its Taylor series to t**15 (truncation < 2e-8 relative).
    Fused, this costs an exp2, a division and eight multiply-adds: a third of exp + log1p
    (log1p alone costs 3.5 ms per 8 MiB on one core here)."""
    e = torch.exp2(s.abs() * -_LOG2E)
    t = e / (e + 2.0)
    t2 = t * t
    series = t2 * (1.0 / 15) + 1.0 / 13
    for k in (11, 9, 7, 5, 3, 1):
        series = series * t2 + 1.0 / k
    return s.clamp_min(0.0) + 2.0 * t * series


def _prologue(u, delta, A, Bv, delta_bias, delta_softplus: bool, gB: int):
    """dt (b, d, l), decays exp(dt * A) and scan inputs dt * B * u ((b, d, n, l) each)."""
    s = delta if delta_bias is None else delta + delta_bias[:, None]
    dt = _softplus(s) if delta_softplus else s
    a = torch.exp2(dt.unsqueeze(2) * (A[:, :, None] * _LOG2E))
    inp = _grouped((dt * u).unsqueeze(2), gB) * Bv
    return dt, a, inp.reshape(a.shape)


def _epilogue(x, u, Cv, D, z, gC: int):
    """y = <x, C> + D * u (b, d, l), and the output y * silu(z) if z is given."""
    y = (_grouped(x, gC) * Cv).sum(3).flatten(1, 2)
    if D is not None:
        y = y + u * D[:, None]
    return y, (y if z is None else y * F.silu(z))


def _backward_prologue(dout, u, x, y, z, Cv, D, dlast, gC: int):
    """Gradients that do not need the adjoint scan: the gradient g reaching y, dz, dD, dC
    (summed over the batch and channel broadcasts later), and the gradient g * C reaching the
    states directly."""
    dz = None
    g = dout
    if z is not None:
        sig = torch.sigmoid(z)
        dz = dout * y * sig * (1 + z * (1 - sig))
        g = dout * z * sig
    dD = None if D is None else (g * u).sum((0, 2))
    g5 = _grouped(g, gC)[:, :, :, None]
    dC = _grouped(x, gC) * g5  # summed to C's shape outside (see _reduce_to)
    state_grad = (g5 * Cv).reshape(x.shape)
    if dlast is not None:
        state_grad = torch.cat([state_grad[..., :-1], (state_grad[..., -1] + dlast)[..., None]],
                               -1)
    return g, dz, dD, dC, state_grad


def _backward_epilogue(lam, a, x_prev, dt, u, delta, delta_bias, A, Bv, g, D,
                       delta_softplus: bool, gB: int):
    """Gradients through the scan inputs and decays, given the states' adjoint ``lam``.

    x_t = a_t x_{t-1} + dt_t B_t u_t with a_t = exp(dt_t A), so with w_t = lam_t a_t x_{t-1}:
    dB = sum lam dt u, dA = sum w dt, du = dt <lam, B> + D g, ddt = u <lam, B> + <w, A>.
    ``x_prev`` holds x_{t-1} (0 at t = 0): shifting inside the kernel (a padded load) would
    cost more than the whole rest of it.
    """
    w = lam * a * x_prev
    dA = (w * dt.unsqueeze(2)).sum((0, 3))
    lam5 = _grouped(lam, gB)
    dB = lam5 * _grouped((dt * u).unsqueeze(2), gB)  # summed to B's shape outside
    lam_B = (lam5 * Bv).sum(3).flatten(1, 2)
    du = lam_B * dt
    if D is not None:
        du = du + g * D[:, None]
    ddt = lam_B * u + (w * A[:, :, None]).sum(2)
    if delta_softplus:
        s = delta if delta_bias is None else delta + delta_bias[:, None]
        ddt = ddt / (1 + torch.exp2(s * -_LOG2E))  # * sigmoid(s)
    ddelta_bias = None if delta_bias is None else ddt.sum((0, 2))
    return du, ddt, dA, dB, ddelta_bias


_PIECES = {f.__name__: f for f in (_prologue, _epilogue, _backward_prologue, _backward_epilogue)}
# name -> compiled function; emptied (and _FAILED set) if compilation fails once
_compiled = {}
_FAILED = []


def _call(name, *args):
    """Run a piece compiled; on a compilation failure warn once and run it eagerly from then
    on (same math, unfused)."""
    if not _FAILED:
        fn = _compiled.get(name)
        if fn is None:
            fn = _compiled[name] = torch.compile(_PIECES[name], fullgraph=True)
        try:
            return fn(*args)
        except Exception as err:  # noqa: BLE001 - any backend failure means "cannot compile"
            _fail(err)
    return _PIECES[name](*args)


def _fail(err):
    _FAILED.append(err)
    _compiled.clear()
    warnings.warn(f'torch.compile cannot run here ({type(err).__name__}: {err}); the '
                  'selective scan falls back to the eager chunked implementation.')


def compile_available():
    """Whether this process can compile (False after a failure, or where Dynamo is
    unsupported, e.g. on some Python versions)."""
    if _FAILED:
        return False
    try:
        import torch._dynamo
        return bool(torch._dynamo.is_dynamo_supported())
    except Exception as err:  # noqa: BLE001
        _fail(err)
        return False


def _reduce_to(t, shape):
    """Sum a (b, g, d // g, n, l) gradient of a broadcast B/C view back to the view's
    ``shape``. ATen reduces over the channels (a middle dim) in 1 ms at SegMAN-T stage 1;
    Inductor's loop for the same sum, fused into the kernel, added 5 ms."""
    dims = [i for i, (m, k) in enumerate(zip(shape, t.shape)) if m == 1 and k != 1]
    return t.sum(dims, keepdim=True) if dims else t


def _detached(dtype, *tensors):
    return [None if t is None else t.detach().to(dtype) for t in tensors]


class _SelectiveScanCompiled(torch.autograd.Function):
    """As ``_SelectiveScanChunked`` with the element-wise parts compiled; saves dt, the
    decays and the states for the backward, which recomputes the within-chunk products."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state):
        ct = _compute_dtype(u)
        bsz, d, length = u.shape
        n = A.shape[1]
        # detached: the compiled pieces then see the same tensors with and without autograd
        # (Dynamo guards on requires_grad, and would compile a second graph)
        uc, dc, Ac, Bc, Cc, Dc, zc, bc = _detached(ct, u, delta, A, B, C, D, z, delta_bias)
        Bv, gB = _bc_view(Bc)
        Cv, gC = _bc_view(Cc)
        training = any(ctx.needs_input_grad[:8])
        dt, a, inp = _call('_prologue', uc, dc, Ac, Bv, bc, delta_softplus, gB)
        decaying = delta_softplus and bool((Ac <= 0).all())
        flat = inp.view(-1, length)
        res = _linear_scan(a.view(-1, length), flat, SCAN_CHUNK, decaying, out=flat)
        if res is None:  # |dt * B * u| so large that the closed form overflowed in place
            inp = _call('_prologue', uc, dc, Ac, Bv, bc, delta_softplus, gB)[2]
            res = _linear_scan(a.view(-1, length), inp.view(-1, length), SCAN_CHUNK, decaying)
        x, _, chunks = res
        x = x.view(bsz, d, n, length)
        y, out = _call('_epilogue', x, uc, Cv, Dc, zc, gC)
        if training:
            ctx.delta_softplus = delta_softplus
            ctx.decaying = decaying
            ctx.chunks = chunks
            ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, dt, a, x,
                                  y if z is not None else None)
        out = out.to(u.dtype)
        if return_last_state:
            return out, x[..., -1].clone()
        return out

    @staticmethod
    def backward(ctx, dout, dlast=None):
        u, delta, A, B, C, D, z, delta_bias, dt, a, x, y = ctx.saved_tensors
        ct = dt.dtype
        bsz, d, length = u.shape
        n = A.shape[1]
        uc, dc, Ac, Bc, Cc, Dc, zc, bc = _detached(ct, u, delta, A, B, C, D, z, delta_bias)
        Bv, gB = _bc_view(Bc)
        Cv, gC = _bc_view(Cc)
        dl = None if dlast is None else dlast.to(ct)
        pro_args = (dout.to(ct), uc, x, y, zc, Cv, Dc, dl, gC)
        g, dz, dD, dC, state_grad = _call('_backward_prologue', *pro_args)
        prod = torch.empty_like(a).view(-1, length)  # the forward's within-chunk products
        if ctx.chunks is not None:
            for (a3, p3), (_, bad) in zip(
                    _piece_views(length, SCAN_CHUNK, a.view(-1, length), prod), ctx.chunks):
                torch.cumprod(a3, -1, out=p3)
                if bad.any():  # as in the forward: no subnormals
                    p3.masked_fill_(p3 < _PROD_MIN, 0.0)
        flat = state_grad.view(-1, length)
        res = _reverse_linear_scan(a.view(-1, length), prod, ctx.chunks, flat, SCAN_CHUNK,
                                   ctx.decaying, out=flat)
        if res is None:  # |g * C| so large that the closed form overflowed in place
            state_grad = _call('_backward_prologue', *pro_args)[4]
            res = _reverse_linear_scan(a.view(-1, length), prod, ctx.chunks,
                                       state_grad.view(-1, length), SCAN_CHUNK, ctx.decaying)
        lam = res[0].view(bsz, d, n, length)
        del res, flat, state_grad
        x_prev = prod.view_as(x)  # the products' buffer is free again
        x_prev[..., 0] = 0
        x_prev[..., 1:] = x[..., :-1]
        du, ddt, dA, dB, ddelta_bias = _call('_backward_epilogue', lam, a, x_prev, dt, uc, dc, bc,
                                             Ac, Bv, g, Dc, ctx.delta_softplus, gB)
        need = ctx.needs_input_grad
        dB = _reduce_to(dB, _bc_view(B)[0].shape).reshape(B.shape).to(B.dtype) if need[3] else None
        dC = _reduce_to(dC, _bc_view(C)[0].shape).reshape(C.shape).to(C.dtype) if need[4] else None
        return (du.to(u.dtype), ddt.to(delta.dtype), dA.to(A.dtype), dB, dC,
                None if D is None else dD.to(D.dtype), None if z is None else dz.to(z.dtype),
                None if delta_bias is None else ddelta_bias.to(delta_bias.dtype), None, None)


def selective_scan_compiled(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                            delta_softplus=False, return_last_state=False):
    """Selective scan with Inductor-fused element-wise parts; arguments and results as
    :func:`~mmseg_segman.ops.selective_scan.selective_scan_fn`. Any device Inductor
    supports; falls back to the eager chunked scan (with one warning) where compilation is
    unavailable."""
    _check_args(u, delta, A, B, C, D, z, delta_bias)
    if not compile_available():
        return selective_scan_chunked(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                                      return_last_state)
    return _SelectiveScanCompiled.apply(u, delta, A, B, C, D, z, delta_bias,
                                        bool(delta_softplus), bool(return_last_state))
