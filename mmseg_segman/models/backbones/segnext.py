"""MSCAN, the encoder of SegNeXt (Guo et al., NeurIPS 2022).

`SegNeXt: Rethinking Convolutional Attention Design for Semantic Segmentation
<https://arxiv.org/abs/2209.08575>`_, official code
https://github.com/Visual-Attention-Network/SegNeXt.

MMSegmentation 1.x already registers an ``MSCAN``; this module registers
:class:`SegNeXtMSCAN`, which computes the same function with the same
state-dict keys (see ``docs/segnext.md``) and adds what the built-in lacks:

* it also loads the official checkpoints, whose depthwise conv of the MLP is
  stored as ``mlp.dwconv.dwconv.*`` instead of ``mlp.dwconv.*`` (the rename
  happens in :meth:`ConvMlp._load_from_state_dict`, so it applies to
  ``init_cfg=dict(type='Pretrained')`` and to ``load_from`` alike);
* variants are chosen by name (``arch='t' | 's' | 'b' | 'l'``), and MMSeg ``MSCAN``'s own
  arguments (``embed_dims``, ``depths``, ``mlp_ratios``, ``num_stages``, ``pretrained``) are
  accepted too, so ``type='SegNeXtMSCAN'`` drops into MMSeg's SegNeXt configs;
* the plugin's backbone contract (``out_indices``, ``frozen_stages``, ``with_cp``, ``init_cfg``
  lists, strict pretrained loading; see :class:`~.base.SegBackbone`);
* ``in_channels`` is honoured by the stem (the built-in hard-codes 3);
* blocks work on ``(B, C, H, W)`` maps throughout instead of converting to
  tokens and back in every block.
"""
import math
from typing import List, Optional, Sequence, Union

import torch.nn as nn
from mmcv.cnn import build_activation_layer, build_norm_layer
from mmcv.cnn.bricks import DropPath
from mmengine.model import BaseModule
from mmengine.model.weight_init import constant_init, normal_init
from mmseg.registry import MODELS
from torch import Tensor

from ..layers.layer_scale import layer_scale_parameter, scale_channels
from ..layers.norm import LayerNorm2d
from .base import InitCfg, SegBackbone, drop_path_schedule


