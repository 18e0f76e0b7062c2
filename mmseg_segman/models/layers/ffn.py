"""The depthwise-convolution feed-forward network shared by SegMAN and LRFormer."""
from typing import Optional

import torch
import torch.nn as nn
from mmcv.cnn import build_activation_layer
from mmengine.model import BaseModule


class DepthwiseConvFFN(BaseModule):
    """``fc2(h + DWConv3x3(h))`` with ``h = act(fc1(x))``; all convs channels-first.

    The depthwise conv is residual inside the hidden layer: it adds local context without
    replacing the pointwise features. SegMAN (``ConvFFN``) and LRFormer (``IRB``) use this same
    function and differ only in the name of the depthwise conv in their checkpoints, hence
    ``dw_name``.

    Args:
        embed_dims (int): Input and output channels C.
        hidden_dims (int): Hidden channels.
        act_cfg (dict): Activation after ``fc1``. Default: dict(type='GELU').
        dw_name (str): Attribute (and checkpoint key) of the depthwise conv: ``'dwconv'``
            (SegMAN) or ``'conv'`` (LRFormer). Default: 'dwconv'.
        init_cfg (dict, optional): Initialisation config. Default: None.

    Shape:
        - Input: (B, C, H, W). Output: (B, C, H, W).
    """

    def __init__(self,
                 embed_dims: int,
                 hidden_dims: int,
                 act_cfg: dict = dict(type='GELU'),
                 dw_name: str = 'dwconv',
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if dw_name in ('fc1', 'act', 'fc2') or not dw_name.isidentifier():
            raise ValueError(f'dw_name must be a free attribute name, got {dw_name!r}')
        self.fc1 = nn.Conv2d(embed_dims, hidden_dims, kernel_size=1)
        self.act = build_activation_layer(act_cfg)
        # Registration order fc1, <dw>, fc2 is the order of the official state dicts.
        self.dw_name = dw_name
        self.add_module(dw_name, nn.Conv2d(hidden_dims, hidden_dims, kernel_size=3, padding=1,
                                           groups=hidden_dims))
        self.fc2 = nn.Conv2d(hidden_dims, embed_dims, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.fc1(x))
        return self.fc2(x + getattr(self, self.dw_name)(x))
