"""Selective scan for graph export (ONNX, ``torch.export``): static shapes, no branches on data.

The chunked scan (:func:`~mmseg_segman.ops.selective_scan_chunked`) chooses per chunk between
a closed form and a step-by-step solve by looking at the data (``.any()`` on the decay
products). A tracer records one of those branches for the example input only, and
``torch.export`` refuses the data-dependent ``bool()`` outright. :func:`selective_scan_export`
computes the same recurrence (shapes and semantics of ``selective_scan_fn``, see
:mod:`mmseg_segman.ops.selective_scan`) with a fixed sequence of tensor operations that
depends only on the shapes; ``selective_scan_fn`` calls it while a graph is exported
(:func:`mmseg_segman.ops.export.is_exporting`). The steps around the recurrence (dt, the
input dt * B * u, the read-out) are those of the other implementations
(:mod:`.selective_scan_common`, out-of-place form).

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
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .export import is_exporting  # noqa: F401  (its former home; docs/deployment.md)
from .selective_scan_common import (
    ScanResult,
    check_args,
    compute_dtype,
    operands,
    read_out,
    scan_input,
    step_sizes,
)

__all__ = ['selective_scan_export', 'linear_scan_export']

# Steps per chunk: the segment-sum matrices hold chunk * length entries per (batch, channel,
# state); 16 keeps that small and the recursion at 3 levels for SegMAN at 512x512 (16384 tokens).
EXPORT_CHUNK = 16


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


def linear_scan_export(s: Tensor, b: Tensor, chunk: int = EXPORT_CHUNK) -> Tensor:
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


def selective_scan_export(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                          D: Optional[Tensor] = None, z: Optional[Tensor] = None,
                          delta_bias: Optional[Tensor] = None, delta_softplus: bool = False,
                          return_last_state: bool = False,
                          chunk: int = EXPORT_CHUNK) -> ScanResult:
    """Selective scan with static control flow; arguments and results of ``selective_scan_fn``.

    Computes in float32 (float64 for float64 ``u``) and returns ``u``'s dtype; with
    ``return_last_state`` also the final state (b, d, n). ``chunk`` sets the steps per chunk
    of :func:`linear_scan_export`. See the module docstring for the numeric limits.
    """
    check_args(u, delta, A, B, C, D, z, delta_bias)
    ct = compute_dtype(u)
    ops = operands(u, A, B, C, D, z, ct)
    dt, _ = step_sizes(delta, delta_bias, delta_softplus, ct)
    s = dt.unsqueeze(2) * ops.A[None, :, :, None]  # (b, d, n, l) log-decays
    x = linear_scan_export(s, scan_input(dt, ops), chunk)
    y, _ = read_out(x, ops)
    y = y.to(u.dtype)
    return (y, x[..., -1]) if return_last_state else y
