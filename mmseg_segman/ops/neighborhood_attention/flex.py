"""Flex-attention backend: PyTorch's ``torch.nn.attention.flex_attention`` (CUDA, compiled).

A block mask restricts each query to its NATTEN window (and to the keys a key mask keeps);
``rpb`` enters as a score modification. Compiled, flex attention skips the masked blocks, so it
never forms the full H*W x H*W scores; it needs Triton, hence CUDA. Eager flex attention (used
on other devices, i.e. by the tests on CPU) forms them all and is only good for checking.
"""
import functools
from typing import Optional

import torch
from torch import Tensor

from .common import group_window

__all__ = ['supports', 'na2d_flex']

_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _flex():
    try:
        from torch.nn.attention import flex_attention
    except ImportError:
        return None
    return flex_attention


def _has_triton() -> bool:
    try:
        from torch.utils._triton import has_triton
    except ImportError:
        return False
    return has_triton()


def supports(q: Tensor) -> bool:
    """Whether compiled flex attention can run on ``q``'s device and dtype."""
    return q.is_cuda and q.dtype in _DTYPES and _flex() is not None and _has_triton()


@functools.lru_cache(maxsize=None)
def _compiled_flex():
    return torch.compile(_flex().flex_attention)


def _axis(query_pos, key_pos, length, kernel_size, dilation):
    """Whether ``key_pos`` is in the window of ``query_pos`` on one axis, and its rpb index."""
    residue, query_group, start = group_window(query_pos, length, kernel_size, dilation)
    key_group = key_pos // dilation
    inside = ((key_pos % dilation == residue) & (key_group >= start) &
              (key_group < start + kernel_size))
    bias_index = (key_group - query_group + kernel_size - 1).clamp(0, 2 * kernel_size - 2)
    return inside, bias_index


def na2d_flex(q: Tensor, k: Tensor, v: Tensor, kernel_size: int, dilation: int,
              rpb: Optional[Tensor], scale: float, key_mask: Optional[Tensor] = None) -> Tensor:
    """``na2d`` through flex attention; compiled on CUDA, eager elsewhere.

    Args:
        q, k, v (Tensor): (B, heads, H, W, D).
        kernel_size (int): Window edge k.
        dilation (int): Dilation d.
        rpb (Tensor, optional): (heads, 2k-1, 2k-1).
        scale (float): Logit scale.
        key_mask (Tensor, optional): bool (b, h, H, W) with b in {1, B}, h in {1, heads}.

    Returns:
        Tensor: (B, heads, H, W, D).
    """
    flex = _flex()
    B, heads, H, W, D = q.shape

    def axes(q_idx, kv_idx):
        rows = _axis(q_idx // W, kv_idx // W, H, kernel_size, dilation)
        cols = _axis(q_idx % W, kv_idx % W, W, kernel_size, dilation)
        return rows, cols

    keys = None
    if key_mask is not None:
        keys = key_mask.expand(B, heads, H, W).reshape(B, heads, H * W)

    def mask_mod(b, h, q_idx, kv_idx):
        (in_rows, _), (in_cols, _) = axes(q_idx, kv_idx)
        inside = in_rows & in_cols
        return inside if keys is None else inside & keys[b, h, kv_idx]

    score_mod = None
    if rpb is not None:
        def score_mod(score, b, h, q_idx, kv_idx):
            (_, bias_row), (_, bias_col) = axes(q_idx, kv_idx)
            return score + rpb[h, bias_row, bias_col].to(score.dtype)

    mask_batch, mask_heads = (None, None) if keys is None else (B, heads)
    block_mask = flex.create_block_mask(mask_mod, mask_batch, mask_heads, H * W, H * W,
                                        device=q.device)
    attend = _compiled_flex() if q.is_cuda else flex.flex_attention
    out = attend(*(x.reshape(B, heads, H * W, D) for x in (q, k, v)), score_mod=score_mod,
                 block_mask=block_mask, scale=scale)
    return out.view(B, heads, H, W, D)
