"""LRFormer backbone (Wu et al., "Low-Resolution Self-Attention for Semantic Segmentation",
TPAMI 2025).

Every block computes self-attention in a small, fixed-size space: queries are average-pooled to
16 cells on the short side (aspect ratio kept), keys/values come from a pooled pyramid
(11/8/6/4 on the short side), and the attended map is upsampled bilinearly back to the full
resolution. The attention cost therefore does not grow with the input size.

Module and parameter names follow the official implementation (yuhuan-wu/LRFormer) key for key,
so its released checkpoints load unchanged. The blocks are shared with
:class:`~mmseg_segman.models.decode_heads.LRHead`.
"""
import logging
import os
from collections import OrderedDict
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmcv.cnn import build_activation_layer, build_norm_layer
from mmcv.cnn.bricks import DropPath
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_init
from mmengine.runner import CheckpointLoader
from mmseg.registry import MODELS

# Query pool size the key/value pyramid below is defined for; other query sizes rescale it.
BASE_Q_POOLED_SIZE = 16
BASE_KV_POOLED_SIZES = (11, 8, 6, 4)
# Tolerance the official code adds before rounding pooled sizes (breaks .5 ties upwards).
_ROUND_EPS = 1e-3
# The official token norms use eps 1e-6; the LayerNorm on the pooled keys/values keeps
# PyTorch's default 1e-5.
TOKEN_NORM_CFG = dict(type='LN', eps=1e-6)
KV_NORM_CFG = dict(type='LN', eps=1e-5)


def aspect_preserving_size(height: int, width: int,
                           short_side: int) -> Tuple[int, int]:
    """Pooled grid with ``short_side`` cells on the shorter side and the input's aspect ratio.

    Args:
        height (int): Input height.
        width (int): Input width.
        short_side (int): Number of cells on the shorter side.

    Returns:
        tuple[int, int]: ``(pooled_height, pooled_width)``.
    """
    if width >= height:
        return short_side, round(width * short_side / height + _ROUND_EPS)
    return round(height * short_side / width + _ROUND_EPS), short_side


def kv_pooled_sizes_for(q_pooled_size: int) -> List[int]:
    """Key/value pyramid for a query pool size (``[11, 8, 6, 4]`` at 16, ``[22, 16, 12, 8]``
    at 32)."""
    return [
        round(s * q_pooled_size / BASE_Q_POOLED_SIZE + _ROUND_EPS)
        for s in BASE_KV_POOLED_SIZES
    ]


