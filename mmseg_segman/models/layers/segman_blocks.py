"""Small building blocks shared by SegMAN's encoder (LASS blocks) and decoder (MMSCopE block).

All blocks work on channels-first maps (B, C, H, W) and keep the parameter names of the official
code, so official checkpoints load key for key.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_activation_layer
from mmengine.model import BaseModule


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) map.

    Args:
        num_channels (int): C.
        eps (float): Added to the variance. SegMAN uses 1e-6 everywhere. Default: 1e-6.

    Shape:
        - Input: (B, C, H, W). Output: (B, C, H, W).
    """

    def __init__(self, num_channels, eps=1e-6):
        super().__init__(num_channels, eps=eps)

    def forward(self, x):
        if x.dim() != 4:
            raise ValueError(f'LayerNorm2d expects x of shape (B, C, H, W), got {tuple(x.shape)}')
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                         self.eps)
        return x.permute(0, 3, 1, 2).contiguous()


class ConvFFN(BaseModule):
    """Convolutional feed-forward network: 1x1 conv -> act -> (h + DW3x3(h)) -> 1x1 conv.

    The depthwise conv is residual inside the hidden layer (it adds local context without
    replacing the pointwise features).

    Args:
        embed_dims (int): Input and output channels C.
        hidden_dims (int): Hidden channels.
        act_cfg (dict): Activation after ``fc1``. Default: dict(type='GELU').
        init_cfg (dict, optional): Initialisation config. Default: None.

    Shape:
        - Input: (B, C, H, W). Output: (B, C, H, W).
    """

    def __init__(self, embed_dims, hidden_dims, act_cfg=dict(type='GELU'), init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.fc1 = nn.Conv2d(embed_dims, hidden_dims, kernel_size=1)
        self.act = build_activation_layer(act_cfg)
        self.dwconv = nn.Conv2d(hidden_dims, hidden_dims, kernel_size=3, padding=1,
                                groups=hidden_dims)
        self.fc2 = nn.Conv2d(hidden_dims, embed_dims, kernel_size=1)

    def forward(self, x):
        x = self.act(self.fc1(x))
        x = x + self.dwconv(x)
        return self.fc2(x)


class LayerScale2d(nn.Module):
    """Per-channel affine scale ``x * weight + bias`` of a (B, C, H, W) map.

    The official code stores it as a depthwise 1x1 conv: ``weight`` has shape (C, 1, 1, 1) and
    ``bias`` (C,); the shapes are kept so its checkpoints load unchanged.

    Args:
        num_channels (int): C.
        init_value (float): Initial value of every weight. Default: 1e-6.
    """

    def __init__(self, num_channels, init_value=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.full((num_channels, 1, 1, 1), float(init_value)))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x):
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


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

    def __init__(self, head_dim):
        super().__init__()
        if head_dim <= 0 or head_dim % 4:
            raise ValueError(f'RoPE2d needs head_dim divisible by 4, got head_dim={head_dim}')
        angle = 1.0 / 10000**torch.linspace(0, 1, head_dim // 4)
        self.register_buffer('angle', angle.repeat_interleave(2))

    def forward(self, height, width):
        """Returns ``(sin, cos)``, each (height, width, head_dim), for :func:`apply_rope2d`."""
        rows = torch.arange(height, device=self.angle.device, dtype=self.angle.dtype)
        cols = torch.arange(width, device=self.angle.device, dtype=self.angle.dtype)
        theta_h = (rows[:, None] * self.angle)[:, None, :].expand(height, width, -1)
        theta_w = (cols[:, None] * self.angle)[None, :, :].expand(height, width, -1)
        theta = torch.cat([theta_h, theta_w], dim=-1)
        return theta.sin(), theta.cos()


def apply_rope2d(x, sin, cos):
    """Rotate each adjacent channel pair ``(x0, x1)`` of ``x`` by the angle in ``sin``/``cos``.

    Args:
        x (Tensor): (..., H, W, head_dim).
        sin (Tensor): (H, W, head_dim) from :class:`RoPE2d`.
        cos (Tensor): (H, W, head_dim).

    Returns:
        Tensor: same shape as ``x``; pair ``(x0, x1)`` becomes
        ``(x0 cos - x1 sin, x1 cos + x0 sin)``.
    """
    pairs = x.unflatten(-1, (-1, 2))
    rotated = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
    return x * cos + rotated * sin
