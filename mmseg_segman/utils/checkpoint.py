"""The one checkpoint reader of the plugin.

Every path that reads weights goes through here: the backbones' ``init_cfg=dict(type=
'Pretrained')``, the ONNX exporter, the FLOPs and benchmark tools and the model converters.
It knows the layouts the authors released:

* wrappers: timm ImageNet files keep ``state_dict_ema`` (the released weights) next to
  ``state_dict``; mmengine / mmseg files keep ``state_dict``; some files use ``model``; a bare
  state dict is accepted too;
* prefixes: ``module.`` (DataParallel), and ``backbone.`` / ``decode_head.`` of segmentors;
* classifier heads of ImageNet files, which a segmentation backbone drops;
* the two SegNeXt key layouts (``mlp.dwconv.dwconv.*`` of the official files and MMSeg's
  ``mlp.dwconv.*``; renamed by the module itself while loading).

Files are read with mmengine's :class:`~mmengine.runner.CheckpointLoader`, so local paths,
URLs and every scheme mmengine knows work, and the plugin's weights-only rules
(:mod:`mmseg_segman.compat`) apply.
"""
import argparse
import contextlib
import os
from collections import OrderedDict
from typing import Dict, List, NamedTuple, Optional, Sequence, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log

from mmseg_segman.compat import PluginError

__all__ = [
    'CheckpointMismatchError', 'StateDictSource', 'read_state_dict', 'load_backbone_weights',
    'check_local_file', 'check_pretrained_files'
]

# Wrappers in order of preference: EMA weights are what the SegMAN authors release.
WRAPPER_KEYS = ('state_dict_ema', 'state_dict', 'model')
# How many key names an error message lists.
_SHOWN = 5


class CheckpointMismatchError(PluginError):
    """A checkpoint does not fit the module it is loaded into (pretrained backbone weights,
    an evaluated model, a converted file); the message names the keys and the opt-out."""


class StateDictSource(NamedTuple):
    """What :func:`read_state_dict` found in a checkpoint.

    Attributes:
        state_dict (OrderedDict): Tensors by key, prefixes removed.
        source (str): Which part of the file they came from (``'state_dict_ema'``,
            ``'state_dict'``, ``'model'`` or ``'the whole file'``).
        prefix (str): The prefix that was selected and removed (``''`` if none).
    """
    state_dict: 'OrderedDict[str, torch.Tensor]'
    source: str
    prefix: str


def check_local_file(checkpoint: str, what: str, hint: str = '') -> None:
    """Raise :class:`FileNotFoundError` naming ``checkpoint`` if it is a missing local file.

    Args:
        checkpoint (str): Path or URL (URLs and other schemes are not checked).
        what (str): What the file is for, e.g. ``'SegMANEncoder init_cfg checkpoint'``.
        hint (str): Where to get the file / how to proceed, appended to the message.
    """
    if '://' in checkpoint or os.path.isfile(checkpoint):
        return
    reason = 'is a directory' if os.path.isdir(checkpoint) else 'does not exist'
    raise FileNotFoundError(f'{what} {checkpoint!r} {reason}' + (f'. {hint}' if hint else ''))


def _load_file(checkpoint: str, map_location: str) -> dict:
    from mmengine.runner import CheckpointLoader

    # timm's training script stores its argparse.Namespace next to the weights; allow just
    # that type for weights-only unpickling (torch < 2.5 has no safe_globals context).
    safe_globals = getattr(torch.serialization, 'safe_globals', None)
    with safe_globals([argparse.Namespace]) if safe_globals else contextlib.nullcontext():
        return CheckpointLoader.load_checkpoint(checkpoint, map_location=map_location)


def _strip(state_dict: Dict[str, torch.Tensor], prefix: str) -> 'OrderedDict[str, torch.Tensor]':
    return OrderedDict((k[len(prefix):], v) for k, v in state_dict.items() if k.startswith(prefix))