def apply_channel_norm(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply ``norm`` over the channels of an NCHW map (LayerNorm needs channels last)."""
    if isinstance(norm, nn.LayerNorm):
        return norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    return norm(x)


class LowResolutionSelfAttention(BaseModule):
    """Low-resolution self-attention (LRSA).

    Queries are the input average-pooled to ``q_pooled_size`` cells on the short side; keys and
    values are the LayerNorm-ed concatenation of a pooled pyramid (each level optionally refined
    by a residual depthwise conv supplied by the caller). The attended low-resolution map is
    projected and bilinearly upsampled to the input size.

    Args:
        embed_dims (int): Channels C.
        num_heads (int): Attention heads; must divide ``embed_dims``.
        q_pooled_size (int): Query cells on the short side. Default: 16.
        kv_pooled_sizes (Sequence[int], optional): Short-side sizes of the key/value pyramid.
            Default: ``kv_pooled_sizes_for(q_pooled_size)``.
        qkv_bias (bool): Bias of the query and key/value projections. Default: True.
        param_layout (str): Parameter layout of the official code this module must match.
            ``'backbone'``: q and kv are ``nn.Linear`` wrapped in ``nn.Sequential`` (keys
            ``q.0``, ``kv.0``); ``'head'``: q is a 1x1 ``nn.Conv2d``, kv a bare ``nn.Linear``.
            Both compute the same function. Default: ``'backbone'``.
        init_cfg (dict, optional): Initialization config. Default: None.

    Shape:
        - x: (B, C, H, W)
        - output: (B, C, H, W)
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 q_pooled_size: int = BASE_Q_POOLED_SIZE,
                 kv_pooled_sizes: Optional[Sequence[int]] = None,
                 qkv_bias: bool = True,
                 param_layout: str = 'backbone',
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        if embed_dims % num_heads != 0:
            raise ValueError(f'embed_dims ({embed_dims}) must be divisible by num_heads '
                             f'({num_heads})')
        if q_pooled_size < 1:
            raise ValueError(f'q_pooled_size must be >= 1, got {q_pooled_size}')
        if param_layout not in ('backbone', 'head'):
            raise ValueError(f"param_layout must be 'backbone' or 'head', got {param_layout!r}")
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.scale = (embed_dims // num_heads)**-0.5
        self.q_pooled_size = q_pooled_size
        self.kv_pooled_sizes = list(kv_pooled_sizes or kv_pooled_sizes_for(q_pooled_size))

        if param_layout == 'backbone':
            self.q = nn.Sequential(nn.Linear(embed_dims, embed_dims, bias=qkv_bias))
            self.kv = nn.Sequential(nn.Linear(embed_dims, embed_dims * 2, bias=qkv_bias))
        else:
            self.q = nn.Conv2d(embed_dims, embed_dims, 1, bias=qkv_bias)
            self.kv = nn.Linear(embed_dims, embed_dims * 2, bias=qkv_bias)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.norm = build_norm_layer(KV_NORM_CFG, embed_dims)[1]

    def forward(self,
                x: torch.Tensor,
                kv_pool_convs: Optional[Sequence[nn.Module]] = None) -> torch.Tensor:
        """Attend in the pooled space and upsample back.

        Args:
            x (Tensor): (B, C, H, W) input map.
            kv_pool_convs (Sequence[nn.Module], optional): One module per pyramid level, added
                residually to that pooled level (the backbone's stage-shared depthwise convs).

        Returns:
            Tensor: (B, C, H, W).
        """
        B, C, H, W = x.shape
        H, W = int(H), int(W)  # plain ints for the pooled-size arithmetic (also when traced)
        if kv_pool_convs is not None and len(kv_pool_convs) != len(self.kv_pooled_sizes):
            raise ValueError(f'kv_pool_convs has {len(kv_pool_convs)} modules but there are '
                             f'{len(self.kv_pooled_sizes)} pyramid levels')
        head_dims = C // self.num_heads

        q_size = aspect_preserving_size(H, W, self.q_pooled_size)
        q_map = F.adaptive_avg_pool2d(x, q_size)
        if isinstance(self.q, nn.Conv2d):
            q = self.q(q_map).flatten(2).transpose(1, 2)
        else:
            q = self.q(q_map.flatten(2).transpose(1, 2))
        q = q.reshape(B, -1, self.num_heads, head_dims).transpose(1, 2)

        levels = []
        for i, size in enumerate(self.kv_pooled_sizes):
            level = F.adaptive_avg_pool2d(x, aspect_preserving_size(H, W, size))
            if kv_pool_convs is not None:
                level = level + kv_pool_convs[i](level)
            levels.append(level.flatten(2))
        kv_tokens = self.norm(torch.cat(levels, dim=2).transpose(1, 2))
        k, v = self.kv(kv_tokens).reshape(B, -1, 2, self.num_heads,
                                          head_dims).permute(2, 0, 3, 1, 4)

        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(B, -1, C)
        out = self.proj(out).transpose(1, 2).reshape(B, C, *q_size)
        return F.interpolate(out, size=(H, W), mode='bilinear', align_corners=False)


class InvertedResidualFFN(BaseModule):
    """LRFormer's feed-forward network: 1x1 expand, activation, residual 3x3 depthwise conv,
    1x1 project (official name ``IRB``).

    Args:
        embed_dims (int): Input and output channels.
        hidden_dims (int): Expanded channels.
        act_cfg (dict): Activation config. Default: ``dict(type='GELU')``.
        init_cfg (dict, optional): Initialization config. Default: None.

    Shape:
        - x: (B, C, H, W)
        - output: (B, C, H, W)
    """

    def __init__(self,
                 embed_dims: int,
                 hidden_dims: int,
                 act_cfg: dict = dict(type='GELU'),
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.fc1 = nn.Conv2d(embed_dims, hidden_dims, 1)
        self.act = build_activation_layer(act_cfg)
        self.conv = nn.Conv2d(hidden_dims, hidden_dims, 3, padding=1, groups=hidden_dims)
        self.fc2 = nn.Conv2d(hidden_dims, embed_dims, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.fc1(x))
        return self.fc2(x + self.conv(x))


class LRFormerBlock(BaseModule):
    """LRFormer block: optional pre-norm, conditional position encoding (residual 3x3
    depthwise conv), then LRSA and FFN residual branches with optional layer scale.

    ``x = pre_norm(x); x = x + cpe(x); x = x + ls1 * LRSA(norm1(x)); x = x + ls2 * FFN(norm2(x))``
    (the branches go through stochastic depth).

    Args:
        embed_dims (int): Channels C.
        num_heads (int): Attention heads.
        mlp_ratio (float): FFN expansion ratio.
        q_pooled_size (int): LRSA query cells on the short side. Default: 16.
        qkv_bias (bool): Bias of the q/kv projections. Default: True.
        param_layout (str): ``'backbone'`` or ``'head'``, see
            :class:`LowResolutionSelfAttention`. Default: ``'backbone'``.
        norm_cfg (dict): Config of ``norm1``/``norm2`` (LayerNorm is applied channels last).
            Default: ``TOKEN_NORM_CFG``.
        act_cfg (dict): FFN activation. Default: ``dict(type='GELU')``.
        drop_path_rate (float): Stochastic depth rate. Default: 0.
        layer_scale_init_value (float, optional): Initial layer scale; None disables it.
            Default: None.
        pre_norm_cfg (dict, optional): Norm applied to the block input (official XL, to avoid
            fp16 overflow); None for no pre-norm. Default: None.
        init_cfg (dict, optional): Initialization config. Default: None.

    Shape:
        - x: (B, C, H, W)
        - output: (B, C, H, W)
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 mlp_ratio: float,
                 q_pooled_size: int = BASE_Q_POOLED_SIZE,
                 qkv_bias: bool = True,
                 param_layout: str = 'backbone',
                 norm_cfg: dict = TOKEN_NORM_CFG,
                 act_cfg: dict = dict(type='GELU'),
                 drop_path_rate: float = 0.,
                 layer_scale_init_value: Optional[float] = None,
                 pre_norm_cfg: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        if layer_scale_init_value is not None:
            self.layer_scale_1 = nn.Parameter(
                torch.full((embed_dims, ), float(layer_scale_init_value)))
            self.layer_scale_2 = nn.Parameter(
                torch.full((embed_dims, ), float(layer_scale_init_value)))
        else:
            self.layer_scale_1 = self.layer_scale_2 = None
        self.pre_norm = (
            build_norm_layer(pre_norm_cfg, embed_dims)[1]
            if pre_norm_cfg is not None else nn.Identity())
        self.norm1 = build_norm_layer(norm_cfg, embed_dims)[1]
        self.attn = LowResolutionSelfAttention(
            embed_dims,
            num_heads,
            q_pooled_size=q_pooled_size,
            qkv_bias=qkv_bias,
            param_layout=param_layout)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()
        self.norm2 = build_norm_layer(norm_cfg, embed_dims)[1]
        self.mlp = InvertedResidualFFN(embed_dims, int(embed_dims * mlp_ratio), act_cfg)
        self.cpe = nn.Conv2d(embed_dims, embed_dims, 3, padding=1, groups=embed_dims)

    @staticmethod
    def _scale(gamma: Optional[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return x if gamma is None else gamma.view(1, -1, 1, 1) * x

    def forward(self,
                x: torch.Tensor,
                kv_pool_convs: Optional[Sequence[nn.Module]] = None) -> torch.Tensor:
        """
        Args:
            x (Tensor): (B, C, H, W).
            kv_pool_convs (Sequence[nn.Module], optional): Passed to the LRSA.

        Returns:
            Tensor: (B, C, H, W).
        """
        x = self.pre_norm(x)
        x = x + self.cpe(x)
        attn = self.attn(apply_channel_norm(self.norm1, x), kv_pool_convs)
        x = x + self.drop_path(self._scale(self.layer_scale_1, attn))
        ffn = self.mlp(apply_channel_norm(self.norm2, x))
        return x + self.drop_path(self._scale(self.layer_scale_2, ffn))


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
                 init_cfg: Optional[dict] = None):
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

    def __init__(self, in_channels: int, embed_dims: int, init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.proj = nn.Conv2d(in_channels, embed_dims, 3, stride=2, padding=1)
        self.norm = build_norm_layer(TOKEN_NORM_CFG, embed_dims)[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return apply_channel_norm(self.norm, self.proj(x))


@MODELS.register_module()
class LRFormer(BaseModule):
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
        use_layer_scale (bool): Layer scale (init 1e-6) in stages 3 and 4. Default: True.
        out_indices (Sequence[int]): Stages (0-3) to return. Default: (0, 1, 2, 3).
        norm_cfg (dict): Norm of the stem convs and of the XL pre-norms (the token norms are
            LayerNorm, eps 1e-6, as in the official code). Default: ``dict(type='BN')``.
        act_cfg (dict): Activation of the stem and FFNs. Default: ``dict(type='GELU')``.
        with_cp (bool): Gradient checkpointing of each block (saves memory, costs time).
            Default: False.
        init_cfg (dict, optional): ``dict(type='Pretrained', checkpoint=path)`` loads official
            ImageNet or segmentation checkpoints (``state_dict``/``model`` wrappers and
            ``module.``/``backbone.`` prefixes are removed). Default: None.
    """

    arch_settings = {
        't': dict(embed_dims=[48, 96, 240, 384], depths=[2, 2, 6, 3]),
        's': dict(embed_dims=[64, 128, 320, 512], depths=[3, 3, 12, 3]),
        'b': dict(embed_dims=[80, 160, 400, 512], depths=[4, 4, 15, 8]),
        'l': dict(embed_dims=[96, 192, 480, 640], depths=[4, 6, 18, 8]),
        'xl': dict(embed_dims=[128, 256, 640, 768], depths=[4, 8, 22, 8]),
    }
    default_num_heads = [2, 4, 10, 16]
    default_mlp_ratios = [8, 8, 4, 4]
    layer_scale_init_value = 1e-6

    def __init__(self,
                 arch: Union[str, dict] = 't',
                 in_channels: int = 3,
                 q_pooled_sizes: Union[int, Sequence[int]] = BASE_Q_POOLED_SIZE,
                 qkv_bias: bool = True,
                 drop_path_rate: float = 0.1,
                 use_layer_scale: bool = True,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 norm_cfg: dict = dict(type='BN', requires_grad=True),
                 act_cfg: dict = dict(type='GELU'),
                 with_cp: bool = False,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        arch = self._resolve_arch(arch)
        embed_dims, depths = arch['embed_dims'], arch['depths']
        if isinstance(q_pooled_sizes, int):
            q_pooled_sizes = [q_pooled_sizes] * 4
        if len(q_pooled_sizes) != 4:
            raise ValueError(f'q_pooled_sizes needs one value per stage (4), got '
                             f'{q_pooled_sizes}')
        if not 0 <= drop_path_rate < 1:
            raise ValueError(f'drop_path_rate must be in [0, 1), got {drop_path_rate}')
        out_indices = tuple(out_indices)
        if not out_indices or any(i not in range(4) for i in out_indices):
            raise ValueError(f'out_indices must be a non-empty subset of 0..3, got {out_indices}')
        self.in_channels = in_channels
        self.embed_dims = embed_dims
        self.depths = depths
        self.out_indices = out_indices
        self.with_cp = with_cp

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
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device='cpu').tolist()
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
                    drop_path_rate=dpr[sum(depths[:i]) + j],
                    layer_scale_init_value=(self.layer_scale_init_value
                                            if use_layer_scale and i >= 2 else None),
                    pre_norm_cfg=norm_cfg if j in pre_norm_blocks else None)
                for j in range(depths[i])
            ]))

    @classmethod
    def _resolve_arch(cls, arch: Union[str, dict]) -> dict:
        if isinstance(arch, str):
            if arch.lower() not in cls.arch_settings:
                raise ValueError(f'arch {arch!r} is not one of '
                                 f'{sorted(cls.arch_settings)}; or pass a dict')
            arch = cls.arch_settings[arch.lower()]
        elif not isinstance(arch, dict):
            raise TypeError(f'arch must be a str or dict, got {type(arch).__name__}')
        missing = {'embed_dims', 'depths'} - set(arch)
        if missing:
            raise ValueError(f'arch dict is missing {sorted(missing)}')
        arch = dict(arch)
        arch.setdefault('num_heads', cls.default_num_heads)
        arch.setdefault('mlp_ratios', cls.default_mlp_ratios)
        arch.setdefault('stage3_pre_norm_blocks', (7, 15) if arch['depths'][2] > 20 else ())
        for key in ('embed_dims', 'depths', 'num_heads', 'mlp_ratios'):
            if len(arch[key]) != 4:
                raise ValueError(f'arch[{key!r}] needs 4 values (one per stage), got '
                                 f'{arch[key]}')
        for dims, heads in zip(arch['embed_dims'], arch['num_heads']):
            if dims % heads:
                raise ValueError(f"arch embed_dims {arch['embed_dims']} must be divisible by "
                                 f"num_heads {arch['num_heads']} stage by stage")
        return arch

    def init_weights(self):
        """Official initialization (truncated normal for Linear layers, PyTorch defaults
        otherwise), then, given ``init_cfg=dict(type='Pretrained', checkpoint=...)``, the
        weights of an official checkpoint (keys it lacks keep the official initialization)."""
        if self.init_cfg is not None and self.init_cfg.get('type') != 'Pretrained':
            super().init_weights()
            return
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_init(m, std=.02, bias=0.)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.init_cfg is not None:
            self.load_pretrained(self.init_cfg['checkpoint'])
        self._is_init = True

    def load_pretrained(self, checkpoint: str, map_location: str = 'cpu') -> None:
        """Load backbone weights from an official LRFormer checkpoint (ImageNet or
        segmentation) non-strictly, reporting keys that do not match.

        Raises:
            FileNotFoundError: if ``checkpoint`` is a local path that does not exist.
            ValueError: if the checkpoint shares no key with this backbone, so a wrong file
                cannot silently leave the backbone at its random initialization.
        """
        if '://' not in checkpoint and not os.path.isfile(checkpoint):
            raise FileNotFoundError(
                f'LRFormer init_cfg checkpoint {checkpoint!r} does not exist: download the '
                'ImageNet-pretrained LRFormer weights and set init_cfg.checkpoint to their '
                'path, or set init_cfg=None to train from scratch')
        ckpt = CheckpointLoader.load_checkpoint(checkpoint, map_location=map_location)
        state_dict = self.official_state_dict(ckpt)
        own_keys = set(self.state_dict())
        if not own_keys & set(state_dict):
            raise ValueError(f'checkpoint {checkpoint!r} has no LRFormer backbone weights '
                             f'(first keys: {list(state_dict)[:5]})')
        result = self.load_state_dict(state_dict, strict=False)
        if result.missing_keys:
            print_log(f'LRFormer: keys missing from {checkpoint}: {result.missing_keys}',
                      logger='current', level=logging.WARNING)
        if result.unexpected_keys:
            print_log(f'LRFormer: ignored keys of {checkpoint}: {result.unexpected_keys}',
                      logger='current')

    @staticmethod
    def official_state_dict(ckpt: dict) -> 'OrderedDict[str, torch.Tensor]':
        """Backbone state dict from a checkpoint in any format the official loader accepts:
        a bare state dict or one wrapped in ``state_dict``/``model``, with optional
        ``module.`` (DataParallel) and ``backbone.`` (segmentor) prefixes."""
        if not isinstance(ckpt, dict):
            raise TypeError(f'checkpoint must be a dict, got {type(ckpt).__name__}')
        if 'state_dict' in ckpt:
            ckpt = ckpt['state_dict']
        elif 'model' in ckpt:
            ckpt = ckpt['model']
        state_dict = OrderedDict()
        for key, value in ckpt.items():
            key = key[len('module.'):] if key.startswith('module.') else key
            key = key[len('backbone.'):] if key.startswith('backbone.') else key
            state_dict[key] = value
        return state_dict

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        """
        Args:
            x (Tensor): (B, in_channels, H, W) images; any H, W >= 1.

        Returns:
            list[Tensor]: Maps of the stages in ``out_indices``; stage i has
            ``embed_dims[i]`` channels and stride ``4 * 2**i`` (rounded up).
        """
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'LRFormer expects x of shape (B, {self.in_channels}, H, W), got '
                             f'{tuple(x.shape)}')
        outs = []
        for i in range(4):
            x = getattr(self, f'patch_embed{i + 1}')(x)
            kv_pool_convs = getattr(self, f'd_convs{i + 1}')
            for block in getattr(self, f'block{i + 1}'):
                if self.with_cp and x.requires_grad:
                    x = cp.checkpoint(block, x, kv_pool_convs, use_reentrant=False)
                else:
                    x = block(x, kv_pool_convs)
            if i in self.out_indices:
                outs.append(x)
        return outs
