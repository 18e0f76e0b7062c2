"""LRFormer backbone (Wu et al., "Low-Resolution Self-Attention for Semantic Segmentation",
TPAMI 2025).

Every block computes self-attention in a small, fixed-size space: queries are average-pooled to
16 cells on the short side (aspect ratio kept), keys/values come from a pooled pyramid
(11/8/6/4 on the short side), and the attended map is upsampled bilinearly back to the full
resolution. The attention cost therefore does not grow with the input size.

Module and parameter names follow the official implementation (yuhuan-wu/LRFormer) key for key,
so its released checkpoints load unchanged. The blocks live in
:mod:`mmseg_segman.models.layers.lrformer_blocks`, shared with
:class:`~mmseg_segman.models.decode_heads.LRHead`.
"""
import warnings
from typing import List, Optional, Sequence, Union

import torch
import torch.nn as nn
from mmcv.cnn import build_activation_layer, build_norm_layer
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_init
from mmseg.registry import MODELS

from ..layers.lrformer_blocks import (
    BASE_Q_POOLED_SIZE,
    TOKEN_NORM_CFG,
    LRFormerBlock,
    kv_pooled_sizes_for,
)
from ..layers.norm import apply_channel_norm
from .base import InitCfg, SegBackbone, drop_path_schedule


