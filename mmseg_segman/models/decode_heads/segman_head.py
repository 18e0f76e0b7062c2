"""SegMAN decoder: Mamba-based Multi-Scale Context Extraction (MMSCopE), CVPR 2025.

Module names and tensor layouts follow the official ``SegMANDecoder`` so that official
checkpoints load with no key renaming (87 state-dict entries).
"""
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.utils import resize
from mmseg.registry import MODELS

from ..layers import SS2D, DepthwiseConvFFN, LayerNorm2d


class PixelLinear(nn.Module):
    """Per-pixel ``nn.Linear`` on a (B, C, H, W) map (official ``MLP``; key ``proj``).

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class VSSBlock(nn.Module):
    """The SS2D block of MMSCopE (official ``VSSMBlock``; no layer scale, no drop path).

    ``x += cpe1(x); x += SS2D(norm1(x)); x += cpe2(x); x += FFN(norm2(x))`` where the cpe are
    depthwise 3x3 convs, the norms LayerNorm (eps 1e-6, as official) and the FFN expands 4x.

    Args:
        channels (int): Channels C.

    Shape:
        (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm1 = LayerNorm2d(channels)
        self.cpe1 = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.token_mixer = SS2D(d_model=channels, d_state=1, ssm_ratio=1.0)
        self.norm2 = LayerNorm2d(channels)
        self.cpe2 = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.mlp = DepthwiseConvFFN(channels, 4 * channels, dw_name='dwconv')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.cpe1(x)
        x = x + self.token_mixer(self.norm1(x))
        x = x + self.cpe2(x)
        return x + self.mlp(self.norm2(x))


@MODELS.register_module()
class SegMANDecoder(BaseDecodeHead):
    """SegMAN decode head with MMSCopE (`SegMAN <https://arxiv.org/abs/2412.11890>`_).

    With C = ``channels`` and P = ``feat_proj_dim``:

    1. c2, c3, c4 (strides 8, 16, 32) are projected per pixel to P channels (``linear_c*``),
       resized to c2's size and fused by a 1x1 ConvModule to F (C channels, stride 8).
    2. MMSCopE: F, a 3x3 stride-2 conv of F (2C) and a 5x5 stride-4 conv of F (4C) are
       pixel-unshuffled to stride 32 (16C, 8C, 4C), reduced to C each by 1x1 ConvModules,
       concatenated (3C) and passed through one SS2D block, then upsampled back to stride 8.
    3. A 1x1 projection of that context (P channels) is added to each projected c2, c3, c4.
    4. [short path of F, global pool of F, context, c2', c3', c4'] (5C + 3P channels) are fused
       by a 1x1 ConvModule to C, then dropout and the classifier.

    The stride-4 unshuffle needs F's size to be a multiple of 4 (inputs that are multiples of
    32). Other sizes are zero-padded at the bottom/right for MMSCopE only and the context is
    cropped back after upsampling, so any input size works; multiples of 32 compute exactly
    the official graph.

    Args:
        in_channels (Sequence[int]): Channels of the 4 selected encoder maps (strides 4, 8, 16,
            32). The stride-4 map (c1) is not used, as in the official head.
        channels (int): C, the width of the fused map and of each MMSCopE scale.
        feat_proj_dim (int): P, the projection width of c2, c3, c4.
        in_index (Sequence[int]): Indices of the 4 maps in the encoder outputs.
            Default: (0, 1, 2, 3).
        **kwargs: Other :class:`BaseDecodeHead` arguments (``num_classes``, ``norm_cfg``,
            ``align_corners``, ``dropout_ratio``, ``loss_decode``, ...). ``norm_cfg`` and
            ``act_cfg`` apply to every ConvModule (official: SyncBN and ReLU).
            ``align_corners`` applies to every bilinear resize (the official head hard-codes
            False for c3/c4 and uses it elsewhere; its configs set False, where both agree).

    Note:
        As in the official head (and MMSeg's ASPP head), the global-pool branch applies BN to
        a 1x1 map, so training needs more than one image per BN: batch >= 2 per GPU, or SyncBN
        across GPUs.

    Shape:
        Input: list of (B, in_channels[i], H/2^(i+2), W/2^(i+2)).
        Output: (B, num_classes, H/8, W/8) logits at c2's size.
    """

    def __init__(self,
                 in_channels: Sequence[int],
                 channels: int,
                 feat_proj_dim: int,
                 in_index: Sequence[int] = (0, 1, 2, 3),
                 **kwargs) -> None:
        if 'input_transform' in kwargs and kwargs['input_transform'] != 'multiple_select':
            raise ValueError("SegMANDecoder always uses input_transform='multiple_select', got "
                             f"{kwargs['input_transform']!r}")
        kwargs.pop('input_transform', None)
        if len(in_channels) != 4 or len(in_index) != 4:
            raise ValueError('SegMANDecoder needs in_channels and in_index for the 4 encoder '
                             f'stages (strides 4-32), got in_channels={in_channels}, '
                             f'in_index={in_index}')
        if not isinstance(feat_proj_dim, int) or feat_proj_dim <= 0:
            raise ValueError(f'feat_proj_dim must be a positive int, got {feat_proj_dim!r}')
        super().__init__(
            in_channels, channels, in_index=list(in_index),
            input_transform='multiple_select', **kwargs)
        self.feat_proj_dim = feat_proj_dim
        c, p = channels, feat_proj_dim
        conv_kwargs = dict(conv_cfg=self.conv_cfg, norm_cfg=self.norm_cfg, act_cfg=self.act_cfg)

        self.conv_downsample_2 = ConvModule(c, 2 * c, 3, stride=2, padding=1, **conv_kwargs)
        self.conv_downsample_4 = ConvModule(c, 4 * c, 5, stride=4, padding=1, **conv_kwargs)
        self.linear_c4 = PixelLinear(self.in_channels[3], p)
        self.linear_c3 = PixelLinear(self.in_channels[2], p)
        self.linear_c2 = PixelLinear(self.in_channels[1], p)
        self.linear_fuse = ConvModule(3 * p, c, 1, **conv_kwargs)
        # reduce_channels[i] takes the scale with 4C * 2^i channels: [stride-4 conv,
        # unshuffled stride-2 conv, unshuffled F].
        self.reduce_channels = nn.ModuleList(
            ConvModule(4 * c * 2**i, c, 1, **conv_kwargs) for i in range(3))
        self.vssm = VSSBlock(3 * c)
        self.short_path = ConvModule(c, c, 1, **conv_kwargs)
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), ConvModule(c, c, 1, **conv_kwargs))
        self.proj_out = ConvModule(3 * c, p, 1, **conv_kwargs)
        self.cat = ConvModule(5 * c + 3 * p, c, 1, **conv_kwargs)

    def _resize(self, x, size):
        return resize(x, size=size, mode='bilinear', align_corners=self.align_corners)

    def multi_scale_context(self, x: torch.Tensor) -> torch.Tensor:
        """MMSCopE on the fused stride-8 map.

        Args:
            x (Tensor): F, (B, C, h, w).

        Returns:
            Tensor: (B, 3C, h, w) SS2D context of the three scales, upsampled to F's size.
        """
        h, w = x.shape[2:]
        x = F.pad(x, (0, -w % 4, 0, -h % 4))
        scales = [
            self.reduce_channels[2](F.pixel_unshuffle(x, 4)),
            self.reduce_channels[1](F.pixel_unshuffle(self.conv_downsample_2(x), 2)),
            self.reduce_channels[0](self.conv_downsample_4(x)),
        ]
        context = self.vssm(torch.cat(scales, dim=1))
        return self._resize(context, x.shape[2:])[:, :, :h, :w]

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Args: inputs (list[Tensor]): encoder maps. Returns: Tensor (B, num_classes, h, w)."""
        _, c2, c3, c4 = self._transform_inputs(inputs)
        size = c2.shape[2:]
        c2 = self.linear_c2(c2)
        c3 = self._resize(self.linear_c3(c3), size)
        c4 = self._resize(self.linear_c4(c4), size)
        x = self.linear_fuse(torch.cat([c4, c3, c2], dim=1))

        context = self.multi_scale_context(x)
        context_proj = self.proj_out(context)
        x = self.cat(torch.cat([
            self.short_path(x),
            self._resize(self.image_pool(x), size),
            context,
            c2 + context_proj,
            c3 + context_proj,
            c4 + context_proj,
        ], dim=1))
        return self.cls_seg(x)
