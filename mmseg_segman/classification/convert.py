"""Key layouts of ImageNet classifiers: the authors' files and mmpretrain's ``ImageClassifier``.

The authors' ImageNet files hold the encoder's keys without a prefix plus the classifier's
keys under one top-level prefix (the backbone's ``classifier_prefixes[0]``):

=============  ==================  =============================================================
encoder        classifier prefix   classifier layout
=============  ==================  =============================================================
SegMANEncoder  ``classifier.``     ``0`` 1x1 conv C->1024, ``1`` BN, ``2`` SiLU, ``3`` global
                                   average pool, ``4`` 1x1 conv 1024->classes
SegNeXtMSCAN   ``head.``           ``nn.Linear(C, classes)`` on the mean of the last (normed) map
LRFormer       ``head.``           ``nn.Linear(C, classes)`` on the mean of the last map
=============  ==================  =============================================================

An mmpretrain ``ImageClassifier`` built from ``configs/imagenet`` holds the encoder under
``backbone.`` and one of the heads of :mod:`mmseg_segman.classification.heads` under ``head.``,
whose own keys are the classifier's keys without their prefix. Converting is therefore a
renaming of prefixes in both directions: ``<key>`` <-> ``backbone.<key>`` and
``<prefix><key>`` <-> ``head.<key>``.

Nothing here needs mmpretrain: a segmentation-only install can convert files too.
"""
from collections import OrderedDict
from typing import Dict, Mapping, Union

import torch
import torch.nn as nn

from mmseg_segman.utils.checkpoint import (
    CheckpointMismatchError,
    StateDictSource,
    check_local_file,
    load_state_dict_checked,
    read_state_dict,
)

__all__ = [
    'classifier_prefix', 'is_mmpretrain_layout', 'official_to_mmpretrain',
    'mmpretrain_to_official', 'load_classifier_weights', 'to_official_state_dict'
]

BACKBONE_PREFIX = 'backbone.'
HEAD_PREFIX = 'head.'


def _backbone_class(backbone: Union[str, type, nn.Module]) -> type:
    if isinstance(backbone, nn.Module):
        return type(backbone)
    if isinstance(backbone, type):
        return backbone
    from mmseg.registry import MODELS

    cls = MODELS.get(backbone) if isinstance(backbone, str) else None
    if cls is None or not getattr(cls, 'classifier_prefixes', None):
        raise ValueError(f'{backbone!r} is not one of the plugin encoders with an ImageNet '
                         'classifier (SegMANEncoder, SegNeXtMSCAN, LRFormer)')
    return cls


def classifier_prefix(backbone: Union[str, type, nn.Module]) -> str:
    """The top-level prefix of the classifier keys in the authors' ImageNet files.

    Args:
        backbone (str | type | nn.Module): ``'SegMANEncoder'``, ``'SegNeXtMSCAN'`` or
            ``'LRFormer'``, the class, or an instance.

    Returns:
        str: ``'classifier.'`` for SegMAN, ``'head.'`` for SegNeXt and LRFormer.
    """
    prefixes = getattr(_backbone_class(backbone), 'classifier_prefixes', ())
    if not prefixes:
        raise ValueError(f'{backbone!r} declares no classifier_prefixes')
    return prefixes[0]


