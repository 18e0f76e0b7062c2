"""Light Hamburger decode head of SegNeXt (Guo et al., NeurIPS 2022).

The Hamburger module comes from `Is Attention Better Than Matrix
Decomposition? <https://arxiv.org/abs/2109.04553>`_ (Geng et al., ICLR 2021):
a 1x1 conv, a non-negative matrix factorisation (NMF) of the feature map
solved by a few multiplicative updates, and a 1x1 conv.

MMSegmentation 1.x already registers a ``LightHamHead``; this module
registers :class:`SegNeXtHamHead`, which computes the same function with the
same state-dict keys (see ``docs/segnext.md``) and differs where the built-in
is unsafe:

* evaluation is deterministic by default: NMF starts from fixed bases drawn
  once from a seeded generator instead of from new random bases at every
  forward (``deterministic_eval``);
* NMF always runs in float32, also under ``torch.autocast``;
* ``ham_kwargs`` accepts the official upper-case keys and MMSeg's lower-case
  ones and rejects unknown keys.
"""
import warnings
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from torch import Tensor


def nmf_multiplicative_updates(x: Tensor,
                               bases: Tensor,
                               num_steps: int,
                               eps: float = 1e-6) -> Tensor:
    """Approximate ``x ~ bases @ coef^T`` by NMF multiplicative updates.

    The coefficients start as ``softmax(x^T @ bases)`` over the R bases (the
    temperature is 1, see ``inv_t`` in :class:`NMF2D`); then ``num_steps``
    updates of coefficients and bases alternate, followed by one final
    coefficient update (Lee & Seung's rules with ``eps`` in the
    denominators). Gradients flow through every step, as in the official
    code.

    Args:
        x (Tensor): Non-negative data, shape ``(B, D, N)``.
        bases (Tensor): Non-negative initial bases, shape ``(B, D, R)``.
        num_steps (int): Number of alternating update steps.
        eps (float): Added to denominators. Defaults to 1e-6.

    Returns:
        Tensor: The reconstruction ``bases @ coef^T``, shape ``(B, D, N)``.
    """
    x_t = x.transpose(1, 2)
    coef = F.softmax(torch.bmm(x_t, bases), dim=-1)  # (B, N, R)
    for _ in range(num_steps):
        # coef <- coef * (x^T B) / (coef B^T B)
        coef = coef * torch.bmm(x_t, bases) / (
            coef.bmm(bases.transpose(1, 2).bmm(bases)) + eps)
        # bases <- bases * (x coef) / (bases coef^T coef)
        bases = bases * torch.bmm(x, coef) / (
            bases.bmm(coef.transpose(1, 2).bmm(coef)) + eps)
    coef = coef * torch.bmm(x_t, bases) / (
        coef.bmm(bases.transpose(1, 2).bmm(bases)) + eps)
    return torch.bmm(bases, coef.transpose(1, 2))


