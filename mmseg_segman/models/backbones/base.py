"""The contract every backbone of the plugin follows.

:class:`SegBackbone` gives the three families one set of constructor arguments and one
behaviour for them:

* ``arch``: a variant name or a dict, resolved by :meth:`SegBackbone.resolve_arch`;
* ``out_indices``, ``frozen_stages``, ``with_cp`` (gradient checkpointing whenever gradients
  are being recorded) and ``drop_path_rate`` through :func:`drop_path_schedule`;
* ``pretrained``, MMSeg's deprecated alias of ``init_cfg=dict(type='Pretrained', ...)``;
* ``init_cfg`` as None, a dict or a list, applied in one order by
  :meth:`SegBackbone.init_weights`: the official initialisation, then every ``init_cfg`` entry
  that is not ``Pretrained``, then the pretrained weights, read by
  :func:`mmseg_segman.utils.checkpoint.load_backbone_weights`.
"""
import copy
import warnings
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmengine.model import BaseModule
from mmengine.model.weight_init import initialize

from mmseg_segman.utils.checkpoint import load_backbone_weights

InitCfg = Optional[Union[dict, List[dict]]]


def drop_path_schedule(drop_path_rate: float, depths: Sequence[int]) -> List[List[float]]:
    """Stochastic-depth rates growing linearly from 0 to ``drop_path_rate`` over all blocks.

    Args:
        drop_path_rate (float): Rate of the last block, in [0, 1).
        depths (Sequence[int]): Blocks per stage.

    Returns:
        list[list[float]]: The rates of each stage's blocks.
    """
    if not 0 <= drop_path_rate < 1:
        raise ValueError(f'drop_path_rate must be in [0, 1), got {drop_path_rate!r}')
    total = sum(depths)
    rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
    stages, first = [], 0
    for depth in depths:
        stages.append(rates[first:first + depth])
        first += depth
    return stages


def run_block(block: nn.Module, *args, with_cp: bool = False) -> torch.Tensor:
    """``block(*args)``, recomputed in the backward pass when ``with_cp`` is set.

    Conditioned on gradient recording, not on the input's ``requires_grad``: behind a frozen
    stem the input needs no gradient but the block's weights do. (BN running statistics are then
    updated twice per step, as with every checkpointed MMSeg backbone.)
    """
    if with_cp and torch.is_grad_enabled():
        return cp.checkpoint(block, *args, use_reentrant=False)
    return block(*args)


def init_cfg_with_pretrained(owner: str, pretrained: Optional[str], init_cfg: InitCfg) -> InitCfg:
    """Turn MMSeg's deprecated ``pretrained=path`` into the equivalent ``init_cfg``."""
    if pretrained is None:
        return init_cfg
    if init_cfg is not None:
        raise ValueError(f'{owner}: set either pretrained or init_cfg, not both (pretrained is '
                         "MMSeg's deprecated spelling of init_cfg=dict(type='Pretrained', "
                         'checkpoint=...))')
    if not isinstance(pretrained, str):
        raise TypeError(f'{owner}: pretrained must be a checkpoint path (str), got '
                        f'{type(pretrained).__name__}')
    warnings.warn(f'{owner}: pretrained is deprecated, use '
                  "init_cfg=dict(type='Pretrained', checkpoint=...)", DeprecationWarning)
    return dict(type='Pretrained', checkpoint=pretrained)


