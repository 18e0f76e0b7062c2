"""SegMAN encoder: hierarchical backbone of LASS blocks (Fu et al., "SegMAN", CVPR 2025).

A LASS (Local Attention and State Space) block mixes tokens with 2-D neighborhood attention and,
on the attention output, a four-direction selective scan (SS2D) that adds global context in
linear time. The last stage replaces the scan by full global attention (its map is small).

The module tree, parameter names and shapes follow the official encoder
(github.com/yunxiangfu2001/SegMAN, ``segmentation/mmseg/models/backbones/segman_encoder.py``), so
its ImageNet checkpoints (through ``init_cfg``) and segmentation checkpoints (``load_from``) load
unchanged.
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_activation_layer, build_norm_layer
from mmcv.cnn.bricks import DropPath
from mmengine.model import BaseModule
from mmengine.model.weight_init import constant_init, trunc_normal_init
from mmseg.registry import MODELS
from torch.nn.modules.batchnorm import _BatchNorm

from mmseg_segman.ops import library
from mmseg_segman.ops.export import caches_allowed

from ..layers.ffn import DepthwiseConvFFN
from ..layers.layer_scale import LayerScale2d
from ..layers.norm import LayerNorm2d
from ..layers.segman_blocks import RoPE2d, apply_rope2d, heads_to_channels, neighborhood_attention
from ..layers.ss2d import SS2D
from .base import InitCfg, SegBackbone, drop_path_schedule, run_block


class LASSAttention(BaseModule):
    """Token mixer of a LASS block.

    ``qkv`` (1x1 conv) gives q, k, v with channels ordered (q|k|v, head, head_dim). q and k get
    2-D RoPE, q the 1/sqrt(head_dim) scale; neighborhood attention with relative-position bias
    ``rpb[0]`` follows. Then either

    - local stages: ``y = LN(SS2D(SiLU(BN(DWConv3x3(a))))) + a`` on the attention output ``a``, or
    - global stage (``global_size`` given): full attention with the same q, k over the
      attention output as values, plus the bias ``rpb[1]`` (heads, L0, L0) learnt for an
      L0-token map and bicubically resized to the actual (L, L),

    and finally ``proj(y + lepe(v))`` with ``lepe`` a depthwise 5x5 conv on v.

    Args:
        embed_dims (int): Channels C.
        num_heads (int): Attention heads; C / num_heads must be divisible by 4 (RoPE).
        kernel_size (int): Odd neighborhood size.
        global_size (tuple[int], optional): (h0, w0), map size at pretraining, for the global
            bias; None builds a local (SS2D) mixer. Default: None.
        norm_cfg (dict): Norm after the depthwise conv. Default: dict(type='BN').
        init_cfg (dict, optional): Initialisation config. Default: None.

    Shape:
        - Input: (B, C, H, W) and RoPE ``(sin, cos)`` each (H, W, C / num_heads).
        - Output: (B, C, H, W).
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 kernel_size: int,
                 global_size: Optional[Tuple[int, int]] = None,
                 norm_cfg: dict = dict(type='BN'),
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.head_dim = embed_dims // num_heads
        self.scale = self.head_dim**-0.5
        self.kernel_size = kernel_size
        self.global_mode = global_size is not None

        self.qkv = nn.Conv2d(embed_dims, embed_dims * 3, kernel_size=1)
        self.lepe = nn.Conv2d(embed_dims, embed_dims, kernel_size=5, padding=2,
                              groups=embed_dims)
        self.proj = nn.Conv2d(embed_dims, embed_dims, kernel_size=1)
        if not self.global_mode:
            self.dwconv = nn.Sequential(
                nn.Conv2d(embed_dims, embed_dims, kernel_size=3, padding=1, groups=embed_dims),
                build_norm_layer(norm_cfg, embed_dims)[1])
            self.ssm = SS2D(embed_dims)
            self.norm = LayerNorm2d(embed_dims)
        biases = [nn.Parameter(torch.zeros(num_heads, 2 * kernel_size - 1, 2 * kernel_size - 1))]
        if self.global_mode:
            num_tokens = global_size[0] * global_size[1]
            biases.append(nn.Parameter(torch.zeros(num_heads, num_tokens, num_tokens)))
        self.rpb = nn.ParameterList(biases)

    def global_bias(self, num_tokens: int) -> torch.Tensor:
        """The global bias ``rpb[1]`` resized to (heads, num_tokens, num_tokens)."""
        bias = self.rpb[1]
        if bias.shape[-1] == num_tokens:
            return bias
        # Without autograd the resized bias depends on the size and the weights only: cached
        # (one size) until the parameter changes (its version counter or storage).
        if not torch.is_grad_enabled() and library.use_library_ops():
            # compiling for inference: one op that keeps the eager cache's saving
            return library.resize_bias_bicubic(bias, num_tokens)
        # The cache is not even looked at while compiling: dynamo would guard on it.
        use_cache = not torch.is_grad_enabled() and caches_allowed()
        if use_cache:
            key = (num_tokens, bias.data_ptr(), bias._version, bias.dtype, bias.device)
            cached = getattr(self, '_resized_bias', None)
            if cached is not None and cached[0] == key:
                return cached[1]
        resized = F.interpolate(bias[None], size=(num_tokens, num_tokens), mode='bicubic',
                                align_corners=False)[0]
        if use_cache:
            self._resized_bias = (key, resized)
        return resized

    def forward(self, x: torch.Tensor,
                rope: Tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        b, c, h, w = x.shape
        qkv = self.qkv(x)
        lepe = self.lepe(qkv[:, 2 * c:])
        q, k, v = qkv.view(b, 3, self.num_heads, self.head_dim, h, w).permute(1, 0, 2, 4, 5, 3)
        sin, cos = rope
        q = apply_rope2d(q, sin, cos).mul_(self.scale)
        k = apply_rope2d(k, sin, cos)

        local = neighborhood_attention(q, k, v, self.kernel_size, self.rpb[0])
        if self.global_mode:
            # Global attention uses the neighborhood-attention output as its values.
            q, k, v = (t.flatten(2, 3) for t in (q, k, local))
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=self.global_bias(h * w).to(q.dtype), scale=1.0)
            y = heads_to_channels(y.unflatten(2, (h, w)))
        else:
            local = heads_to_channels(local)
            y = self.norm(self.ssm(F.silu(self.dwconv(local)))) + local
        return self.proj(y + lepe)