class NMF2D(nn.Module):
    """Low-rank reconstruction of a feature map by NMF.

    The ``(B, C, H, W)`` map is split into ``num_groups`` groups of
    ``D = C / num_groups`` channels; each group is a ``D x (H*W)`` matrix
    factorised with ``rank`` bases.

    Initial bases (uniform in [0, 1), L2-normalised over D):

    * ``rand_init=True`` (default, as in SegNeXt): in training, new bases
      from the global RNG at every forward, drawn on the CPU like MMSeg's and
      the official code, so a given seed gives the same bases as they do. In
      evaluation, the fixed buffer ``bases`` drawn once from
      ``torch.Generator().manual_seed(seed)`` when ``deterministic_eval`` is
      True (default), so an image always gives the same logits, whatever its
      batch; ``deterministic_eval=False`` restores the original behaviour
      (new random bases in evaluation too). The buffer is not saved in
      checkpoints, so the state dict is that of MMSeg's head.
    * ``rand_init=False``: the buffer ``bases`` is used in training and
      evaluation and is saved in checkpoints (key ``bases``, as in MMSeg).

    The factorisation runs in float32 with autocast disabled, because the
    iterated multiplicative updates overflow in float16 and lose accuracy in
    bfloat16 (figures in ``docs/segnext.md``). The result is cast back to
    the input dtype.

    Args:
        channels (int): Number of channels C.
        rank (int): Number of bases R (``MD_R``). Defaults to 64.
        num_groups (int): Number of channel groups S (``MD_S``). Defaults
            to 1.
        train_steps (int): Update steps in training. Defaults to 6.
        eval_steps (int): Update steps in evaluation. Defaults to 7.
        rand_init (bool): See above. Defaults to True.
        deterministic_eval (bool): See above. Defaults to True.
        seed (int): Seed of the fixed bases. Defaults to 0.

    Shape:
        ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(self,
                 channels: int,
                 rank: int = 64,
                 num_groups: int = 1,
                 train_steps: int = 6,
                 eval_steps: int = 7,
                 rand_init: bool = True,
                 deterministic_eval: bool = True,
                 seed: int = 0) -> None:
        super().__init__()
        checks = [('rank', rank, 1), ('num_groups', num_groups, 1),
                  ('train_steps', train_steps, 0),
                  ('eval_steps', eval_steps, 0)]
        for name, value, minimum in checks:
            if not isinstance(value, int) or value < minimum:
                raise ValueError(f'{name} must be an integer >= {minimum}, '
                                 f'got {value!r}')
        if channels % num_groups != 0:
            raise ValueError(f'channels ({channels}) must be divisible by '
                             f'MD_S / num_groups ({num_groups})')
        self.rank = rank
        self.num_groups = num_groups
        self.train_steps = train_steps
        self.eval_steps = eval_steps
        self.rand_init = rand_init
        self.deterministic_eval = deterministic_eval
        generator = torch.Generator().manual_seed(seed)
        bases = torch.rand((num_groups, channels // num_groups, rank),
                           generator=generator)
        self.register_buffer(
            'bases', F.normalize(bases, dim=1), persistent=not rand_init)

    def _initial_bases(self, batch_size, device):
        if self.rand_init and (self.training or not self.deterministic_eval):
            bases = torch.rand(batch_size * self.num_groups,
                               *self.bases.shape[1:])
            return F.normalize(bases, dim=1).to(device)
        return self.bases.float().repeat(batch_size, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        bases = self._initial_bases(B, x.device)
        steps = self.train_steps if self.training else self.eval_steps
        with torch.autocast(device_type=x.device.type, enabled=False):
            out = nmf_multiplicative_updates(
                x.float().reshape(B * self.num_groups, C // self.num_groups,
                                  H * W), bases, steps)
        return out.reshape(B, C, H, W).to(x.dtype)

    def extra_repr(self) -> str:
        return (f'rank={self.rank}, num_groups={self.num_groups}, '
                f'train_steps={self.train_steps}, '
                f'eval_steps={self.eval_steps}, rand_init={self.rand_init}, '
                f'deterministic_eval={self.deterministic_eval}')


# ham_kwargs key (case-insensitive) -> NMF2D argument. Upper case is the
# official SegNeXt spelling, MD_S/MD_R plus lower case MMSeg's.
_HAM_KWARGS = {
    'md_s': 'num_groups',
    'md_r': 'rank',
    'train_steps': 'train_steps',
    'eval_steps': 'eval_steps',
    'rand_init': 'rand_init',
    'deterministic_eval': 'deterministic_eval',
    'seed': 'seed',
}
# Accepted for config compatibility but without effect on NMF, as in both
# original codebases; see docs/segnext.md.
_INERT_HAM_KWARGS = ('inv_t', 'eta', 'md_d', 'spatial')


def parse_ham_kwargs(ham_kwargs: dict, channels: int) -> dict:
    """Translate official or MMSeg ``ham_kwargs`` to :class:`NMF2D` kwargs.

    Args:
        ham_kwargs (dict): Keys in either spelling (case-insensitive):
            ``MD_S``, ``MD_R``, ``TRAIN_STEPS``, ``EVAL_STEPS``,
            ``RAND_INIT``, plus this plugin's ``deterministic_eval`` and
            ``seed``. ``INV_T`` and ``ETA`` are accepted and ignored with a
            warning (NMF in both original codebases ignores them); ``MD_D``
            and ``SPATIAL`` are accepted only with the values the official
            code effectively uses (``channels / MD_S`` and True).
        channels (int): The Hamburger's channels.

    Returns:
        dict: Keyword arguments of :class:`NMF2D` (without ``channels``).
    """
    if not isinstance(ham_kwargs, dict):
        raise TypeError(
            f'ham_kwargs must be a dict, got {type(ham_kwargs).__name__}')
    parsed, inert, given_as = {}, {}, {}
    for key, value in ham_kwargs.items():
        name = key.lower() if isinstance(key, str) else key
        if name in _HAM_KWARGS:
            target, store = _HAM_KWARGS[name], parsed
        elif name in _INERT_HAM_KWARGS:
            target, store = name, inert
            given_as[name] = key
        else:
            raise ValueError(
                f'Unknown ham_kwargs key {key!r}; accepted (any case): '
                f'{sorted(_HAM_KWARGS) + sorted(_INERT_HAM_KWARGS)}')
        if target in store and store[target] != value:
            raise ValueError(
                f'ham_kwargs sets {target!r} twice with different values '
                f'({store[target]!r} and {value!r} from key {key!r})')
        store[target] = value
    num_groups = parsed.get('num_groups', 1)
    if 'spatial' in inert and not inert['spatial']:
        raise ValueError(
            'ham_kwargs SPATIAL=False (factorising over channels) is not '
            'supported: no SegNeXt model uses it')
    if 'md_d' in inert and inert['md_d'] * num_groups != channels:
        raise ValueError(
            f"ham_kwargs MD_D={inert['md_d']!r} cannot be honoured: D is "
            f'ham_channels / MD_S = {channels // num_groups} (the official '
            f'code ignores MD_D in the same way)')
    for name in ('inv_t', 'eta'):
        if name in inert:
            warnings.warn(
                f'ham_kwargs {given_as[name]}={inert[name]!r} has no effect: '
                f'NMF uses softmax temperature 1 and no step size, as in the '
                f'official SegNeXt code and MMSeg (see docs/segnext.md)')
    return parsed


class Hamburger(BaseModule):
    """Hamburger: 1x1 conv + ReLU, NMF, 1x1 conv + norm, residual + ReLU.

    Args:
        channels (int): Number of input and output channels.
        ham_kwargs (dict): Options of :class:`NMF2D`, see
            :func:`parse_ham_kwargs`.
        norm_cfg (dict, optional): Norm config of the output conv.
        init_cfg (dict, optional): Initialization config. Defaults to None.

    Shape:
        ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(self,
                 channels: int,
                 ham_kwargs: dict,
                 norm_cfg: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.ham_in = ConvModule(
            channels, channels, 1, norm_cfg=None, act_cfg=None)
        self.ham = NMF2D(channels, **parse_ham_kwargs(ham_kwargs, channels))
        self.ham_out = ConvModule(
            channels, channels, 1, norm_cfg=norm_cfg, act_cfg=None)

    def forward(self, x: Tensor) -> Tensor:
        # ReLU makes the NMF input non-negative
        out = self.ham(F.relu(self.ham_in(x), inplace=True))
        return F.relu(x + self.ham_out(out), inplace=True)


@MODELS.register_module()
class SegNeXtHamHead(BaseDecodeHead):
    """SegNeXt's light Hamburger decode head.

    The selected levels (by default strides 8, 16 and 32) are resized to the
    first one, concatenated, squeezed by a 1x1 ConvModule to
    ``ham_channels``, passed through :class:`Hamburger`, aligned to
    ``channels`` by a 1x1 ConvModule and classified. Module names, hence
    checkpoint keys, are those of MMSeg's ``LightHamHead`` and of the
    official head.

    Args:
        ham_channels (int): Channels of the Hamburger. Defaults to 512.
        ham_kwargs (dict): NMF options in official or MMSeg spelling, see
            :func:`parse_ham_kwargs`. Defaults to ``dict()`` (rank 64, 6/7
            steps, random bases in training, fixed bases in evaluation).
        **kwargs: Passed to ``BaseDecodeHead``; ``input_transform`` is always
            ``'multiple_select'``.

    Shape:
        Inputs: list of maps ``(B, C_i, H_i, W_i)``; output
        ``(B, num_classes, H_s, W_s)`` at the size of ``inputs[in_index[0]]``.
    """

    def __init__(self, ham_channels: int = 512, ham_kwargs: dict = dict(), **kwargs) -> None:
        if kwargs.setdefault('input_transform',
                             'multiple_select') != 'multiple_select':
            raise ValueError(f"input_transform must be 'multiple_select', got "
                             f"{kwargs['input_transform']!r}")
        super().__init__(**kwargs)
        self.ham_channels = ham_channels
        self.squeeze = ConvModule(
            sum(self.in_channels),
            ham_channels,
            1,
            conv_cfg=self.conv_cfg,
            norm_cfg=self.norm_cfg,
            act_cfg=self.act_cfg)
        self.hamburger = Hamburger(ham_channels, ham_kwargs, self.norm_cfg)
        self.align = ConvModule(
            ham_channels,
            self.channels,
            1,
            conv_cfg=self.conv_cfg,
            norm_cfg=self.norm_cfg,
            act_cfg=self.act_cfg)

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        inputs = self._transform_inputs(inputs)
        size = inputs[0].shape[2:]
        x = torch.cat([
            resize(
                level,
                size=size,
                mode='bilinear',
                align_corners=self.align_corners) for level in inputs
        ],
                      dim=1)
        x = self.hamburger(self.squeeze(x))
        return self.cls_seg(self.align(x))
