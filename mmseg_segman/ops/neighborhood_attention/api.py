"""Public neighborhood-attention functions: argument checks and the choice of backend.

Backends (one module each):

- ``'reference'`` (:mod:`.reference`): gathers every window; static tensor operations only.
  Chosen while a graph is exported (:func:`mmseg_segman.ops.export.is_exporting`).
- ``'tiled'`` (:mod:`.tiled`): pure PyTorch with a hand-written backward; any device. The
  default, and the fallback when no CUDA kernel supports a call.
- ``'natten-fused'`` (:mod:`.natten_ops`): natten >= 0.20's fused op, on CUDA, when natten has
  a kernel of its own for the tensors and the call has no ``rpb`` and no ``key_mask`` (which
  that op does not take).
- ``'natten-split'`` (:mod:`.natten_ops`): natten < 0.20's split ops, on CUDA, odd kernels.
- ``'flex'`` (:mod:`.flex`): compiled flex attention, on CUDA with Triton.

:func:`na2d` tries them in the order natten-fused, natten-split, flex, tiled and takes the
first that supports the exact call; :func:`na2d_backend` returns that choice without running
anything. The split functions :func:`na2d_qk` / :func:`na2d_av` return the logits or take the
weights themselves, which only the reference, natten-split and tiled backends offer.
"""
from typing import Optional

import torch
from torch import Tensor

from ..export import compiling, is_exporting
from . import flex, natten_ops
from .common import key_slots, split_form
from .reference import na2d_av_reference, na2d_qk_reference
from .tiled import na2d_av_tiled, na2d_qk_tiled

__all__ = ['na2d_qk', 'na2d_av', 'na2d', 'na2d_backend', 'split_backend']


# ----------------------------------------------------------------------------- checks
def _check_kernel_dilation(kernel_size, dilation):
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 2:
        raise ValueError(f'kernel_size must be an int >= 2 (as in NATTEN), got {kernel_size!r}')
    if isinstance(dilation, bool) or not isinstance(dilation, int) or dilation < 1:
        raise ValueError(f'dilation must be an int >= 1, got {dilation!r}')


def _check_tensor(name, x, ref_shape=None):
    if not isinstance(x, Tensor):
        raise TypeError(f'{name} must be a torch.Tensor, got {type(x).__name__}')
    if x.dim() != 5:
        raise ValueError(f'{name} must be 5-D (batch, heads, H, W, dim), '
                         f'got shape {tuple(x.shape)}')
    if ref_shape is not None and x.shape[:4] != ref_shape:
        raise ValueError(f'{name} has shape {tuple(x.shape)}; its first four dims must match '
                         f'{tuple(ref_shape)} (batch, heads, H, W)')


def _check_spatial(H, W, kernel_size, dilation):
    for axis, length in (('H', H), ('W', W)):
        if length < kernel_size * dilation:
            raise ValueError(
                f'neighborhood attention needs {axis} >= kernel_size * dilation '
                f'({kernel_size} * {dilation} = {kernel_size * dilation}), got {axis}={length}: '
                'every dilation group must hold a full window (NATTEN raises here too); '
                'for smaller maps pad them and pass a key_mask to na2d')


def _check_rpb(rpb, heads, kernel_size):
    if rpb is None:
        return
    if not isinstance(rpb, Tensor):
        raise TypeError(f'rpb must be a torch.Tensor or None, got {type(rpb).__name__}')
    expected = (heads, 2 * kernel_size - 1, 2 * kernel_size - 1)
    if tuple(rpb.shape) != expected:
        raise ValueError(f'rpb must have shape (heads, 2k-1, 2k-1) = {expected}, '
                         f'got {tuple(rpb.shape)}')


