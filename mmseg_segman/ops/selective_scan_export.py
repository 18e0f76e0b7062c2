"""Selective scan for graph export (ONNX, ``torch.export``): static shapes, no branches on data.

:func:`selective_scan_fn` is an autograd Function whose forward chooses per chunk between a
closed form and a step-by-step solve by looking at the data (``.any()`` on the decay
products). A tracer records one of those branches for the example input only, and
``torch.export`` refuses the data-dependent ``bool()`` outright. :func:`selective_scan_export`
computes the same recurrence (shapes and semantics of ``selective_scan_fn``, see
:mod:`mmseg_segman.ops.selective_scan`) with a fixed sequence of tensor operations that
depends only on the shapes.

Method. Per channel and state the scan is the linear recurrence
``x_t = exp(s_t) * x_{t-1} + b_t`` with ``s_t = dt_t * A`` and ``b_t = dt_t * B_t * u_t``.
The sequence is cut into chunks of ``chunk`` steps. Inside a chunk, with zero state at its
start, ``x_t = sum_{r <= t} exp(S[t, r]) * b_r``, where ``S[t, r] = s_{r+1} + ... + s_t`` is
the chunk's "segment sum" matrix (computed as a masked cumulative sum, not as a difference of
prefix sums, so no cancellation); a 0/1 mask zeroes the weights above the diagonal. The chunk-level
recurrence of the final states, ``X_c = exp(s_1 + ... + s_T of chunk c) * X_{c-1} + x_last_c``,
has the same form with one step per chunk and is solved by the same function, recursively,
until one chunk holds the whole sequence (``ceil(log_T(length))`` levels, decided from the
static length when the graph is built). The state entering each chunk is then added back,
multiplied by ``exp`` of the chunk's prefix sums.

Numeric limits (honest list):

- With ``A <= 0`` (Mamba's ``A = -exp(A_log)``) and ``dt >= 0`` (softplus) every ``s_t <= 0``,
  so every factor ``exp(S)`` lies in [0, 1]: no overflow, and decays too strong for float32
  underflow to 0, which is also the true limit. Relative error is that of float32 sums and
  ``exp`` (about 1e-6 on SegMAN's activations; see the tests and docs/deployment.md).
- ``A > 0`` or negative ``dt`` (growth) is computed by the same formula with no safeguard:
  factors above the float32 range become ``inf`` and the result ``inf``/``nan``. Unlike
  :func:`selective_scan_chunked`, there is no step-by-step fallback for such chunks.
- Cost: ``chunk`` times the memory of the inputs for the segment-sum matrices (16 by default)
  and a (chunk x chunk) matrix product per chunk. Fine for inference; not meant for training
  (no custom backward; autograd through it works but is not memory-efficient).
- Forward only in the sense that it is meant for inference graphs; float32 (float64 if ``u``
  is float64) like the other implementations.
"""
import torch
import torch.nn.functional as F

from .selective_scan import _bc_view, _check_args, _grouped

__all__ = ['selective_scan_export', 'linear_scan_export', 'is_exporting']

# Steps per chunk: the segment-sum matrices hold chunk * length entries per (batch, channel,
# state); 16 keeps that small and the recursion at 3 levels for SegMAN at 512x512 (16384 tokens).
EXPORT_CHUNK = 16


def is_exporting():
    """True while ``torch.onnx.export`` (either exporter) or ``torch.export`` traces a model.

    ``torch.onnx.is_in_onnx_export()`` is set by both ONNX exporters (TorchScript and
    ``dynamo=True``); ``torch.compiler.is_exporting()`` by ``torch.export.export``.
    """
    if torch.onnx.is_in_onnx_export():
        return True
    is_export = getattr(getattr(torch, 'compiler', None), 'is_exporting', None)
    return bool(is_export is not None and is_export())


