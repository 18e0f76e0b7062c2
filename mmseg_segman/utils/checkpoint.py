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

Local files and ``http(s)://`` URLs are read weights-only (:mod:`.checkpoint_io`); other
schemes go through mmengine's :class:`~mmengine.runner.CheckpointLoader`.

:func:`load_state_dict_checked` is the one strict load of the plugin (backbones, classifiers,
the exporter), and :func:`check_state_dict_matches` the same check without loading (strict
evaluation): both name the missing, unexpected and wrongly shaped keys.
"""
import os
import warnings
from collections import OrderedDict
from typing import Dict, List, Mapping, NamedTuple, Optional, Sequence, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log

from ..errors import CheckpointMismatchError
from .checkpoint_io import load_checkpoint_file, load_from_http_weights_only

__all__ = [
    'CheckpointMismatchError', 'StateDictSource', 'read_state_dict', 'load_backbone_weights',
    'check_local_file', 'check_pretrained_files', 'Mismatch', 'state_dict_mismatch',
    'check_state_dict_matches', 'load_state_dict_checked', 'checkpoint_weights'
]

# Wrappers in order of preference: EMA weights are what the SegMAN authors release.
WRAPPER_KEYS = ('state_dict_ema', 'state_dict', 'model')
# How many key names an error message lists.
_SHOWN = 5


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
    if checkpoint.startswith(('http://', 'https://')):
        return load_from_http_weights_only(checkpoint, map_location)
    if '://' not in checkpoint:
        return load_checkpoint_file(os.path.expanduser(checkpoint), map_location)
    from mmengine.runner import CheckpointLoader

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

    total = sum(not k.endswith('num_batches_tracked') for k in module.state_dict())
    strict_hint = ("Is it a checkpoint of this family and variant? To load it anyway add "
                   "strict=False to the backbone's init_cfg (e.g. --cfg-options "
                   'model.backbone.init_cfg.strict=False); the missing weights then keep '
                   'their initialisation')
    # Extra keys (another head, EMA copies of buffers ...) cost nothing: only logged.
    mismatch = load_state_dict_checked(module, state_dict, name, strict=strict,
                                       allow_unexpected=True, hint=strict_hint,
                                       what=f'this {type(module).__name__}')
    summary = (f'loaded {total - len(mismatch.missing)}/{total} keys from {name} (source: '
               f'{found.source}{", prefix " + repr(found.prefix) if found.prefix else ""})'
               f', ignored {len(classifier)} classifier keys')
    if mismatch.unexpected:
        print_log(f'{type(module).__name__}: {len(mismatch.unexpected)} keys of {name} are '
                  f'not used by the model: {_shown(mismatch.unexpected)}', logger='current',
                  level=30)
    if mismatch.missing:
        print_log(f'{type(module).__name__}: {summary}; {len(mismatch.missing)} weights of '
                  f'the model are not in the file: {_shown(mismatch.missing)}',
                  logger='current', level=30)
    else:
        print_log(f'{type(module).__name__}: {summary}', logger='current')
    return mismatch.missing


# --------------------------------------------------------------------------------------
# The strict check and the strict load
# --------------------------------------------------------------------------------------
class Mismatch(NamedTuple):
    """Differences between a model and a state dict.

    Attributes:
        missing (list[str]): Model keys the state dict lacks.
        unexpected (list[str]): State-dict keys the model does not have.
        shapes (list[tuple]): ``(key, checkpoint shape, model shape)`` of keys in both.
    """
    missing: list
    unexpected: list
    shapes: list

    def __bool__(self) -> bool:
        return bool(self.missing or self.unexpected or self.shapes)

    def describe(self) -> str:
        """``'2 with another shape (...); 1 missing from the checkpoint (...)'``."""
        parts = []
        if self.shapes:
            parts.append(f'{len(self.shapes)} with another shape (' + _shown(
                [f'{k}: checkpoint {list(c)} vs model {list(m)}'
                 for k, c, m in self.shapes]) + ')')
        if self.missing:
            parts.append(f'{len(self.missing)} missing from the checkpoint '
                         f'({_shown(self.missing)})')
        if self.unexpected:
            parts.append(f'{len(self.unexpected)} not in the model '
                         f'({_shown(self.unexpected)})')
        return '; '.join(parts)


def _unwrap(model: nn.Module) -> nn.Module:
    from mmengine.model import BaseTTAModel, is_model_wrapper

    # As mmengine's load_state_dict: wrappers and TTA models load into `.module`.
    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    return model


def state_dict_mismatch(model: nn.Module, state_dict: Mapping) -> Mismatch:
    """Compare ``state_dict`` with the parameters and persistent buffers of ``model``.

    BatchNorm's ``num_batches_tracked`` may be missing (old checkpoints; BN fills it).

    Args:
        model (nn.Module): The model (wrappers and TTA models are unwrapped).
        state_dict (Mapping): Key -> tensor, prefixes already removed.

    Returns:
        Mismatch: What differs (falsy when nothing does).
    """
    expected = _unwrap(model).state_dict()
    missing = [k for k in expected
               if k not in state_dict and not k.endswith('num_batches_tracked')]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [(k, tuple(state_dict[k].shape), tuple(v.shape)) for k, v in expected.items()
              if k in state_dict and isinstance(state_dict[k], torch.Tensor)
              and state_dict[k].shape != v.shape]
    return Mismatch(missing, unexpected, shapes)


def _mismatch_error(source: str, what: str, mismatch: Mismatch,
                    hint: str) -> CheckpointMismatchError:
    named = source if source.startswith('the ') else f'checkpoint {source}'
    return CheckpointMismatchError(
        f'{named} does not match {what}: of its weights, {mismatch.describe()}. '
        + (hint or _QUESTION))


_QUESTION = 'Is it a checkpoint of this config (model family, variant, num_classes)?'


def checkpoint_weights(checkpoint: Mapping) -> Dict[str, torch.Tensor]:
    """The weights of an mmengine checkpoint as mmengine loads them: its ``state_dict`` (or
    the mapping itself), with the ``module.`` prefix of wrapped models removed."""
    state_dict = checkpoint.get('state_dict', checkpoint)
    return {(k[len('module.'):] if k.startswith('module.') else k): v
            for k, v in state_dict.items()}


def check_state_dict_matches(model: nn.Module, state_dict: Mapping, source: str,
                             hint: str = '') -> None:
    """Raise :class:`CheckpointMismatchError` unless ``state_dict`` fits ``model`` exactly.

    Args:
        model (nn.Module): The model the weights are for.
        state_dict (Mapping): The weights (prefixes already removed).
        source (str): The checkpoint, for the message.
        hint (str): What to do about it, for the message.
    """
    mismatch = state_dict_mismatch(model, state_dict)
    if mismatch:
        raise _mismatch_error(source, 'the model', mismatch, f'{_QUESTION} {hint}'.strip())


def load_state_dict_checked(module: nn.Module, state_dict: Mapping, source: str,
                            strict: bool = True, allow_unexpected: bool = False,
                            hint: str = '', what: str = 'the model') -> Mismatch:
    """Load ``state_dict`` into ``module``; with ``strict`` every key and shape must match.

    The weights go through ``module.load_state_dict`` (so modules that rename legacy keys
    while loading see them); shapes are compared first, since torch would raise on them.
    With ``strict=False`` mismatched shapes are skipped and everything that does not
    match is reported in one warning.

    Args:
        module (nn.Module): Where the weights go.
        state_dict (Mapping): Key -> tensor, prefixes already removed.
        source (str): The checkpoint, for the message.
        strict (bool): Raise on any mismatch. Default: True.
        allow_unexpected (bool): Keys the module lacks are not an error (backbone files
            carry other parts). Default: False.
        hint (str): What to do about a mismatch, for the message.
        what (str): The module, for the message. Default: 'the model'.

    Returns:
        Mismatch: What did not match (after loading).

    Raises:
        CheckpointMismatchError: ``strict`` and something does not match.
    """
    target = _unwrap(module)
    own = target.state_dict()
    shapes = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state_dict.items()
              if k in own and isinstance(v, torch.Tensor) and v.shape != own[k].shape]
    if shapes and strict:
        raise _mismatch_error(source, what, Mismatch([], [], shapes), hint)
    skipped = {k for k, _, _ in shapes}
    try:
        result = target.load_state_dict(
            OrderedDict((k, v) for k, v in state_dict.items() if k not in skipped),
            strict=False)
    except RuntimeError as err:  # shape mismatches of keys renamed while loading
        raise CheckpointMismatchError(f'checkpoint {source} does not match {what}: '
                                      f'{" ".join(str(err).split())}') from err
    mismatch = Mismatch(
        [k for k in result.missing_keys if not k.endswith('num_batches_tracked')],
        list(result.unexpected_keys), shapes)
    fatal = Mismatch(mismatch.missing, [] if allow_unexpected else mismatch.unexpected,
                     shapes)
    if fatal and strict:
        raise _mismatch_error(source, what, fatal, hint)
    if fatal:
        warnings.warn(f'checkpoint {source} (strict=False): of its weights, '
                      f'{fatal.describe()}; the model weights not loaded keep their '
                      f'initialisation', stacklevel=2)
    return mismatch


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


def check_pretrained_files(cfg: Mapping) -> None:
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