class LASSBlock(BaseModule):
    """LASS block::

        x = x + cpe1(x)
        x = x + drop_path(ls1(attn(norm1(x))))
        x = x + cpe2(x)
        x = x + drop_path(ls2(ffn(norm2(x))))

    with depthwise 3x3 conditional position encodings ``cpe1/2``, channel LayerNorms and an
    optional per-channel layer scale ``ls1/2``.

    Args:
        embed_dims (int): Channels C.
        num_heads (int): Attention heads.
        kernel_size (int): Neighborhood size.
        mlp_ratio (float): FFN hidden channels = int(mlp_ratio * C).
        global_size (tuple[int], optional): See :class:`LASSAttention`. Default: None.
        drop_path (float): Stochastic depth rate. Default: 0.
        layer_scale_init_value (float, optional): Initial layer scale; None disables layer
            scale. Default: None.
        norm_cfg (dict): Norm config of the BN layers. Default: dict(type='BN').
        act_cfg (dict): FFN activation. Default: dict(type='GELU').
        init_cfg (dict, optional): Initialisation config. Default: None.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 kernel_size: int,
                 mlp_ratio: float,
                 global_size: Optional[Tuple[int, int]] = None,
                 drop_path: float = 0.,
                 layer_scale_init_value: Optional[float] = None,
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='GELU'),
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.cpe1 = nn.Conv2d(embed_dims, embed_dims, kernel_size=3, padding=1, groups=embed_dims)
        self.norm1 = LayerNorm2d(embed_dims)
        self.token_mixer = LASSAttention(embed_dims, num_heads, kernel_size, global_size,
                                         norm_cfg=norm_cfg)
        self.cpe2 = nn.Conv2d(embed_dims, embed_dims, kernel_size=3, padding=1, groups=embed_dims)
        self.norm2 = LayerNorm2d(embed_dims)
        self.mlp = DepthwiseConvFFN(embed_dims, int(mlp_ratio * embed_dims), act_cfg=act_cfg,
                                    dw_name='dwconv')
        self.drop_path = DropPath(drop_path)
        if layer_scale_init_value is None:
            self.layer_scale1 = self.layer_scale2 = nn.Identity()
        else:
            self.layer_scale1 = LayerScale2d(embed_dims, layer_scale_init_value)
            self.layer_scale2 = LayerScale2d(embed_dims, layer_scale_init_value)

    def forward(self, x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
        x = x + self.cpe1(x)
        x = x + self.drop_path(self.layer_scale1(self.token_mixer(self.norm1(x), (sin, cos))))
        x = x + self.cpe2(x)
        return x + self.drop_path(self.layer_scale2(self.mlp(self.norm2(x))))


class SegMANStage(BaseModule):
    """A stage of LASS blocks sharing one 2-D RoPE table (``rope``).

    Args:
        drop_paths (Sequence[float]): Stochastic depth rate of each block (one block each).
        with_cp (bool): Gradient checkpointing of each block (see
            :func:`~.base.run_block`). Default: False.
        init_cfg (dict, optional): Initialisation config. Default: None.
        **block_kwargs: Arguments of :class:`LASSBlock` (embed_dims, num_heads, ...).
    """

    def __init__(self,
                 drop_paths: Sequence[float],
                 with_cp: bool = False,
                 init_cfg: Optional[dict] = None,
                 **block_kwargs) -> None:
        super().__init__(init_cfg=init_cfg)
        self.with_cp = with_cp
        self.rope = RoPE2d(block_kwargs['embed_dims'] // block_kwargs['num_heads'])
        self.blocks = nn.ModuleList(
            LASSBlock(drop_path=rate, **block_kwargs) for rate in drop_paths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sin, cos = self.rope(*x.shape[2:])
        for block in self.blocks:
            x = run_block(block, x, sin, cos, with_cp=self.with_cp)
        return x


@MODELS.register_module()
class SegMANEncoder(SegBackbone):
    """SegMAN encoder (the backbone of SegMAN, CVPR 2025).

    Stem (four 3x3 convs, stride 4) -> 4 stages of LASS blocks, with a 3x3 stride-2 conv + BN
    between stages. Stages 1-3 mix tokens with neighborhood attention + SS2D, stage 4 with
    neighborhood + global attention. Outputs are the stage outputs at strides 4, 8, 16, 32
    (sizes ``ceil(H / s) x ceil(W / s)``; any input size works, maps smaller than a stage's
    attention kernel are handled as described in :func:`neighborhood_attention`).

    ``self.layers`` interleaves stages (even indices) and downsampling convs (odd indices; the
    last is an Identity), as in the official code, so state dicts match key for key.

    Args:
        arch (str | dict): ``'t'``, ``'s'``, ``'b'`` or ``'l'`` (see :attr:`arch_settings`), or a
            dict with all keys of an ``arch_settings`` entry. Default: 't'.
        embed_dims (Sequence[int], optional): Per-stage channels; overrides ``arch``.
        depths (Sequence[int], optional): Per-stage block counts; overrides ``arch``.
        num_heads (Sequence[int], optional): Per-stage heads; overrides ``arch``.
        kernel_sizes (Sequence[int], optional): Per-stage odd neighborhood sizes; overrides
            ``arch``.
        mlp_ratios (Sequence[float], optional): Per-stage FFN ratios; overrides ``arch``.
        layer_scale (bool, optional): Use layer scale (B/L do); overrides ``arch``.
        layer_scale_init_value (float): Initial layer scale. Default: 1e-6.
        in_channels (int): Input channels. Default: 3.
        pretrain_img_size (int | tuple[int]): Input size of pretraining (official
            ``image_size``); it sizes the stage-4 global bias to (size // 32)**2 tokens, which is
            resized bicubically at other input sizes. Default: 224.
        drop_path_rate (float): Stochastic depth, growing linearly from 0 over all blocks.
            Default: 0.
        out_indices (Sequence[int]): Stages (0-3) whose outputs are returned.
            Default: (0, 1, 2, 3).
        frozen_stages (int): -1 freezes nothing, 0 the stem, n >= 1 the stem and stages 1..n
            (each with the downsampling conv feeding it): no gradients, BN in eval mode.
            Default: -1.
        norm_cfg (dict): Config of every BN layer (stem, downsampling, LASS dwconv); the
            official segmentation configs use SyncBN. Default: dict(type='BN',
            requires_grad=True).
        act_cfg (dict): Activation of stem and FFNs. Default: dict(type='GELU').
        with_cp (bool): Gradient checkpointing of every block. Default: False.
        pretrained (str, optional): Deprecated MMSeg spelling of
            ``init_cfg=dict(type='Pretrained', checkpoint=pretrained)``. Default: None.
        init_cfg (dict | list[dict], optional): None for the official random initialisation,
            or ``dict(type='Pretrained', checkpoint=path[, prefix='backbone.', strict=True])``
            (see :class:`~.base.SegBackbone`). Released ImageNet checkpoints (``.pth.tar``)
            are read with ``state_dict_ema`` preferred over ``state_dict``; their
            ``classifier.*`` keys are dropped and counted. Default: None.
    """

    # Official SegMANEncoder_{t,s,b,l}; dilation is 1 everywhere.
    arch_settings = {
        't': dict(embed_dims=(32, 64, 144, 192), depths=(2, 2, 4, 2), num_heads=(1, 2, 4, 8),
                  kernel_sizes=(11, 9, 9, 7), mlp_ratios=(4, 4, 3, 3), layer_scale=False),
        's': dict(embed_dims=(64, 144, 288, 512), depths=(2, 2, 10, 4), num_heads=(2, 4, 8, 16),
                  kernel_sizes=(11, 9, 7, 7), mlp_ratios=(4, 4, 3.4, 3.4), layer_scale=False),
        'b': dict(embed_dims=(96, 160, 364, 560), depths=(4, 4, 18, 4), num_heads=(4, 8, 13, 20),
                  kernel_sizes=(11, 9, 7, 7), mlp_ratios=(4, 4, 3, 3), layer_scale=True),
        'l': dict(embed_dims=(96, 192, 432, 640), depths=(4, 4, 28, 4), num_heads=(4, 8, 12, 20),
                  kernel_sizes=(11, 9, 7, 7), mlp_ratios=(4, 4, 3, 3), layer_scale=True),
    }
    # Top-level keys of the ImageNet classification head in the released checkpoints.
    classifier_prefixes = ('classifier.', )
    pretrained_hint = ('SegMAN_Encoder_{t,s,b,l}.pth.tar from the Google Drive folder in the '
                       'SegMAN README, '
                       'https://drive.google.com/drive/folders/1QYU7nhpe0ddH7bPxI7VH4drc__07uEHs')

    def __init__(self,
                 arch: Union[str, dict] = 't',
                 embed_dims: Optional[Sequence[int]] = None,
                 depths: Optional[Sequence[int]] = None,
                 num_heads: Optional[Sequence[int]] = None,
                 kernel_sizes: Optional[Sequence[int]] = None,
                 mlp_ratios: Optional[Sequence[float]] = None,
                 layer_scale: Optional[bool] = None,
                 layer_scale_init_value: float = 1e-6,
                 in_channels: int = 3,
                 pretrain_img_size: Union[int, Tuple[int, int]] = 224,
                 drop_path_rate: float = 0.,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1,
                 norm_cfg: dict = dict(type='BN', requires_grad=True),
                 act_cfg: dict = dict(type='GELU'),
                 with_cp: bool = False,
                 pretrained: Optional[str] = None,
                 init_cfg: InitCfg = None) -> None:
        super().__init__(out_indices, frozen_stages, with_cp, pretrained, init_cfg)
        settings = self.resolve_arch(
            arch, embed_dims=embed_dims, depths=depths, num_heads=num_heads,
            kernel_sizes=kernel_sizes, mlp_ratios=mlp_ratios, layer_scale=layer_scale)
        for i, (dims, heads, kernel) in enumerate(
                zip(settings['embed_dims'], settings['num_heads'], settings['kernel_sizes'])):
            if dims % heads or (dims // heads) % 4:
                raise ValueError(
                    f'stage {i + 1}: embed_dims ({dims}) must split into num_heads ({heads}) '
                    f'heads whose size is divisible by 4 (2-D RoPE)')
            if kernel < 1 or kernel % 2 == 0:
                raise ValueError(f'stage {i + 1}: kernel_sizes must be odd and positive, got '
                                 f'{kernel}')
        if settings['embed_dims'][0] % 2:
            raise ValueError(f'embed_dims[0] must be even (the stem halves it), got '
                             f'{settings["embed_dims"][0]}')
        embed_dims = settings['embed_dims']
        depths = settings['depths']
        if isinstance(pretrain_img_size, int):
            pretrain_img_size = (pretrain_img_size, pretrain_img_size)
        if len(pretrain_img_size) != 2 or min(pretrain_img_size) < 32:
            raise ValueError(f'pretrain_img_size must be an int or (h, w), each >= 32, got '
                             f'{pretrain_img_size!r}')
        self.arch = settings
        self.in_channels = in_channels

        c = embed_dims[0]
        norm = [build_norm_layer(norm_cfg, n)[1] for n in (c // 2, c // 2, c, c)]
        self.patch_embed = nn.Sequential(
            nn.Conv2d(in_channels, c // 2, 3, stride=2, padding=1, bias=False), norm[0],
            build_activation_layer(act_cfg),
            nn.Conv2d(c // 2, c // 2, 3, padding=1, bias=False), norm[1],
            build_activation_layer(act_cfg),
            nn.Conv2d(c // 2, c, 3, stride=2, padding=1, bias=False), norm[2],
            build_activation_layer(act_cfg),
            nn.Conv2d(c, c, 3, padding=1, bias=False), norm[3])

        drop_paths = drop_path_schedule(drop_path_rate, depths)
        global_size = (pretrain_img_size[0] // 32, pretrain_img_size[1] // 32)
        self.layers = nn.ModuleList()
        for i in range(self.num_stages):
            self.layers.append(
                SegMANStage(
                    drop_paths[i],
                    with_cp=with_cp,
                    embed_dims=embed_dims[i],
                    num_heads=settings['num_heads'][i],
                    kernel_size=settings['kernel_sizes'][i],
                    mlp_ratio=settings['mlp_ratios'][i],
                    global_size=global_size if i == self.num_stages - 1 else None,
                    layer_scale_init_value=(layer_scale_init_value
                                            if settings['layer_scale'] else None),
                    norm_cfg=norm_cfg,
                    act_cfg=act_cfg))
            if i < self.num_stages - 1:
                self.layers.append(nn.Sequential(
                    nn.Conv2d(embed_dims[i], embed_dims[i + 1], 3, stride=2, padding=1,
                              bias=False),
                    build_norm_layer(norm_cfg, embed_dims[i + 1])[1]))
            else:
                self.layers.append(nn.Identity())
        self._freeze_stages()

    def frozen_modules(self) -> List[nn.Module]:
        """The stem, then per frozen stage its input downsampling conv and its blocks."""
        return [self.patch_embed, *self.layers[:max(2 * self.frozen_stages - 1, 0)]]

    @staticmethod
    def _official_init(module: nn.Module) -> None:
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            trunc_normal_init(module, std=.02, bias=0.)
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm, _BatchNorm)):
            constant_init(module, val=1.0, bias=0.)

    def official_init_weights(self) -> None:
        """Truncated normal (std 0.02) for convs and linears, unit/zero norms. Parameters that
        are not Conv/Linear/norm weights (relative-position biases, layer scales, SS2D) keep
        the values set at construction, as in the official code."""
        self.apply(self._official_init)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Args: x (Tensor): (B, in_channels, H, W).

        Returns:
            tuple[Tensor]: for each stage in ``out_indices``, (B, embed_dims[i], ceil(H / s),
            ceil(W / s)) with s = 4, 8, 16, 32.
        """
        self.check_input(x, self.in_channels)
        x = self.patch_embed(x)
        outs = []
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i % 2 == 0 and i // 2 in self.out_indices:
                outs.append(x)
        return tuple(outs)
