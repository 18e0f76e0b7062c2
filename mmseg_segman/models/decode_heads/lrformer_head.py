"""LRFormer decode head (official name ``LRHead``)."""
from typing import List, Sequence, Union

import torch
from mmcv.cnn import ConvModule
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.utils import resize
from mmseg.registry import MODELS

from ..layers.lrformer_blocks import LRFormerBlock


@MODELS.register_module()
class LRHead(BaseDecodeHead):
    """LRFormer decode head.

    The selected features (by default strides 8, 16 and 32) are resized to the first one and
    concatenated; a 1x1 ``squeeze1`` and an LRFormer block (``fuse_block1``) fuse them; the
    coarsest feature is concatenated again, squeezed (``squeeze2``) and fused by a second block
    before the classifier. The fuse blocks use the head's norm (BatchNorm), a 1x1-conv query
    pooled to ``q_pooled_size`` (keys/values from a [22, 16, 12, 8] pyramid at 32), no
    key/value convs, and layer scale.

    Args:
        num_heads (int): Attention heads of the fuse blocks. Default: 8.
        mlp_ratio (float): FFN expansion of the fuse blocks. Default: 4.
        q_pooled_size (int): Query cells on the short side. Default: 32.
        qkv_bias (bool): Bias of the q/kv projections. Default: True.
        **kwargs: :class:`BaseDecodeHead` arguments (``in_channels`` and ``in_index`` must be
            sequences; ``input_transform`` is always ``'multiple_select'``).

    Shape:
        - inputs: list of (B, C_i, H_i, W_i), indexed by ``in_index``.
        - output: (B, num_classes, H_0, W_0), the size of the first selected input.
    """
    layer_scale_init_value = 1e-6

    def __init__(self,
                 num_heads: int = 8,
                 mlp_ratio: float = 4,
                 q_pooled_size: int = 32,
                 qkv_bias: bool = True,
                 init_cfg: Union[dict, List[dict]] = [
                     dict(type='TruncNormal', std=.02, bias=0., layer='Linear'),
                     dict(type='Normal', std=0.01, override=dict(name='conv_seg'))
                 ],
                 **kwargs) -> None:
        if kwargs.get('input_transform', 'multiple_select') != 'multiple_select':
            raise ValueError("LRHead fuses several levels: input_transform must be "
                             f"'multiple_select', got {kwargs['input_transform']!r}")
        kwargs['input_transform'] = 'multiple_select'
        for key in ('in_channels', 'in_index'):
            if not isinstance(kwargs.get(key), Sequence):
                raise TypeError(f'LRHead needs {key} as a list (one entry per fused level), '
                                f'got {kwargs.get(key)!r}')
        super().__init__(init_cfg=init_cfg, **kwargs)
        if self.norm_cfg is None:
            raise ValueError('LRHead needs norm_cfg (e.g. dict(type=\'SyncBN\')): its fuse '
                             'blocks are normalised with it')
        conv_kwargs = dict(conv_cfg=self.conv_cfg, norm_cfg=self.norm_cfg, act_cfg=self.act_cfg)
        self.squeeze1 = ConvModule(sum(self.in_channels), self.channels, 1, **conv_kwargs)
        self.squeeze2 = ConvModule(self.channels + self.in_channels[-1], self.channels, 1,
                                   **conv_kwargs)
        block_kwargs = dict(
            embed_dims=self.channels,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            q_pooled_size=q_pooled_size,
            qkv_bias=qkv_bias,
            param_layout='head',
            norm_cfg=self.norm_cfg,
            layer_scale_init_value=self.layer_scale_init_value)
        self.fuse_block1 = LRFormerBlock(**block_kwargs)
        self.fuse_block2 = LRFormerBlock(**block_kwargs)

    def forward(self, inputs: List[torch.Tensor]) -> torch.Tensor:
        """
        Args:
            inputs (list[Tensor]): Backbone features.

        Returns:
            Tensor: (B, num_classes, H, W) logits at the first selected feature's size.
        """
        feats = self._transform_inputs(inputs)
        feats = [
            resize(f, size=feats[0].shape[2:], mode='bilinear',
                   align_corners=self.align_corners) for f in feats
        ]
        x = self.fuse_block1(self.squeeze1(torch.cat(feats, dim=1)))
        x = self.fuse_block2(self.squeeze2(torch.cat([x, feats[-1]], dim=1)))
        return self.cls_seg(x)