def read_state_dict(checkpoint: Union[str, dict],
                    prefix: Optional[str] = None,
                    map_location: str = 'cpu',
                    auto_prefix: Sequence[str] = ()) -> StateDictSource:
    """Read the tensors of a checkpoint in any layout the authors or mmengine write.

    Args:
        checkpoint (str | dict): Path or URL of the file, or an already loaded checkpoint.
        prefix (str, optional): Keep only keys that start with it, with it removed
            (``'backbone.'`` for the encoder of a segmentation checkpoint). Default: None.
        map_location (str): Device to load tensors to. Default: 'cpu'.
        auto_prefix (Sequence[str]): Without ``prefix``: the first of these that some key
            starts with is selected as the prefix (e.g. ``('backbone.',)`` lets a backbone
            read a whole segmentor checkpoint). Default: ().

    Returns:
        StateDictSource: the tensors, which wrapper they came from and the prefix removed.

    Raises:
        CheckpointMismatchError: if the file holds no tensors, or none under ``prefix``.
    """
    name = checkpoint if isinstance(checkpoint, str) else 'the given checkpoint'
    ckpt = _load_file(checkpoint, map_location) if isinstance(checkpoint, str) else checkpoint
    if not isinstance(ckpt, dict):
        raise CheckpointMismatchError(f'{name} holds a {type(ckpt).__name__}, not a state dict')
    for source in WRAPPER_KEYS:
        if isinstance(ckpt.get(source), dict):
            state_dict = ckpt[source]
            break
    else:
        source, state_dict = 'the whole file', ckpt
    tensors = OrderedDict((k, v) for k, v in state_dict.items() if isinstance(v, torch.Tensor))
    if not tensors:
        raise CheckpointMismatchError(f'{name} holds no tensors in {source} '
                                      f'(first keys: {list(state_dict)[:_SHOWN]})')
    # DataParallel / DDP wrappers, removed key by key as the official loaders do.
    tensors = OrderedDict((k[len('module.'):] if k.startswith('module.') else k, v)
                          for k, v in tensors.items())
    if prefix is None:
        prefix = next((p for p in auto_prefix if any(k.startswith(p) for k in tensors)), '')
    if prefix:
        selected = _strip(tensors, prefix)
        if not selected:
            raise CheckpointMismatchError(
                f'no key of {name} ({source}) starts with prefix {prefix!r} '
                f'(first keys: {list(tensors)[:_SHOWN]})')
        tensors = selected
    return StateDictSource(tensors, source, prefix)


def _shown(keys: List[str]) -> str:
    more = len(keys) - _SHOWN
    return ', '.join(keys[:_SHOWN]) + (f' and {more} more' if more > 0 else '')