def _check_qk(q, k, kernel_size, dilation, rpb):
    _check_kernel_dilation(kernel_size, dilation)
    _check_tensor('q', q)
    _check_tensor('k', k, q.shape[:4])
    if k.shape[-1] != q.shape[-1]:
        raise ValueError(f'q and k must have the same head dim, '
                         f'got {q.shape[-1]} and {k.shape[-1]}')
    _check_spatial(q.shape[2], q.shape[3], kernel_size, dilation)
    _check_rpb(rpb, q.shape[1], kernel_size)


def _key_mask_4d(key_mask, q):
    """Check ``key_mask`` against q (B, heads, H, W, D); return it as (b, h, H, W)."""
    if not isinstance(key_mask, Tensor) or key_mask.dtype != torch.bool:
        kind = key_mask.dtype if isinstance(key_mask, Tensor) else type(key_mask).__name__
        raise TypeError(f'key_mask must be a bool tensor, got {kind}')
    B, heads, H, W = q.shape[:4]
    mask = key_mask[None, None] if key_mask.dim() == 2 else key_mask
    if (mask.dim() != 4 or mask.shape[2:] != (H, W) or mask.shape[0] not in (1, B)
            or mask.shape[1] not in (1, heads)):
        raise ValueError(f'key_mask must have shape (H, W) = {(H, W)} or (B or 1, heads or 1, '
                         f'H, W) = ({B} or 1, {heads} or 1, {H}, {W}), '
                         f'got {tuple(key_mask.shape)}')
    if mask.device != q.device:
        raise ValueError(f'key_mask is on {mask.device} but q is on {q.device}')
    return mask


# ----------------------------------------------------------------------------- dispatch
def _on_cuda(x: Tensor) -> bool:
    """Whether the CUDA backends may be tried (a function, so tests can pretend on CPU)."""
    return x.is_cuda


def na2d_backend(q: Tensor, k: Tensor, v: Tensor, kernel_size: int, dilation: int = 1,
                 rpb: Optional[Tensor] = None, key_mask: Optional[Tensor] = None) -> str:
    """The backend :func:`na2d` runs for these arguments (see the module docstring).

    Arguments as :func:`na2d`; they are not checked here.

    Returns:
        str: ``'reference'``, ``'natten-fused'``, ``'natten-split'``, ``'flex'`` or
        ``'tiled'``.
    """
    if is_exporting():
        return 'reference'
    if not _on_cuda(q):
        return 'tiled'
    if rpb is None and key_mask is None and natten_ops.fused_supports(q, k, v):
        return 'natten-fused'
    if kernel_size % 2 and natten_ops.split_ops() is not None:
        return 'natten-split'
    if flex.supports(q):
        return 'flex'
    return 'tiled'


def split_backend(x: Tensor, kernel_size: int) -> str:
    """The backend :func:`na2d_qk` / :func:`na2d_av` run for ``x`` (q or v) and ``kernel_size``.

    Returns:
        str: ``'reference'``, ``'natten-split'`` or ``'tiled'``.
    """
    if is_exporting():
        return 'reference'
    if _on_cuda(x) and kernel_size % 2 and natten_ops.split_ops() is not None:
        return 'natten-split'
    return 'tiled'


def _split_ops(backend):
    """(qk, av) with the signatures ``qk(q, k, kernel_size, dilation, rpb)`` and
    ``av(attn, v, kernel_size, dilation)`` for a backend that has split ops."""
    if backend == 'reference':
        return na2d_qk_reference, na2d_av_reference
    if backend == 'natten-split':
        qk, av = natten_ops.split_ops()
        return (lambda q, k, kernel_size, dilation, rpb: qk(q, k, kernel_size, dilation, rpb=rpb),
                av)
    return na2d_qk_tiled, na2d_av_tiled