def is_mmpretrain_layout(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Whether the keys are an mmpretrain classifier's (some key starts with ``backbone.``)."""
    return any(k.startswith(BACKBONE_PREFIX) for k in state_dict)


def official_to_mmpretrain(state_dict: Mapping[str, torch.Tensor],
                           backbone: Union[str, type, nn.Module]) -> 'OrderedDict':
    """Rename the keys of an authors' ImageNet file to those of the ``ImageClassifier``.

    Args:
        state_dict (Mapping): The authors' tensors (wrappers and ``module.`` removed, e.g. by
            :func:`~mmseg_segman.utils.checkpoint.read_state_dict`).
        backbone: The encoder (see :func:`classifier_prefix`).

    Returns:
        OrderedDict: ``backbone.<key>`` for the encoder, ``head.<key>`` for the classifier.
    """
    prefix = classifier_prefix(backbone)
    return OrderedDict(
        (HEAD_PREFIX + k[len(prefix):] if k.startswith(prefix) else BACKBONE_PREFIX + k, v)
        for k, v in state_dict.items())


def mmpretrain_to_official(state_dict: Mapping[str, torch.Tensor],
                           backbone: Union[str, type, nn.Module]) -> 'OrderedDict':
    """Rename an ``ImageClassifier``'s keys to the authors' layout (the reverse conversion).

    Keys outside ``backbone.`` and ``head.`` (none in a plain classifier) are refused, since
    the authors' files have no place for them.
    """
    prefix = classifier_prefix(backbone)
    out = OrderedDict()
    for k, v in state_dict.items():
        if k.startswith(BACKBONE_PREFIX):
            out[k[len(BACKBONE_PREFIX):]] = v
        elif k.startswith(HEAD_PREFIX):
            out[prefix + k[len(HEAD_PREFIX):]] = v
        else:
            raise CheckpointMismatchError(
                f'key {k!r} is neither under backbone. nor head.: not an mmpretrain '
                'ImageClassifier state dict of a plugin encoder')
    return out


def load_classifier_weights(model: nn.Module,
                            checkpoint: Union[str, dict],
                            map_location: str = 'cpu') -> StateDictSource:
    """Load an authors' ImageNet file or an mmpretrain checkpoint into an ``ImageClassifier``,
    requiring every key to match.

    The file is read as the backbones read pretrained files (``state_dict_ema`` of timm files
    preferred, ``module.`` removed); a file in the authors' layout is renamed with
    :func:`official_to_mmpretrain`. Renames that a module does itself while loading (SegNeXt's
    official ``mlp.dwconv.dwconv.*``) apply, since the weights go through
    ``model.load_state_dict``.

    Args:
        model (nn.Module): An mmpretrain ``ImageClassifier`` whose ``backbone`` is one of the
            plugin's encoders.
        checkpoint (str | dict): Path, URL or loaded checkpoint.
        map_location (str): Device to load tensors to. Default: 'cpu'.

    Returns:
        StateDictSource: The state dict as loaded (mmpretrain keys), the part of the file it
        came from, and ``prefix`` = ``'official'`` if it was renamed, else ``''``.

    Raises:
        CheckpointMismatchError: naming the file and the missing, unexpected or wrongly shaped
            keys.
    """
    name = checkpoint if isinstance(checkpoint, str) else 'the given checkpoint'
    if isinstance(checkpoint, str):
        check_local_file(checkpoint, 'classifier checkpoint')
    backbone = getattr(model, 'backbone', None)
    if backbone is None:
        raise TypeError(f'{type(model).__name__} has no backbone: expected an mmpretrain '
                        'ImageClassifier')
    found = read_state_dict(checkpoint, map_location=map_location)
    state_dict: Dict[str, torch.Tensor] = found.state_dict
    layout = ''
    if not is_mmpretrain_layout(state_dict):
        state_dict = official_to_mmpretrain(state_dict, backbone)
        layout = 'official'
    prefix = classifier_prefix(backbone)
    load_state_dict_checked(
        model, state_dict, f'{name} ({found.source}, {layout or "mmpretrain"} layout)',
        what=f'the {type(backbone).__name__} classifier',
        hint=("Is it another variant or num_classes? Expected the authors' ImageNet file "
              "(encoder keys without prefix, classifier "
              f"under {prefix!r}) or an mmpretrain checkpoint (backbone.*, head.*) of this "
              'variant and num_classes'))
    return StateDictSource(OrderedDict(state_dict), found.source, layout)


def to_official_state_dict(model: nn.Module) -> 'OrderedDict':
    """The state dict of an ``ImageClassifier`` in the authors' layout (see
    :func:`mmpretrain_to_official`), e.g. to publish an mmpretrain-trained encoder in the
    format the official code reads."""
    return mmpretrain_to_official(model.state_dict(), model.backbone)