def load_backbone_weights(module: nn.Module,
                          checkpoint: Union[str, dict],
                          prefix: Optional[str] = None,
                          classifier_prefixes: Sequence[str] = (),
                          strict: bool = True,
                          map_location: str = 'cpu',
                          hint: str = '') -> List[str]:
    """Load pretrained backbone weights, requiring by default that every key matches.

    Keys of the ImageNet classifier (``classifier_prefixes``) are dropped; the rest are loaded
    with ``module.load_state_dict`` (so modules that rename legacy keys while loading, such as
    SegNeXt's MLP, see them). One line is logged::

        loaded 370/370 keys from FILE (source: state_dict_ema), ignored 6 classifier keys

    Args:
        module (nn.Module): The backbone.
        checkpoint (str | dict): Path, URL or loaded checkpoint.
        prefix (str, optional): See :func:`read_state_dict`; when None, a ``backbone.``
            prefix is selected automatically if the file has one. Default: None.
        classifier_prefixes (Sequence[str]): Key prefixes of the ImageNet head to drop.
        strict (bool): Raise :class:`CheckpointMismatchError` when some weights of ``module``
            are not in the file; with False they are logged as a warning and keep their
            initialisation. Keys of the file that ``module`` lacks are always only logged;
            shape mismatches always raise. Default: True.
        map_location (str): Device to load tensors to. Default: 'cpu'.
        hint (str): Appended to the missing-file message (where to download the file).

    Returns:
        list[str]: The keys of ``module`` that the checkpoint did not provide (empty unless
        ``strict=False``).
    """
    name = checkpoint if isinstance(checkpoint, str) else 'the given checkpoint'
    what = f'{type(module).__name__} pretrained checkpoint'
    if isinstance(checkpoint, str):
        check_local_file(checkpoint, what, hint)
    found = read_state_dict(checkpoint, prefix, map_location, auto_prefix=('backbone.', ))
    classifier = [k for k in found.state_dict if k.startswith(tuple(classifier_prefixes))]
    state_dict = OrderedDict((k, v) for k, v in found.state_dict.items() if k not in classifier)

    own = module.state_dict()
    mismatched = [f'{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}'
                  for k, v in state_dict.items() if k in own and v.shape != own[k].shape]
    if mismatched:
        raise CheckpointMismatchError(
            f'{name} does not fit this {type(module).__name__} (another variant or arch?): '
            f'{len(mismatched)} shape mismatches: {_shown(mismatched)}')
    try:
        result = module.load_state_dict(state_dict, strict=False)
    except RuntimeError as err:  # shape mismatches of keys renamed while loading
        raise CheckpointMismatchError(f'{name} does not fit this {type(module).__name__}: '
                                      f'{err}') from err
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    # BN's step counters are not reported missing (PyTorch fills them), so they are not counted.
    total = sum(not k.endswith('num_batches_tracked') for k in own)
    summary = (f'loaded {total - len(missing)}/{total} keys from {name} (source: '
               f'{found.source}{", prefix " + repr(found.prefix) if found.prefix else ""})'
               f', ignored {len(classifier)} classifier keys')
    if unexpected:
        # Extra keys (another head, EMA copies of buffers ...) cost nothing: warn only.
        print_log(f'{type(module).__name__}: {len(unexpected)} keys of {name} are not used '
                  f'by the model: {_shown(unexpected)}', logger='current', level=30)
    if missing:
        message = (f'{type(module).__name__}: {summary}; {len(missing)} weights of the model '
                   f'are not in the file: {_shown(missing)}')
        if strict:
            raise CheckpointMismatchError(
                message + '. Is it a checkpoint of this family and variant? To load it anyway '
                "add strict=False to the backbone's init_cfg (e.g. --cfg-options "
                'model.backbone.init_cfg.strict=False); the missing weights then keep their '
                'initialisation')
        print_log(message, logger='current', level=30)
    else:
        print_log(f'{type(module).__name__}: {summary}', logger='current')
    return missing


def _pretrained_entries(node, path: str):
    """(config key, checkpoint) of every ``Pretrained`` init_cfg / ``pretrained`` path."""
    if isinstance(node, dict):
        if node.get('type') == 'Pretrained' and isinstance(node.get('checkpoint'), str):
            yield path, node['checkpoint']
        for key, value in node.items():
            if key == 'pretrained' and isinstance(value, str):
                yield f'{path}.pretrained', value
            else:
                yield from _pretrained_entries(value, f'{path}.{key}')
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _pretrained_entries(value, f'{path}.{i}')


def check_pretrained_files(cfg) -> None:
    """Fail before anything is built when a local pretrained file of ``cfg.model`` is missing.

    Training loads pretrained weights only after the dataloaders are built; this check lets
    ``tools/train.py`` report a missing file at once, with the config key, where the file comes
    from (the backbone's :meth:`missing_pretrained_hint`) and how to train from scratch.

    Args:
        cfg (mmengine.Config): The training config (after ``--cfg-options``).

    Raises:
        FileNotFoundError: naming the file and the config key.
    """
    from mmseg.registry import MODELS

    model = cfg.get('model', {})
    backbone_type = model.get('backbone', {}).get('type') if isinstance(model, dict) else None
    backbone_cls = MODELS.get(backbone_type) if isinstance(backbone_type, str) else None
    for key, checkpoint in _pretrained_entries(model, 'model'):
        if '://' in checkpoint or os.path.isfile(checkpoint):
            continue
        hint = (backbone_cls.missing_pretrained_hint()
                if key.startswith(('model.backbone', 'model.pretrained'))
                and hasattr(backbone_cls, 'missing_pretrained_hint') else
                f'Put the file there, or set {key}=None')
        check_local_file(checkpoint, f'the pretrained weights of {key}', hint)
