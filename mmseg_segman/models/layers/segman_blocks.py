"""SegMAN-specific pieces of the LASS token mixer: 2-D RoPE and neighbourhood attention on
maps of any size.

The blocks shared with other families (channel LayerNorm, the depthwise-conv FFN, layer scale)
are in :mod:`.norm`, :mod:`.ffn` and :mod:`.layer_scale`.
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from mmseg_segman.ops import na2d
from mmseg_segman.ops.export import caches_allowed


class RoPE2d(nn.Module):
    """2-D rotary position embedding (RMT style) for attention heads of size ``head_dim``.

    The first half of each head's channels rotates with the row index, the second half with the
    column index. Each half holds ``head_dim // 4`` frequencies
    ``1 / 10000 ** linspace(0, 1, head_dim // 4)``, each used for one pair of adjacent channels.

    Args:
        head_dim (int): Channels per head; must be divisible by 4.

    The frequencies are the persistent buffer ``angle`` of shape (head_dim // 2,) (each value
    twice), as in the official checkpoints.
    """

    def __init__(self, head_dim: int) -> None:
        super().__init__()
        if head_dim <= 0 or head_dim % 4:
            raise ValueError(f'RoPE2d needs head_dim divisible by 4, got head_dim={head_dim}')
        angle = 1.0 / 10000**torch.linspace(0, 1, head_dim // 4)
        self.register_buffer('angle', angle.repeat_interleave(2))
        self._tables = {}  # (height, width, angle's identity and version) -> (sin, cos)

    def forward(self, height: int, width: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(sin, cos)``, each (height, width, head_dim), for :func:`apply_rope2d`.

        The tables depend on the size only and are cached per size (the last few sizes);
        callers must not modify them in place."""
        angle = self.angle
        if not caches_allowed():
            return self._compute(height, width)
        key = (height, width, angle.device, angle.dtype, angle.data_ptr(), angle._version)
        tables = self._tables.get(key)
        if tables is None:
            if len(self._tables) >= 4:
                self._tables.clear()
            tables = self._tables[key] = self._compute(height, width)
        return tables

    def _compute(self, height: int, width: int) -> Tuple[torch.Tensor, torch.Tensor]:
        rows = torch.arange(height, device=self.angle.device, dtype=self.angle.dtype)
        cols = torch.arange(width, device=self.angle.device, dtype=self.angle.dtype)
        theta_h = (rows[:, None] * self.angle)[:, None, :].expand(height, width, -1)
        theta_w = (cols[:, None] * self.angle)[None, :, :].expand(height, width, -1)
        theta = torch.cat([theta_h, theta_w], dim=-1)
        return theta.sin(), theta.cos()


def apply_rope2d(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """Rotate each adjacent channel pair ``(x0, x1)`` of ``x`` by the angle in ``sin``/``cos``.

    Args:
        x (Tensor): (..., H, W, head_dim).
        sin (Tensor): (H, W, head_dim) from :class:`RoPE2d`.
        cos (Tensor): (H, W, head_dim).

    Returns:
        Tensor: same shape as ``x``; pair ``(x0, x1)`` becomes
        ``(x0 cos - x1 sin, x1 cos + x0 sin)``.
    """
    # (x1 sin, x0 sin) with the first negated is (-x1 sin, x0 sin) bitwise; formed in one
    # buffer (the pair swap's copy) instead of a negated copy, a stack and a product.
    rotated = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2).mul_(sin)
    rotated.unflatten(-1, (-1, 2))[..., 0].neg_()
    return (x * cos).add_(rotated)


def neighborhood_attention(q: torch.Tensor,
                           k: torch.Tensor,
                           v: torch.Tensor,
                           kernel_size: int,
                           rpb: Optional[torch.Tensor] = None) -> torch.Tensor:
    """2-D neighborhood attention that also accepts maps smaller than the kernel.

    NATTEN (and the official model) rejects an axis shorter than ``kernel_size``. Here such an
    axis is zero-padded at its end to ``kernel_size`` and the padded keys are masked out, so each
    query attends to every real position of that axis, with the relative-position bias of the
    true offset. This is the NATTEN window rule with the window clipped to the map; maps of at
    least ``kernel_size`` take the plain NATTEN path unchanged. Both go through
    :func:`mmseg_segman.ops.na2d`, which picks the fastest backend that supports the call.

    Args:
        q (Tensor): (B, heads, H, W, head_dim), already scaled.
        k (Tensor): (B, heads, H, W, head_dim).
        v (Tensor): (B, heads, H, W, head_dim).
        kernel_size (int): Odd neighborhood size.
        rpb (Tensor, optional): (heads, 2*kernel_size-1, 2*kernel_size-1) bias.

    Returns:
        Tensor: (B, heads, H, W, head_dim).
    """
    height, width = q.shape[2:4]
    pad_h, pad_w = max(kernel_size - height, 0), max(kernel_size - width, 0)
    key_mask = None
    if pad_h or pad_w:
        q, k, v = (F.pad(t, (0, 0, 0, pad_w, 0, pad_h)) for t in (q, k, v))
        key_mask = torch.zeros(height + pad_h, width + pad_w, dtype=torch.bool, device=q.device)
        key_mask[:height, :width] = True
    # q arrives scaled (after RoPE), hence scale=1.
    x = na2d(q, k, v, kernel_size, rpb=rpb, scale=1.0, key_mask=key_mask)
    return x[:, :, :height, :width]


def heads_to_channels(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, H, W, head_dim) -> (B, heads*head_dim, H, W), head-major channels."""
    b, n, h, w, c = x.shape
    return x.permute(0, 1, 4, 2, 3).reshape(b, n * c, h, w)