class SegBackbone(BaseModule):
    """Base class of the plugin's backbones (see the module docstring for the contract).

    Subclasses set :attr:`arch_settings` (and :attr:`arch_defaults`, the optional keys of a
    dict ``arch``), :attr:`classifier_prefixes` (ImageNet head keys dropped when loading) and
    :attr:`pretrained_hint` (where the pretrained files come from), and implement
    :meth:`official_init_weights` and :meth:`frozen_modules`.

    Args:
        out_indices (Sequence[int]): Stages whose outputs :meth:`forward` returns.
        frozen_stages (int): -1 freezes nothing, 0 the stem, n >= 1 the stem and stages 1..n:
            no gradients, norms in eval mode.
        with_cp (bool): Gradient checkpointing of every block while gradients are recorded
            (saves memory, costs a second forward).
        pretrained (str, optional): Deprecated alias of ``init_cfg=dict(type='Pretrained',
            checkpoint=pretrained)``.
        init_cfg (dict | list[dict], optional): Initialisation configs. A ``Pretrained`` entry
            takes ``checkpoint`` (path or URL), optional ``prefix`` (e.g. ``'backbone.'``;
            found automatically in segmentor checkpoints), ``map_location`` and ``strict``
            (default True: every backbone weight must be in the file).
    """

    arch_settings: Dict[str, dict] = {}
    arch_defaults: dict = {}
    num_stages: Optional[int] = 4
    classifier_prefixes: Tuple[str, ...] = ()
    pretrained_hint: str = ''

    def __init__(self,
                 out_indices: Sequence[int] = (0, 1, 2, 3),
                 frozen_stages: int = -1,
                 with_cp: bool = False,
                 pretrained: Optional[str] = None,
                 init_cfg: InitCfg = None) -> None:
        name = type(self).__name__
        super().__init__(init_cfg=init_cfg_with_pretrained(name, pretrained, init_cfg))
        out_indices = tuple(out_indices)
        if not out_indices or any(i not in range(self.num_stages) for i in out_indices):
            raise ValueError(f'{name}: out_indices must be a non-empty subset of '
                             f'0..{self.num_stages - 1}, got {out_indices}')
        if frozen_stages not in range(-1, self.num_stages + 1):
            raise ValueError(f'{name}: frozen_stages must be in -1..{self.num_stages}, got '
                             f'{frozen_stages!r}')
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.with_cp = with_cp

    # ----------------------------------------------------------------------------- arch
    @classmethod
    def resolve_arch(cls, arch: Union[str, dict], **overrides) -> dict:
        """The settings of ``arch`` (a key of :attr:`arch_settings` or a dict), with the
        non-None ``overrides`` applied and every per-stage entry checked for length.

        Returns:
            dict: A new dict; per-stage entries are tuples.
        """
        name = cls.__name__
        reference = next(iter(cls.arch_settings.values()))
        if isinstance(arch, str):
            if arch.lower() not in cls.arch_settings:
                raise ValueError(f'{name}: arch {arch!r} is not one of '
                                 f'{sorted(cls.arch_settings)}; or pass a dict with the keys '
                                 f'{sorted(reference)}')
            settings = copy.deepcopy(cls.arch_settings[arch.lower()])
        elif isinstance(arch, dict):
            settings = dict(copy.deepcopy(cls.arch_defaults), **arch)
            missing = set(reference) - set(settings)
            unknown = set(settings) - set(reference) - set(cls.arch_defaults)
            if missing or unknown:
                raise ValueError(f'{name}: arch dict ' +
                                 (f'is missing {sorted(missing)} ' if missing else '') +
                                 (f'has unknown keys {sorted(unknown)} ' if unknown else '') +
                                 f'(keys: {sorted(reference)})')
        else:
            raise TypeError(f'{name}: arch must be a str or dict, got {type(arch).__name__}')
        for key, value in cls.arch_defaults.items():
            settings.setdefault(key, copy.deepcopy(value))
        settings.update({k: v for k, v in overrides.items() if v is not None})
        # A fixed stage count, or (SegNeXt, num_stages None) as many as the arch has.
        num_stages = cls.num_stages or len(settings['depths'])
        # Per-stage entries: the list-valued keys of the variant table and of the defaults.
        stage_keys = {k for k, v in dict(reference, **cls.arch_defaults).items()
                      if isinstance(v, (list, tuple))}
        for key, value in settings.items():
            if key in stage_keys:
                if len(value) != num_stages:
                    raise ValueError(f'{name}: arch {key} needs one value per stage '
                                     f'({num_stages}), got {list(value)}')
                settings[key] = tuple(value)
        if any(d < 1 for d in settings['depths']):
            raise ValueError(f'{name}: depths must be >= 1, got {settings["depths"]}')
        return settings

    # ----------------------------------------------------------------------- weights
    def official_init_weights(self) -> None:
        """The official random initialisation (before any ``init_cfg``)."""
        raise NotImplementedError

    def init_weights(self) -> None:
        """Official initialisation, then the non-``Pretrained`` ``init_cfg`` entries in order,
        then the ``Pretrained`` one (at most one)."""
        cfgs = [] if self.init_cfg is None else (
            [self.init_cfg] if isinstance(self.init_cfg, dict) else list(self.init_cfg))
        name = type(self).__name__
        for cfg in cfgs:
            if not isinstance(cfg, dict) or 'type' not in cfg:
                raise TypeError(f'{name}: every init_cfg entry must be a dict with a type, got '
                                f'{cfg!r}')
        pretrained = [cfg for cfg in cfgs if cfg['type'] == 'Pretrained']
        others = [cfg for cfg in cfgs if cfg['type'] != 'Pretrained']
        if len(pretrained) > 1:
            raise ValueError(f'{name}: init_cfg holds {len(pretrained)} Pretrained entries; '
                             'give one')
        self.official_init_weights()
        if others:
            initialize(self, others)
        if pretrained:
            cfg = pretrained[0]
            if not cfg.get('checkpoint'):
                raise ValueError(f"{name}: init_cfg {cfg} has no 'checkpoint': give the path or "
                                 'URL of the pretrained weights, or set init_cfg=None to train '
                                 'from scratch')
            unknown = set(cfg) - {'type', 'checkpoint', 'prefix', 'map_location', 'strict'}
            if unknown:
                raise ValueError(f'{name}: unknown keys {sorted(unknown)} in Pretrained '
                                 f'init_cfg {cfg}')
            load_backbone_weights(self, cfg['checkpoint'], prefix=cfg.get('prefix'),
                                  classifier_prefixes=self.classifier_prefixes,
                                  strict=cfg.get('strict', True),
                                  map_location=cfg.get('map_location', 'cpu'),
                                  hint=self.missing_pretrained_hint())
        self._is_init = True

    @classmethod
    def missing_pretrained_hint(cls) -> str:
        """What to do when the pretrained file is missing (used in the error message)."""
        where = f' ({cls.pretrained_hint})' if cls.pretrained_hint else ''
        return (f'Download the ImageNet-1k weights{where} and set '
                'model.backbone.init_cfg.checkpoint to the file, or set '
                'model.backbone.init_cfg=None to train from scratch')

    # ------------------------------------------------------------------- frozen stages
    def frozen_modules(self) -> List[nn.Module]:
        """The modules :attr:`frozen_stages` freezes (the stem for 0, then whole stages)."""
        raise NotImplementedError

    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        for module in self.frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'SegBackbone':
        """Set train/eval mode, keeping the frozen stages (and their BN statistics) in eval."""
        super().train(mode)
        self._freeze_stages()
        return self

    # ------------------------------------------------------------------------ forward
    def run_block(self, block: nn.Module, *args) -> torch.Tensor:
        """``block(*args)``, with gradient checkpointing when ``with_cp`` is set."""
        return run_block(block, *args, with_cp=self.with_cp)

    def check_input(self, x: torch.Tensor, in_channels: int) -> None:
        """Raise a clear error for anything but a (B, in_channels, H, W) batch."""
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != in_channels:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f'{type(self).__name__} expects images of shape (B, {in_channels}, '
                             f'H, W), got {got}')
