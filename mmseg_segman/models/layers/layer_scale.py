"""Per-channel layer scale, in the two storage forms the official checkpoints use."""
import torch
import torch.nn as nn


def scale_channels(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x * weight`` per channel of a (B, C, H, W) map; ``weight`` has C elements in any
    shape ((C,) or (C, 1, 1, 1))."""
    return x * weight.view(1, -1, 1, 1)


def layer_scale_parameter(num_channels: int, init_value: float) -> nn.Parameter:
    """A (C,) layer-scale vector filled with ``init_value`` (LRFormer's and SegNeXt's
    ``layer_scale_1/2``, stored directly on the block)."""
    return nn.Parameter(torch.full((num_channels, ), float(init_value)))


class LayerScale2d(nn.Module):
    """Per-channel affine scale ``x * weight + bias`` of a (B, C, H, W) map (SegMAN's form).

    The official SegMAN code stores it as a depthwise 1x1 conv: ``weight`` has shape
    (C, 1, 1, 1) and ``bias`` (C,); the shapes are kept so its checkpoints load unchanged.

    Args:
        num_channels (int): C.
        init_value (float): Initial value of every weight. Default: 1e-6.
    """

    def __init__(self, num_channels: int, init_value: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((num_channels, 1, 1, 1), float(init_value)))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return scale_channels(x, self.weight) + self.bias.view(1, -1, 1, 1)
