"""Reference backend: gather every query's window, then contract.

Each query's ``k x k`` keys (or values) are gathered with one constant index
(:func:`~.common.neighbors`) and multiplied with the query (or the weights). Short and
obviously right, differentiable through autograd, and made of static tensor operations only,
so graph exporters (ONNX, ``torch.export``) follow it: the dispatch uses it while exporting,
and the tests use it as the ground truth of the other backends. The price is memory: the
gathered neighborhoods hold ``k * k`` times the keys or values (and autograd saves them), which
is why training and eager inference use the tiled backend instead.
"""
from typing import Optional

from torch import Tensor

from .common import bias_table, key_slots, neighbors, split_form

__all__ = ['na2d_qk_reference', 'na2d_av_reference', 'na2d_reference']


def na2d_qk_reference(q: Tensor, k: Tensor, kernel_size: int, dilation: int = 1,
                      rpb: Optional[Tensor] = None) -> Tensor:
    """Logits of each query against its window's keys, plus ``rpb``; see ``na2d_qk``.

    Args:
        q (Tensor): Queries (B, heads, H, W, D).
        k (Tensor): Keys, same shape.
        kernel_size (int): Window edge k.
        dilation (int): Dilation d. Default: 1.
        rpb (Tensor, optional): Relative positional bias (heads, 2k-1, 2k-1). Default: None.

    Returns:
        Tensor: (B, heads, H, W, k*k).
    """
    attn = (neighbors(k, kernel_size, dilation) @ q.unsqueeze(-1)).squeeze(-1)
    if rpb is not None:
        H, W = q.shape[2:4]
        attn = attn + bias_table(rpb, H, W, kernel_size, dilation).to(attn.dtype)
    return attn


def na2d_av_reference(attn: Tensor, v: Tensor, kernel_size: int, dilation: int = 1) -> Tensor:
    """Weighted sum of each query's window values; see ``na2d_av``.

    Args:
        attn (Tensor): Weights (B, heads, H, W, k*k).
        v (Tensor): Values (B, heads, H, W, D).
        kernel_size (int): Window edge k.
        dilation (int): Dilation d. Default: 1.

    Returns:
        Tensor: (B, heads, H, W, D).
    """
    return (attn.unsqueeze(-2) @ neighbors(v, kernel_size, dilation)).squeeze(-2)


def na2d_reference(q: Tensor, k: Tensor, v: Tensor, kernel_size: int, dilation: int = 1,
                   rpb: Optional[Tensor] = None, scale: Optional[float] = None,
                   key_mask: Optional[Tensor] = None) -> Tensor:
    """``softmax(scale * q.k + rpb) @ v`` over each query's window; see ``na2d``.

    Args:
        q, k, v (Tensor): (B, heads, H, W, D).
        kernel_size (int): Window edge k.
        dilation (int): Dilation d. Default: 1.
        rpb (Tensor, optional): (heads, 2k-1, 2k-1). Default: None.
        scale (float, optional): Logit scale. Default: ``D ** -0.5``.
        key_mask (Tensor, optional): bool (H, W) or (B or 1, heads or 1, H, W); keys where it
            is False get no weight. Default: None.

    Returns:
        Tensor: (B, heads, H, W, D).
    """
    scale = q.shape[-1]**-0.5 if scale is None else scale
    if key_mask is not None and key_mask.dim() == 2:
        key_mask = key_mask[None, None]
    slots = None if key_mask is None else key_slots(key_mask, kernel_size, dilation)
    return split_form(na2d_qk_reference, na2d_av_reference, q, k, v, kernel_size, dilation, rpb,
                      scale, slots)
