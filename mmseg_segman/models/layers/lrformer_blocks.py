"""LRFormer's blocks: low-resolution self-attention and the LRFormer block.

Shared by the :class:`~mmseg_segman.models.backbones.LRFormer` backbone and the
:class:`~mmseg_segman.models.decode_heads.LRHead` decode head; parameter names follow the
official implementation (yuhuan-wu/LRFormer) key for key.
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks import DropPath
from mmengine.model import BaseModule

from mmseg_segman.ops.export import is_exporting

from .ffn import DepthwiseConvFFN
from .layer_scale import layer_scale_parameter, scale_channels
from .norm import apply_channel_norm

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
                 init_cfg: Optional[dict] = None) -> None:
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
        if is_exporting() and not (isinstance(H, int) and isinstance(W, int)):
            raise NotImplementedError(
                'LRFormer cannot be exported with a symbolic (dynamic) height or width: its '
                'pooled grids have sizes rounded from the input\'s aspect ratio, which the '
                'graph would fix to the example input\'s. Export one graph per input size.')
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
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if layer_scale_init_value is not None:
            self.layer_scale_1 = layer_scale_parameter(embed_dims, layer_scale_init_value)
            self.layer_scale_2 = layer_scale_parameter(embed_dims, layer_scale_init_value)
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
        self.mlp = DepthwiseConvFFN(embed_dims, int(embed_dims * mlp_ratio), act_cfg,
                                    dw_name='conv')
        self.cpe = nn.Conv2d(embed_dims, embed_dims, 3, padding=1, groups=embed_dims)

    @staticmethod
    def _scale(gamma: Optional[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return x if gamma is None else scale_channels(x, gamma)

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