# ----------------------------------------------------------------------------- public API
def na2d_qk(q: Tensor, k: Tensor, kernel_size: int, dilation: int = 1,
            rpb: Optional[Tensor] = None) -> Tensor:
    """Attention logits of every query against its neighborhood's keys.

    Args:
        q (Tensor): Queries (B, heads, H, W, D), already scaled if a scale is wanted.
        k (Tensor): Keys, same shape as ``q``.
        kernel_size (int): Window edge k (>= 2).
        dilation (int): Dilation d; needs H, W >= k * d. Default: 1.
        rpb (Tensor, optional): Relative positional bias (heads, 2k-1, 2k-1), added to the
            logits. Default: None.

    Returns:
        Tensor: Logits (B, heads, H, W, k*k), window entries in row-major order.
    """
    _check_qk(q, k, kernel_size, dilation, rpb)
    qk, _ = _split_ops(split_backend(q, kernel_size))
    return qk(q, k, kernel_size, dilation, rpb)


def na2d_av(attn: Tensor, v: Tensor, kernel_size: int, dilation: int = 1) -> Tensor:
    """Sum of each query's neighborhood values weighted by ``attn``.

    Args:
        attn (Tensor): Weights (B, heads, H, W, k*k), as returned by :func:`na2d_qk`.
        v (Tensor): Values (B, heads, H, W, D).
        kernel_size (int): Window edge k (>= 2).
        dilation (int): Dilation d; needs H, W >= k * d. Default: 1.

    Returns:
        Tensor: Output (B, heads, H, W, D).
    """
    _check_kernel_dilation(kernel_size, dilation)
    _check_tensor('v', v)
    _check_tensor('attn', attn, v.shape[:4])
    if attn.shape[-1] != kernel_size * kernel_size:
        raise ValueError(f'attn must have kernel_size**2 = {kernel_size * kernel_size} entries '
                         f'in its last dim, got {attn.shape[-1]}')
    _check_spatial(v.shape[2], v.shape[3], kernel_size, dilation)
    _, av = _split_ops(split_backend(v, kernel_size))
    return av(attn, v, kernel_size, dilation)


def na2d(q: Tensor, k: Tensor, v: Tensor, kernel_size: int, dilation: int = 1,
         rpb: Optional[Tensor] = None, scale: Optional[float] = None,
         key_mask: Optional[Tensor] = None) -> Tensor:
    """Neighborhood attention ``softmax(scale * q.k + rpb) @ v`` on the best backend.

    Args:
        q, k, v (Tensor): (B, heads, H, W, D).
        kernel_size (int): Window edge k (>= 2).
        dilation (int): Dilation d; needs H, W >= k * d. Default: 1.
        rpb (Tensor, optional): Relative positional bias (heads, 2k-1, 2k-1). Default: None.
        scale (float, optional): Logit scale. Default: ``D ** -0.5``.
        key_mask (Tensor, optional): bool, (H, W) or (B or 1, heads or 1, H, W): keys where
            it is False get no weight from any query (e.g. padding that brings a map smaller
            than the kernel up to ``kernel_size``). Every query must keep at least one key of
            its window. Default: None.

    Returns:
        Tensor: Output (B, heads, H, W, D).
    """
    _check_qk(q, k, kernel_size, dilation, rpb)
    _check_tensor('v', v, q.shape[:4])
    scale = q.shape[-1]**-0.5 if scale is None else scale
    slots = None
    if key_mask is not None:
        key_mask = _key_mask_4d(key_mask, q)
        slots = key_slots(key_mask, kernel_size, dilation)
        # A host sync: checked in eager calls only (not while exporting or compiling).
        if not is_exporting() and not compiling() and not bool(slots.any(-1).all()):
            raise ValueError('key_mask leaves some query with no key in its window, whose '
                             'softmax would be undefined; keep at least one key per window')
    backend = na2d_backend(q, k, v, kernel_size, dilation, rpb, key_mask)
    if backend == 'natten-fused':
        return natten_ops.na2d_fused(q, k, v, kernel_size, dilation, scale)
    if backend == 'flex':
        return flex.na2d_flex(q, k, v, kernel_size, dilation, rpb, scale, key_mask)
    qk, av = _split_ops(backend)
    return split_form(qk, av, q, k, v, kernel_size, dilation, rpb, scale, slots)