class MultiScaleConvAttention(BaseModule):
    """Multi-scale convolutional attention (MSCA, Fig. 2 of the paper).

    A depthwise ``conv0`` gathers local context; each further branch is a pair
    of depthwise strip convolutions (1xk then kx1) approximating a kxk kernel.
    The sum of ``conv0`` and all branches is mixed over channels by the 1x1
    ``conv3`` and multiplies the input element-wise.

    Args:
        channels (int): Number of input and output channels.
        kernel_sizes (Sequence): ``conv0``'s square kernel size, then one
            ``[1, k]`` strip per branch. Defaults to ``[5, [1, 7], [1, 11],
            [1, 21]]``.
        paddings (Sequence): Paddings matching ``kernel_sizes``. Defaults to
            ``[2, [0, 3], [0, 5], [0, 10]]``.
        init_cfg (dict, optional): Initialization config. Defaults to None.

    Shape:
        ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(self,
                 channels: int,
                 kernel_sizes: Sequence = (5, (1, 7), (1, 11), (1, 21)),
                 paddings: Sequence = (2, (0, 3), (0, 5), (0, 10)),
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if len(kernel_sizes) != len(paddings):
            raise ValueError(
                f'kernel_sizes and paddings must have the same length, got '
                f'{len(kernel_sizes)} and {len(paddings)}')
        self.conv0 = nn.Conv2d(
            channels,
            channels,
            kernel_sizes[0],
            padding=paddings[0],
            groups=channels)
        self.num_branches = len(kernel_sizes) - 1
        for i, (kernel, pad) in enumerate(zip(kernel_sizes[1:], paddings[1:])):
            kernel, pad = tuple(kernel), tuple(pad)
            # Names conv{i}_1 / conv{i}_2 are the checkpoint keys of both the
            # official code and MMSeg.
            self.add_module(
                f'conv{i}_1',
                nn.Conv2d(
                    channels, channels, kernel, padding=pad, groups=channels))
            self.add_module(
                f'conv{i}_2',
                nn.Conv2d(
                    channels,
                    channels,
                    kernel[::-1],
                    padding=pad[::-1],
                    groups=channels))
        self.conv3 = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        attn = self.conv0(x)
        branches = attn
        for i in range(self.num_branches):
            strip = getattr(self, f'conv{i}_1')(attn)
            branches = branches + getattr(self, f'conv{i}_2')(strip)
        return self.conv3(branches) * x


class SpatialAttention(BaseModule):
    """1x1 conv, activation, MSCA, 1x1 conv, with a shortcut.

    Args:
        channels (int): Number of input and output channels.
        kernel_sizes (Sequence): Passed to :class:`MultiScaleConvAttention`.
        paddings (Sequence): Passed to :class:`MultiScaleConvAttention`.
        act_cfg (dict): Activation config. Defaults to ``dict(type='GELU')``.
        init_cfg (dict, optional): Initialization config. Defaults to None.

    Shape:
        ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(self,
                 channels: int,
                 kernel_sizes: Sequence = (5, (1, 7), (1, 11), (1, 21)),
                 paddings: Sequence = (2, (0, 3), (0, 5), (0, 10)),
                 act_cfg: dict = dict(type='GELU'),
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.proj_1 = nn.Conv2d(channels, channels, 1)
        self.activation = build_activation_layer(act_cfg)
        self.spatial_gating_unit = MultiScaleConvAttention(
            channels, kernel_sizes, paddings)
        self.proj_2 = nn.Conv2d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        out = self.activation(self.proj_1(x))
        out = self.proj_2(self.spatial_gating_unit(out))
        return out + x


class ConvMlp(BaseModule):
    """Feed-forward network: 1x1 conv, depthwise 3x3, activation, 1x1 conv.

    Args:
        channels (int): Number of input and output channels.
        hidden_channels (int): Number of hidden channels.
        act_cfg (dict): Activation config. Defaults to ``dict(type='GELU')``.
        drop (float): Dropout after the activation and after ``fc2``.
            Defaults to 0.
        init_cfg (dict, optional): Initialization config. Defaults to None.

    Shape:
        ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(self,
                 channels: int,
                 hidden_channels: int,
                 act_cfg: dict = dict(type='GELU'),
                 drop: float = 0.,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.fc1 = nn.Conv2d(channels, hidden_channels, 1)
        self.dwconv = nn.Conv2d(
            hidden_channels,
            hidden_channels,
            3,
            padding=1,
            groups=hidden_channels)
        self.act = build_activation_layer(act_cfg)
        self.fc2 = nn.Conv2d(hidden_channels, channels, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        x = self.drop(self.act(self.dwconv(self.fc1(x))))
        return self.drop(self.fc2(x))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The official code wraps this conv in a module named ``dwconv``, so
        # its checkpoints store ``<prefix>dwconv.dwconv.{weight,bias}``.
        for name in ('weight', 'bias'):
            official_key = f'{prefix}dwconv.dwconv.{name}'
            if official_key in state_dict:
                state_dict[f'{prefix}dwconv.{name}'] = state_dict.pop(
                    official_key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class MSCABlock(BaseModule):
    """MSCAN block: spatial attention and MLP, each pre-normed, layer-scaled
    and with stochastic depth.

    Args:
        channels (int): Number of input and output channels.
        mlp_ratio (float): Hidden channels of the MLP over ``channels``.
        kernel_sizes (Sequence): Passed to :class:`MultiScaleConvAttention`.
        paddings (Sequence): Passed to :class:`MultiScaleConvAttention`.
        drop (float): Dropout rate of the MLP. Defaults to 0.
        drop_path (float): Stochastic depth rate. Defaults to 0.
        layer_scale_init (float, optional): Initial value of both layer
            scales; None for no layer scale. Defaults to 1e-2, as in the
            official code.
        act_cfg (dict): Activation config. Defaults to ``dict(type='GELU')``.
        norm_cfg (dict): Norm config (a 2d norm). Defaults to
            ``dict(type='SyncBN', requires_grad=True)``.
        init_cfg (dict, optional): Initialization config. Defaults to None.

    Shape:
        ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(self,
                 channels: int,
                 mlp_ratio: float = 4.,
                 kernel_sizes: Sequence = (5, (1, 7), (1, 11), (1, 21)),
                 paddings: Sequence = (2, (0, 3), (0, 5), (0, 10)),
                 drop: float = 0.,
                 drop_path: float = 0.,
                 layer_scale_init: Optional[float] = 1e-2,
                 act_cfg: dict = dict(type='GELU'),
                 norm_cfg: dict = dict(type='SyncBN', requires_grad=True),
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.norm1 = build_norm_layer(norm_cfg, channels)[1]
        self.attn = SpatialAttention(channels, kernel_sizes, paddings, act_cfg)
        self.norm2 = build_norm_layer(norm_cfg, channels)[1]
        self.mlp = ConvMlp(
            channels, int(channels * mlp_ratio), act_cfg=act_cfg, drop=drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else \
            nn.Identity()
        if layer_scale_init is None:
            self.layer_scale_1 = self.layer_scale_2 = None
        else:
            self.layer_scale_1 = layer_scale_parameter(channels, layer_scale_init)
            self.layer_scale_2 = layer_scale_parameter(channels, layer_scale_init)

    @staticmethod
    def _scale(gamma: Optional[Tensor], x: Tensor) -> Tensor:
        return x if gamma is None else scale_channels(x, gamma)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self._scale(self.layer_scale_1, self.attn(self.norm1(x))))
        return x + self.drop_path(self._scale(self.layer_scale_2, self.mlp(self.norm2(x))))


class ConvStem(BaseModule):
    """Stride-4 stem: two 3x3 stride-2 convs with norms, GELU in between.

    Args:
        in_channels (int): Number of image channels.
        out_channels (int): Number of output channels.
        act_cfg (dict): Activation config. Defaults to ``dict(type='GELU')``.
        norm_cfg (dict): Norm config. Defaults to
            ``dict(type='SyncBN', requires_grad=True)``.
        init_cfg (dict, optional): Initialization config. Defaults to None.

    Shape:
        ``(B, in_channels, H, W) -> (B, out_channels, ceil(H/4), ceil(W/4))``.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 act_cfg: dict = dict(type='GELU'),
                 norm_cfg: dict = dict(type='SyncBN', requires_grad=True),
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        # A Sequential keeps the checkpoint keys proj.{0,1,3,4}.
        self.proj = nn.Sequential(
            nn.Conv2d(in_channels, out_channels // 2, 3, stride=2, padding=1),
            build_norm_layer(norm_cfg, out_channels // 2)[1],
            build_activation_layer(act_cfg),
            nn.Conv2d(out_channels // 2, out_channels, 3, stride=2, padding=1),
            build_norm_layer(norm_cfg, out_channels)[1],
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


class ConvDownsample(BaseModule):
    """Overlapping patch embedding between stages: 3x3 stride-2 conv + norm.

    Args:
        in_channels (int): Number of input channels.
        out_channels (int): Number of output channels.
        norm_cfg (dict): Norm config. Defaults to
            ``dict(type='SyncBN', requires_grad=True)``.
        init_cfg (dict, optional): Initialization config. Defaults to None.

    Shape:
        ``(B, in_channels, H, W) -> (B, out_channels, ceil(H/2), ceil(W/2))``.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 norm_cfg: dict = dict(type='SyncBN', requires_grad=True),
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.proj = nn.Conv2d(
            in_channels, out_channels, 3, stride=2, padding=1)
        self.norm = build_norm_layer(norm_cfg, out_channels)[1]

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.proj(x))


@MODELS.register_module()
class SegNeXtMSCAN(SegBackbone):
    """MSCAN backbone of SegNeXt.

    Four stages at strides 4, 8, 16 and 32. Stage ``i`` is a downsampling
    layer (``patch_embed{i}``; a conv stem for the first stage), a sequence of
    :class:`MSCABlock` (``block{i}``) and a LayerNorm over channels
    (``norm{i}``). Module names, and hence checkpoint keys, are those of
    MMSeg's ``MSCAN``; official SegNeXt checkpoints load as well (see
    :class:`ConvMlp`).

    Args:
        arch (str | dict): One of ``arch_settings`` (``'t'``, ``'s'``,
            ``'b'``, ``'l'``), or a dict with keys ``embed_dims``, ``depths``
            and ``mlp_ratios`` (one entry per stage). Defaults to ``'t'``.
        embed_dims, depths, mlp_ratios (Sequence, optional): Per-stage values
            overriding ``arch`` (MMSeg ``MSCAN``'s arguments).
        num_stages (int, optional): MMSeg ``MSCAN``'s argument; must equal the
            number of stages of the arch when given.
        in_channels (int): Number of image channels. Defaults to 3.
        drop_rate (float): Dropout rate in the MLPs. Defaults to 0.
        drop_path_rate (float): Stochastic depth rate of the last block; it
            grows linearly from 0 over all blocks. Defaults to 0.1.
        layer_scale (bool): Per-channel layer scale in every block (as the
            official code). Defaults to True.
        layer_scale_init_value (float): Its initial value. Defaults to 1e-2.
        attention_kernel_sizes (Sequence): Kernel sizes of MSCA, see
            :class:`MultiScaleConvAttention`. Defaults to
            ``[5, [1, 7], [1, 11], [1, 21]]``.
        attention_kernel_paddings (Sequence): Matching paddings. Defaults to
            ``[2, [0, 3], [0, 5], [0, 10]]``.
        act_cfg (dict): Activation config. Defaults to ``dict(type='GELU')``.
        norm_cfg (dict): Config of the 2d norms in the stem, downsampling
            layers and blocks. Defaults to
            ``dict(type='SyncBN', requires_grad=True)``.
        out_indices (Sequence[int]): Stages to return. Defaults to all.
        frozen_stages (int): See :class:`SegBackbone`; stage i is
            ``patch_embed{i}``, ``block{i}`` and ``norm{i}``. Defaults to -1.
        with_cp (bool): Gradient checkpointing of each block. Defaults to False.
        pretrained (str, optional): Deprecated alias of a ``Pretrained``
            init_cfg (MMSeg's ``MSCAN`` argument).
        init_cfg (dict | list[dict], optional): Initialization config, e.g.
            ``dict(type='Pretrained', checkpoint=...)`` with an ImageNet
            checkpoint in either key format. The official initialisation
            always runs first (see :meth:`official_init_weights`).

    Shape:
        Input ``(B, in_channels, H, W)``; output a list of the maps
        ``(B, embed_dims[i], H_i, W_i)`` of ``out_indices`` with
        ``H_1 = ceil(H / 4)`` and each later size the ceiling of half the
        previous one.
    """

    # yapf: disable
    arch_settings = {
        't': dict(embed_dims=[32, 64, 160, 256], depths=[3, 3, 5, 2],
                  mlp_ratios=[8, 8, 4, 4]),
        's': dict(embed_dims=[64, 128, 320, 512], depths=[2, 2, 4, 2],
                  mlp_ratios=[8, 8, 4, 4]),
        'b': dict(embed_dims=[64, 128, 320, 512], depths=[3, 3, 12, 3],
                  mlp_ratios=[8, 8, 4, 4]),
        'l': dict(embed_dims=[64, 128, 320, 512], depths=[3, 5, 27, 3],
                  mlp_ratios=[8, 8, 4, 4]),
    }
    # yapf: enable
    num_stages = None  # as many as the arch has
    # VAN-style ImageNet files keep their classifier under ``head.``.
    classifier_prefixes = ('head.', )
    pretrained_hint = ("MMSeg's converted mscan_{t,s,b,l}_20230227-*.pth under "
                       'https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segnext/ '
                       "or the official mscan_*.pth from SegNeXt's README")

    def __init__(self,
                 arch: Union[str, dict] = 't',
                 in_channels: int = 3,
                 embed_dims: Optional[Sequence[int]] = None,
                 depths: Optional[Sequence[int]] = None,
                 mlp_ratios: Optional[Sequence[float]] = None,
                 num_stages: Optional[int] = None,
                 drop_rate: float = 0.,
                 drop_path_rate: float = 0.1,
                 layer_scale: bool = True,
                 layer_scale_init_value: float = 1e-2,
                 attention_kernel_sizes: Sequence = (5, (1, 7), (1, 11), (1, 21)),
                 attention_kernel_paddings: Sequence = (2, (0, 3), (0, 5), (0, 10)),
                 act_cfg: dict = dict(type='GELU'),
                 norm_cfg: dict = dict(type='SyncBN', requires_grad=True),
                 out_indices: Optional[Sequence[int]] = None,
                 frozen_stages: int = -1,
                 with_cp: bool = False,
                 pretrained: Optional[str] = None,
                 init_cfg: InitCfg = None) -> None:
        arch = self.resolve_arch(arch, embed_dims=embed_dims, depths=depths,
                                 mlp_ratios=mlp_ratios)
        # The number of stages follows the arch (the instance attribute shadows the class one
        # before the base class checks out_indices against it).
        self.num_stages = len(arch['depths'])
        if num_stages is not None and num_stages != self.num_stages:
            raise ValueError(f'SegNeXtMSCAN: num_stages={num_stages} but the arch has '
                             f'{self.num_stages} stages ({arch})')
        if out_indices is None:
            out_indices = tuple(range(self.num_stages))
        super().__init__(out_indices, frozen_stages, with_cp, pretrained, init_cfg)
        self.in_channels = in_channels
        self.embed_dims = list(arch['embed_dims'])
        self.depths = list(arch['depths'])

        drop_paths = drop_path_schedule(drop_path_rate, self.depths)
        for i, (dims, depth, mlp_ratio) in enumerate(
                zip(self.embed_dims, self.depths, arch['mlp_ratios'])):
            if i == 0:
                downsample = ConvStem(
                    in_channels, dims, act_cfg=act_cfg, norm_cfg=norm_cfg)
            else:
                downsample = ConvDownsample(
                    self.embed_dims[i - 1], dims, norm_cfg=norm_cfg)
            blocks = nn.ModuleList([
                MSCABlock(
                    dims,
                    mlp_ratio=mlp_ratio,
                    kernel_sizes=attention_kernel_sizes,
                    paddings=attention_kernel_paddings,
                    drop=drop_rate,
                    drop_path=drop_paths[i][j],
                    layer_scale_init=layer_scale_init_value if layer_scale else None,
                    act_cfg=act_cfg,
                    norm_cfg=norm_cfg) for j in range(depth)
            ])
            self.add_module(f'patch_embed{i + 1}', downsample)
            self.add_module(f'block{i + 1}', blocks)
            # PyTorch's default eps, as in the official code.
            self.add_module(f'norm{i + 1}', LayerNorm2d(dims, eps=1e-5))
        self._freeze_stages()

    def official_init_weights(self) -> None:
        """The official scheme: LayerNorm to weight 1 / bias 0; every Conv2d to
        ``normal(0, sqrt(2 / fan_out))`` with ``fan_out = k_h * k_w *
        out_channels / groups`` and zero bias. (The official code also has a
        truncated-normal rule for ``nn.Linear``, but MSCAN has no Linear.)
        """
        for m in self.modules():
            if isinstance(m, nn.LayerNorm):
                constant_init(m, val=1.0, bias=0.)
            elif isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * \
                    m.out_channels // m.groups
                normal_init(m, mean=0., std=math.sqrt(2.0 / fan_out), bias=0.)

    def frozen_modules(self) -> List[nn.Module]:
        stem = [self.patch_embed1]
        return stem + [getattr(self, f'{name}{i}') for i in range(1, self.frozen_stages + 1)
                       for name in ('patch_embed', 'block', 'norm')]

    def forward(self, x: Tensor) -> List[Tensor]:
        self.check_input(x, self.in_channels)
        outs = []
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f'patch_embed{i}')(x)
            for block in getattr(self, f'block{i}'):
                x = self.run_block(block, x)
            x = getattr(self, f'norm{i}')(x)
            if i - 1 in self.out_indices:
                outs.append(x)
        return outs