def _decay_weights(s):
    """(..., T) log-decays -> (..., T, T) lower-triangular ``exp(s_{r+1} + ... + s_t)`` at [t, r].

    The segment sums come from a cumulative sum over t of ``z[t, r] = s_t * [t > r]``, so each
    is a sum of its own terms (no difference of large prefix sums). Above the diagonal that
    sum is empty (0), and the 0/1 mask multiplies ``exp(0) = 1`` by 0.
    """
    T = s.shape[-1]
    lower = torch.ones(T, T, dtype=s.dtype, device=s.device).tril()
    strictly_lower = lower.tril(-1)
    return torch.exp((s.unsqueeze(-1) * strictly_lower).cumsum(dim=-2)) * lower


def _chunk_solve(s, b):
    """Zero-initial-state solution inside each chunk: (..., T) -> (..., T)."""
    weights = _decay_weights(s)  # entries in [0, 1] when s <= 0
    return (weights @ b.unsqueeze(-1)).squeeze(-1)


def linear_scan_export(s, b, chunk=EXPORT_CHUNK):
    """Solve ``x_t = exp(s_t) * x_{t-1} + b_t`` (``x_{-1} = 0``) along the last dim.

    Args:
        s (Tensor): (..., L) log-decays (``dt * A``); the method is overflow-free for s <= 0.
        b (Tensor): (..., L) inputs, same shape and dtype as ``s``.
        chunk (int): Steps per chunk (>= 2). Default: ``EXPORT_CHUNK``.

    Returns:
        Tensor: (..., L) the states ``x``.
    """
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 2:
        raise ValueError(f'chunk must be an int >= 2, got {chunk!r}')
    if s.shape != b.shape:
        raise ValueError(f's and b must have the same shape, got {tuple(s.shape)} and '
                         f'{tuple(b.shape)}')
    length = s.shape[-1]
    if length <= chunk:
        return _chunk_solve(s, b)
    n_chunks = -(-length // chunk)
    pad = n_chunks * chunk - length
    if pad:  # padded steps come after the real ones, so they cannot change them
        s, b = F.pad(s, (0, pad)), F.pad(b, (0, pad))
    s = s.unflatten(-1, (n_chunks, chunk))
    b = b.unflatten(-1, (n_chunks, chunk))
    local = _chunk_solve(s, b)  # (..., n_chunks, chunk)
    # Final states of the chunks follow the same recurrence, one step per chunk.
    ends = linear_scan_export(s.sum(-1), local[..., -1], chunk)  # (..., n_chunks)
    entering = F.pad(ends[..., :-1], (1, 0))  # state before each chunk, zero before the first
    x = local + torch.exp(s.cumsum(-1)) * entering.unsqueeze(-1)
    x = x.flatten(-2)
    return x[..., :length] if pad else x


def selective_scan_export(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                          delta_softplus=False, return_last_state=False, chunk=EXPORT_CHUNK):
    """Selective scan with static control flow; arguments and results of ``selective_scan_fn``.

    Computes in float32 (float64 for float64 ``u``) and returns ``u``'s dtype; with
    ``return_last_state`` also the final state (b, d, n). ``chunk`` sets the steps per chunk
    of :func:`linear_scan_export`. See the module docstring for the numeric limits.
    """
    _check_args(u, delta, A, B, C, D, z, delta_bias)
    dtype_in = u.dtype
    ct = torch.float64 if u.dtype == torch.float64 else torch.float32
    delta = delta.to(ct)
    if delta_bias is not None:
        delta = delta + delta_bias.to(ct)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    u = u.to(ct)
    s = delta.unsqueeze(2) * A.to(ct)[None, :, :, None]  # (b, d, n, l)
    Bv, gB = _bc_view(B.to(ct))
    Cv, gC = _bc_view(C.to(ct))
    b = (_grouped((delta * u).unsqueeze(2), gB) * Bv).flatten(1, 2)  # (b, d, n, l)
    x = linear_scan_export(s, b, chunk)
    y = (_grouped(x, gC) * Cv).flatten(1, 2).sum(2)  # (b, d, l)
    if D is not None:
        y = y + u * D.to(ct)[:, None]
    if z is not None:
        y = y * F.silu(z.to(ct))
    y = y.to(dtype_in)
    return (y, x[..., -1]) if return_last_state else y