class LRFormerStem(BaseModule):
    """Stride-4 convolutional stem: four 3x3 convs (strides 2, 1, 2, 1) with norm + activation
    between them, then a LayerNorm over channels (official ``patch_embed1``).

    Args:
        in_channels (int): Image channels.
        embed_dims (int): Output channels.
        norm_cfg (dict): Norm between the convs. Default: ``dict(type='BN')``.
        act_cfg (dict): Activation between the convs. Default: ``dict(type='GELU')``.
        init_cfg (dict, optional): Initialization config. Default: None.

    Shape:
        - x: (B, in_channels, H, W)
        - output: (B, embed_dims, ceil(H / 4), ceil(W / 4))
    """

    def __init__(self,
                 in_channels: int,
                 embed_dims: int,
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='GELU'),
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        mid = embed_dims // 2
        # Index layout of the official nn.Sequential: conv, norm, act, ..., conv.
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, mid, 3, stride=2, padding=1),
            build_norm_layer(norm_cfg, mid)[1],
            build_activation_layer(act_cfg),
            nn.Conv2d(mid, mid, 3, padding=1),
            build_norm_layer(norm_cfg, mid)[1],
            build_activation_layer(act_cfg),
            nn.Conv2d(mid, embed_dims, 3, stride=2, padding=1),
            build_norm_layer(norm_cfg, embed_dims)[1],
            build_activation_layer(act_cfg),
            nn.Conv2d(embed_dims, embed_dims, 3, padding=1),
        )
        self.norm = build_norm_layer(TOKEN_NORM_CFG, embed_dims)[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return apply_channel_norm(self.norm, self.conv1(x))


class ConvPatchEmbed(BaseModule):
    """Stride-2 overlapping patch embedding between stages: 3x3 conv (padding 1) and a
    LayerNorm over channels.

    Args:
        in_channels (int): Input channels.
        embed_dims (int): Output channels.
        init_cfg (dict, optional): Initialization config. Default: None.

    Shape:
        - x: (B, in_channels, H, W)
        - output: (B, embed_dims, ceil(H / 2), ceil(W / 2))
    """

    def __init__(self, in_channels: int, embed_dims: int, init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.proj = nn.Conv2d(in_channels, embed_dims, 3, stride=2, padding=1)
        self.norm = build_norm_layer(TOKEN_NORM_CFG, embed_dims)[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return apply_channel_norm(self.norm, self.proj(x))


@MODELS.register_module()
class LRFormer(SegBackbone):
    """LRFormer backbone.

    Four stages at strides 4, 8, 16 and 32, each a stack of :class:`LRFormerBlock`. The
    depthwise convs refining the key/value pyramid are shared by all blocks of a stage
    (``d_convs{i}``); layer scale is used in stages 3 and 4. Any input size works: stage sizes
    are ``ceil(H / 4)``, ``ceil(H / 8)``, ... (equal to the official ``H // 4``, ... when H is a
    multiple of 32, the only sizes the official code accepts).

    Variants (``arch``; heads ``[2, 4, 10, 16]`` and MLP ratios ``[8, 8, 4, 4]`` throughout):

    ====  ======================  =============  ==================================
    arch  embed_dims              depths         note
    ====  ======================  =============  ==================================
    t     48, 96, 240, 384        2, 2, 6, 3
    s     64, 128, 320, 512       3, 3, 12, 3
    b     80, 160, 400, 512       4, 4, 15, 8
    l     96, 192, 480, 640       4, 6, 18, 8
    xl    128, 256, 640, 768      4, 8, 22, 8    pre-norm in stage-3 blocks 7 and 15
    ====  ======================  =============  ==================================

    Args:
        arch (str | dict): A key of :attr:`arch_settings`, or a dict with ``embed_dims`` and
            ``depths`` (optionally ``num_heads``, ``mlp_ratios`` and ``stage3_pre_norm_blocks``;
            the latter defaults to the official rule: blocks 7 and 15 when stage 3 has more
            than 20 blocks). Default: ``'t'``.
        in_channels (int): Image channels. Default: 3.
        q_pooled_sizes (int | Sequence[int]): LRSA query cells on the short side, per stage.
            Default: 16.
        qkv_bias (bool): Bias of the q/kv projections. Default: True.
        drop_path_rate (float): Stochastic depth rate, increased linearly over all blocks.
            Default: 0.1.
        layer_scale (bool): Layer scale in stages 3 and 4. Default: True.
        layer_scale_init_value (float): Its initial value. Default: 1e-6.
        use_layer_scale (bool, optional): Deprecated name of ``layer_scale``.
        out_indices (Sequence[int]): Stages (0-3) to return. Default: (0, 1, 2, 3).
        frozen_stages (int): See :class:`SegBackbone`; stage i is ``patch_embed{i}``,
            ``d_convs{i}`` and ``block{i}``. Default: -1.
        norm_cfg (dict): Norm of the stem convs and of the XL pre-norms (the token norms are
            LayerNorm, eps 1e-6, as in the official code). Default: ``dict(type='BN')``.
        act_cfg (dict): Activation of the stem and FFNs. Default: ``dict(type='GELU')``.
        with_cp (bool): Gradient checkpointing of each block. Default: False.
        pretrained (str, optional): Deprecated alias of a ``Pretrained`` init_cfg.
        init_cfg (dict | list[dict], optional): ``dict(type='Pretrained', checkpoint=path)``
            loads official ImageNet or segmentation checkpoints. Default: None.
    """

    arch_settings = {
        't': dict(embed_dims=[48, 96, 240, 384], depths=[2, 2, 6, 3]),
        's': dict(embed_dims=[64, 128, 320, 512], depths=[3, 3, 12, 3]),
        'b': dict(embed_dims=[80, 160, 400, 512], depths=[4, 4, 15, 8]),
        'l': dict(embed_dims=[96, 192, 480, 640], depths=[4, 6, 18, 8]),
        'xl': dict(embed_dims=[128, 256, 640, 768], depths=[4, 8, 22, 8]),
    }
    # stage3_pre_norm_blocks None: the official rule, blocks 7 and 15 when stage 3 is deeper
    # than 20 blocks (XL).
    arch_defaults = dict(num_heads=[2, 4, 10, 16], mlp_ratios=[8, 8, 4, 4],
                         stage3_pre_norm_blocks=None)
    classifier_prefixes = ('head.', )
    pretrained_hint = ('lrformer-{t,s,b,l}-in1k weights from the Hugging Face repository '
                       'yuhuan-wu/LRFormer-Models, see the LRFormer README')

    def __init__(self,
                 arch: Union[str, dict] = 't',
                 in_channels: int = 3,
                 q_pooled_sizes: Union[int, Sequence[int]] = BASE_Q_POOLED_SIZE,
                 qkv_bias: bool = True,
                 drop_path_rate: float = 0.1,
                 layer_scale: bool = True,
                 layer_scale_init_value: float = 1e-6,
                 use_layer_scale: Optional[bool] = None,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1,
                 norm_cfg: dict = dict(type='BN', requires_grad=True),
                 act_cfg: dict = dict(type='GELU'),
                 with_cp: bool = False,
                 pretrained: Optional[str] = None,
                 init_cfg: InitCfg = None) -> None:
        super().__init__(out_indices, frozen_stages, with_cp, pretrained, init_cfg)
        if use_layer_scale is not None:
            warnings.warn('LRFormer: use_layer_scale is deprecated, use layer_scale',
                          DeprecationWarning)
            layer_scale = use_layer_scale
        arch = self.resolve_arch(arch)
        if arch['stage3_pre_norm_blocks'] is None:
            arch['stage3_pre_norm_blocks'] = (7, 15) if arch['depths'][2] > 20 else ()
        for dims, heads in zip(arch['embed_dims'], arch['num_heads']):
            if dims % heads:
                raise ValueError(f"LRFormer: arch embed_dims {arch['embed_dims']} must be "
                                 f"divisible by num_heads {arch['num_heads']} stage by stage")
        embed_dims, depths = arch['embed_dims'], arch['depths']
        if isinstance(q_pooled_sizes, int):
            q_pooled_sizes = [q_pooled_sizes] * 4
        if len(q_pooled_sizes) != 4:
            raise ValueError(f'q_pooled_sizes needs one value per stage (4), got '
                             f'{q_pooled_sizes}')
        self.in_channels = in_channels
        self.embed_dims = list(embed_dims)
        self.depths = list(depths)
        drop_paths = drop_path_schedule(drop_path_rate, depths)

        # Attribute names and registration order reproduce the official state dict.
        self.patch_embed1 = LRFormerStem(in_channels, embed_dims[0], norm_cfg, act_cfg)
        for i in range(1, 4):
            setattr(self, f'patch_embed{i + 1}', ConvPatchEmbed(embed_dims[i - 1],
                                                                embed_dims[i]))
        for i in range(4):
            setattr(self, f'd_convs{i + 1}', nn.ModuleList([
                nn.Conv2d(embed_dims[i], embed_dims[i], 3, padding=1, groups=embed_dims[i])
                for _ in kv_pooled_sizes_for(q_pooled_sizes[i])
            ]))
        for i in range(4):
            pre_norm_blocks = arch['stage3_pre_norm_blocks'] if i == 2 else ()
            setattr(self, f'block{i + 1}', nn.ModuleList([
                LRFormerBlock(
                    embed_dims[i],
                    arch['num_heads'][i],
                    arch['mlp_ratios'][i],
                    q_pooled_size=q_pooled_sizes[i],
                    qkv_bias=qkv_bias,
                    param_layout='backbone',
                    act_cfg=act_cfg,
                    drop_path_rate=drop_paths[i][j],
                    layer_scale_init_value=(layer_scale_init_value
                                            if layer_scale and i >= 2 else None),
                    pre_norm_cfg=norm_cfg if j in pre_norm_blocks else None)
                for j in range(depths[i])
            ]))
        self._freeze_stages()

    def official_init_weights(self) -> None:
        """Truncated normal (std 0.02) for Linear layers, unit/zero LayerNorms, PyTorch
        defaults otherwise."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_init(m, std=.02, bias=0.)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def frozen_modules(self) -> List[nn.Module]:
        modules = [self.patch_embed1]
        for i in range(1, self.frozen_stages + 1):
            if i > 1:
                modules.append(getattr(self, f'patch_embed{i}'))
            modules += [getattr(self, f'd_convs{i}'), getattr(self, f'block{i}')]
        return modules

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        """
        Args:
            x (Tensor): (B, in_channels, H, W) images; any H, W >= 1.

        Returns:
            list[Tensor]: Maps of the stages in ``out_indices``; stage i has
            ``embed_dims[i]`` channels and stride ``4 * 2**i`` (rounded up).
        """
        self.check_input(x, self.in_channels)
        outs = []
        for i in range(4):
            x = getattr(self, f'patch_embed{i + 1}')(x)
            kv_pool_convs = getattr(self, f'd_convs{i + 1}')
            for block in getattr(self, f'block{i + 1}'):
                x = self.run_block(block, x, kv_pool_convs)
            if i in self.out_indices:
                outs.append(x)
        return outs
