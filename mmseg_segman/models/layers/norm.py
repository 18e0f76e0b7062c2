"""Channel LayerNorm for channels-first maps, shared by every family."""
import torch
import torch.nn as nn
import torch.nn.functional as F


def _channel_layer_norm(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    """LayerNorm ``norm`` over dim 1 of a (B, C, H, W) map; the result keeps the
    channels-last memory order of the computation (a permuted view)."""
    y = F.layer_norm(x.permute(0, 2, 3, 1), norm.normalized_shape, norm.weight, norm.bias,
                     norm.eps)
    return y.permute(0, 3, 1, 2)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) map.

    A subclass of :class:`torch.nn.LayerNorm`, so its parameters are ``weight`` and ``bias``
    of shape (C,), the keys of the official checkpoints of all three families.

    Args:
        num_channels (int): C.
        eps (float): Added to the variance (SegMAN and LRFormer use 1e-6, SegNeXt PyTorch's
            default 1e-5). Default: 1e-6.

    Shape:
        - Input: (B, C, H, W). Output: (B, C, H, W), contiguous.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__(num_channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f'LayerNorm2d expects x of shape (B, C, H, W), got {tuple(x.shape)}')
        return _channel_layer_norm(x, self).contiguous()


def apply_channel_norm(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a norm built by ``build_norm_layer`` to a (B, C, H, W) map.

    A plain :class:`torch.nn.LayerNorm` (``type='LN'``) normalises the last dimension, so it
    is applied over channels here; 2-D norms (BN, GN, :class:`LayerNorm2d`) are called as they
    are. The LayerNorm result is returned as a permuted view (no copy): its consumers (linear
    layers, convolutions) accept either memory order.
    """
    if isinstance(norm, nn.LayerNorm) and not isinstance(norm, LayerNorm2d):
        return _channel_layer_norm(x, norm)
    return norm(x)
