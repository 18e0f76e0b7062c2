"""Classification heads whose keys are those of the authors' ImageNet classifiers.

Placed under ``head.`` of an mmpretrain ``ImageClassifier`` (with ``neck=None``), their keys are
the official classifier keys with the official prefix replaced by ``head.`` (see
:mod:`mmseg_segman.classification.convert`). Both take the encoder's stage outputs and
classify the last one; they pool it themselves, since the official classifiers pool at
different points (SegMAN after a conv + BN + SiLU, the others before the linear layer).
"""
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_activation_layer, build_norm_layer
from mmpretrain.models.heads import ClsHead
from mmpretrain.registry import MODELS

__all__ = ['SegMANClsHead', 'PooledLinearClsHead']

Feats = Union[torch.Tensor, Sequence[torch.Tensor]]


def _last(feats: Feats) -> torch.Tensor:
    return feats if isinstance(feats, torch.Tensor) else feats[-1]


@MODELS.register_module()
class SegMANClsHead(ClsHead):
    """The SegMAN ImageNet classifier: 1x1 conv -> BN -> SiLU -> global average pool -> 1x1 conv.

    Submodules are named ``0`` to ``4`` as in the official ``classifier`` ``nn.Sequential``, so
    the keys are ``0.*`` (conv), ``1.*`` (BN) and ``4.*`` (the class projection), i.e. the
    official ``classifier.{0,1,4}.*``.

    Args:
        num_classes (int): Number of classes.
        in_channels (int): Channels of the last encoder stage.
        projection (int): Channels of the hidden 1x1 conv. Default: 1024 (official).
        norm_cfg (dict): Norm after the hidden conv. Default: ``dict(type='BN')``.
        act_cfg (dict): Activation after it. Default: ``dict(type='SiLU')``.
        init_cfg (dict | list[dict], optional): Default: truncated normal (std 0.02) for the
            convs with zero bias, unit/zero BN: the official initialisation.
        **kwargs: ``loss``, ``topk``, ``cal_acc`` of :class:`mmpretrain.models.ClsHead`.
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: int,
                 projection: int = 1024,
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='SiLU'),
                 init_cfg: Optional[Union[dict, list]] = (
                     dict(type='TruncNormal', layer='Conv2d', std=0.02, bias=0.),
                     dict(type='Constant', layer='_BatchNorm', val=1., bias=0.)),
                 **kwargs) -> None:
        super().__init__(init_cfg=list(init_cfg) if isinstance(init_cfg, tuple) else init_cfg,
                         **kwargs)
        if num_classes <= 0:
            raise ValueError(f'SegMANClsHead: num_classes must be positive, got {num_classes}')
        self.num_classes = num_classes
        self.in_channels = in_channels
        layers = (nn.Conv2d(in_channels, projection, 1), build_norm_layer(norm_cfg, projection)[1],
                  build_activation_layer(act_cfg), nn.AdaptiveAvgPool2d(1),
                  nn.Conv2d(projection, num_classes, 1))
        for i, layer in enumerate(layers):
            self.add_module(str(i), layer)

    def pre_logits(self, feats: Feats) -> torch.Tensor:
        """(B, projection): the pooled hidden features of the last stage."""
        x = _last(feats)
        for i in range(4):
            x = self._modules[str(i)](x)
        return x.flatten(1)

    def forward(self, feats: Feats) -> torch.Tensor:
        """(B, num_classes) class scores."""
        x = self.pre_logits(feats)
        return self._modules['4'](x[:, :, None, None]).flatten(1)


@MODELS.register_module()
class PooledLinearClsHead(ClsHead):
    """Global average pooling of the last stage, then a linear layer whose ``weight`` and
    ``bias`` are the head's own parameters.

    Under ``head.`` of an ``ImageClassifier`` its keys are ``head.weight`` / ``head.bias``, the
    keys of the VAN-style MSCAN and the P2T-style LRFormer ImageNet files. An input that is
    already pooled (``(B, C)``, e.g. after mmpretrain's ``GlobalAveragePooling`` neck) is used
    as it is.

    Args:
        num_classes (int): Number of classes.
        in_channels (int): Channels of the last encoder stage.
        init_cfg (dict | list[dict], optional): None for the official initialisation
            (truncated normal, std 0.02, zero bias), or mmengine init configs. Default: None.
        **kwargs: ``loss``, ``topk``, ``cal_acc`` of :class:`mmpretrain.models.ClsHead`.
    """

    def __init__(self, num_classes: int, in_channels: int, init_cfg: Optional[dict] = None,
                 **kwargs) -> None:
        super().__init__(init_cfg=init_cfg, **kwargs)
        if num_classes <= 0:
            raise ValueError(f'PooledLinearClsHead: num_classes must be positive, got '
                             f'{num_classes}')
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.weight = nn.Parameter(torch.empty(num_classes, in_channels))
        self.bias = nn.Parameter(torch.zeros(num_classes))
        nn.init.trunc_normal_(self.weight, std=0.02)

    def init_weights(self) -> None:
        """The official initialisation unless ``init_cfg`` is given."""
        if self.init_cfg:
            super().init_weights()
            return
        nn.init.trunc_normal_(self.weight, std=0.02)
        nn.init.zeros_(self.bias)
        self._is_init = True

    def pre_logits(self, feats: Feats) -> torch.Tensor:
        """(B, in_channels): the spatial mean of the last stage."""
        x = _last(feats)
        return x.mean(dim=(2, 3)) if x.dim() == 4 else x

    def forward(self, feats: Feats) -> torch.Tensor:
        """(B, num_classes) class scores."""
        return F.linear(self.pre_logits(feats), self.weight, self.bias)

    def extra_repr(self) -> str:
        return f'in_channels={self.in_channels}, num_classes={self.num_classes}'
