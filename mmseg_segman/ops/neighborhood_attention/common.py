"""Window geometry of 2-D neighborhood attention (NATTEN's rule) and pieces every backend shares.

Boundary rule (as NATTEN): with dilation ``d`` an axis splits into ``d`` interleaved groups
(positions with equal ``index % d``). Inside its group, a query at group position ``p``
attends to the ``k`` group positions starting at ``clamp(p - k // 2, 0, group_len - k)``:
windows shift inward at the borders, there is no zero padding. Every group must therefore
hold at least ``k`` positions, i.e. each axis needs ``length >= kernel_size * dilation``.
The relative positional bias ``rpb`` (heads, 2k-1, 2k-1) is indexed on each axis by
``(key - query) / d + k - 1``. A query's ``k * k`` window entries are ordered row-major.
"""
from typing import Callable, Optional, Tuple

import torch
from torch import Tensor

__all__ = [
    'group_window', 'window_start', 'window_keys', 'neighbors', 'bias_table', 'key_slots',
    'split_form'
]


def group_window(pos: Tensor, length: int, kernel_size: int,
                 dilation: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Where the windows of positions ``pos`` lie on one axis of ``length``.

    Works elementwise on any integer tensor ``pos`` (also inside flex attention's mask
    functions).

    Returns:
        tuple: ``(residue, group_pos, start)``: each position's dilation group
        (``pos % d``), its index inside the group, and the group index of its window's
        first key.
    """
    residue, group_pos = pos % dilation, pos // dilation
    group_len = (length - residue + dilation - 1) // dilation
    start = torch.minimum((group_pos - kernel_size // 2).clamp(min=0), group_len - kernel_size)
    return residue, group_pos, start


def window_start(length: int, kernel_size: int, device: torch.device) -> Tensor:
    """First key of each position's window on an undilated axis: (length,)."""
    return group_window(torch.arange(length, device=device), length, kernel_size, 1)[2]


def window_keys(length: int, kernel_size: int, dilation: int, device: torch.device) -> Tensor:
    """Positions of each position's window keys on one (dilated) axis: (length, k)."""
    residue, _, start = group_window(torch.arange(length, device=device), length, kernel_size,
                                     dilation)
    offsets = torch.arange(kernel_size, device=device)
    return (start[:, None] + offsets) * dilation + residue[:, None]


def _bias_index(length: int, kernel_size: int, dilation: int, device) -> Tensor:
    """rpb index ``(key - query) / d + k - 1`` of each position's window keys: (length, k)."""
    _, group_pos, start = group_window(torch.arange(length, device=device), length,
                                       kernel_size, dilation)
    offsets = torch.arange(kernel_size, device=device)
    return start[:, None] + offsets - group_pos[:, None] + kernel_size - 1


def bias_table(rpb: Tensor, H: int, W: int, kernel_size: int, dilation: int) -> Tensor:
    """rpb gathered per query: (heads, H, W, k*k); one axis at a time keeps indices small."""
    rows = _bias_index(H, kernel_size, dilation, rpb.device)
    cols = _bias_index(W, kernel_size, dilation, rpb.device)
    bias = rpb[:, rows][:, :, :, cols]  # heads, H, k, W, k
    return bias.permute(0, 1, 3, 2, 4).reshape(rpb.shape[0], H, W, kernel_size * kernel_size)


def neighbors(x: Tensor, kernel_size: int, dilation: int) -> Tensor:
    """(B, heads, H, W, C) -> (B, heads, H, W, k*k, C): each query's window entries.

    One ``index_select`` with a constant index: plain tensor operations that any graph
    exporter follows, at k*k times the memory of ``x``.
    """
    B, heads, H, W, C = x.shape
    rows = window_keys(H, kernel_size, dilation, x.device)  # (H, k)
    cols = window_keys(W, kernel_size, dilation, x.device)  # (W, k)
    index = (rows[:, None, :, None] * W + cols[None, :, None, :]).flatten()
    picked = x.reshape(B, heads, H * W, C).index_select(2, index)
    return picked.view(B, heads, H, W, kernel_size * kernel_size, C)


def key_slots(key_mask: Tensor, kernel_size: int, dilation: int) -> Tensor:
    """Key mask (b, h, H, W) -> which window entries of each query may be attended to:
    (b, h, H, W, k*k), for the backends that mask the logits."""
    return neighbors(key_mask[..., None], kernel_size, dilation).squeeze(-1)


def split_form(qk: Callable, av: Callable, q: Tensor, k: Tensor, v: Tensor, kernel_size: int,
               dilation: int, rpb: Optional[Tensor], scale: float,
               slots: Optional[Tensor]) -> Tensor:
    """``softmax(scale * q.k + rpb) @ v`` from a backend's split ops ``qk`` and ``av``.

    ``qk(q, k, kernel_size, dilation, rpb)`` returns the logits (B, heads, H, W, k*k);
    ``av(attn, v, kernel_size, dilation)`` the weighted values. Window entries where
    ``slots`` (from :func:`key_slots`) is False get no weight.
    """
    attn = qk(q if scale == 1.0 else q * scale, k, kernel_size, dilation, rpb)
    if slots is not None:
        attn = attn.masked_fill(~slots, float('-inf'))
    return av(attn.softmax(dim=-1), v, kernel_size, dilation)
