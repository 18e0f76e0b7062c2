"""Evaluation refuses checkpoints that do not fit the model.

MMEngine loads ``load_from`` non-strictly: missing, unexpected and wrongly-shaped weights
are logged and skipped. That is what fine-tuning wants (a new ``num_classes``, a
backbone-only file), but when *evaluating* it silently scores a partly random model: a
checkpoint of another family or another class count gives plausible-looking metrics.

:func:`enable_strict_evaluation_loading` makes every evaluation load strict: MMEngine's
``Runner.load_checkpoint`` outside training (``tools/test.py``, MMSeg's own
``tools/test.py``, ``Runner.val`` / ``Runner.test``) and MMSeg's ``init_model``. A mismatch
raises :class:`CheckpointMismatchError` naming the missing, unexpected and mismatched keys
and the option that opts out: ``strict_load = False`` in the config (or
``--cfg-options strict_load=False``). Training (``load_from``, ``--resume``) is unchanged.
"""
import contextvars
import functools
import re
from typing import Mapping, NamedTuple, Optional

import torch
import torch.nn as nn

from ..utils.checkpoint import CheckpointMismatchError

__all__ = [
    'CheckpointMismatchError', 'STRICT_LOAD_KEY', 'check_state_dict_matches',
    'state_dict_mismatch', 'strict_loading', 'enable_strict_evaluation_loading'
]

# The config key that turns strict evaluation loading off.
STRICT_LOAD_KEY = 'strict_load'
# How many key names a message lists per kind.
_SHOWN = 5


class _Strict(NamedTuple):
    source: str
    hint: str


_STRICT: contextvars.ContextVar = contextvars.ContextVar('mmseg_segman_strict_load',
                                                         default=None)


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

    def __bool__(self):
        return bool(self.missing or self.unexpected or self.shapes)


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
        state_dict (Mapping): Key -> tensor.

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


def _listing(keys) -> str:
    shown = ', '.join(str(k) for k in keys[:_SHOWN])
    more = len(keys) - _SHOWN
    return shown + (f' and {more} more' if more > 0 else '')


def check_state_dict_matches(model: nn.Module, state_dict: Mapping, source: str,
                             hint: str = '') -> None:
    """Raise :class:`CheckpointMismatchError` unless ``state_dict`` fits ``model`` exactly.

    Args:
        model (nn.Module): The model the weights are for.
        state_dict (Mapping): The weights (prefixes already removed).
        source (str): The checkpoint, for the message.
        hint (str): How to opt out, appended to the message.
    """
    mismatch = state_dict_mismatch(model, state_dict)
    if not mismatch:
        return
    parts = []
    if mismatch.shapes:
        parts.append(f'{len(mismatch.shapes)} with another shape (' + _listing(
            [f'{k}: checkpoint {list(c)} vs model {list(m)}'
             for k, c, m in mismatch.shapes]) + ')')
    if mismatch.missing:
        parts.append(f'{len(mismatch.missing)} missing from the checkpoint ('
                     f'{_listing(mismatch.missing)})')
    if mismatch.unexpected:
        parts.append(f'{len(mismatch.unexpected)} not in the model ('
                     f'{_listing(mismatch.unexpected)})')
    raise CheckpointMismatchError(
        f'checkpoint {source} does not match the model: of its weights, ' +
        '; '.join(parts) + '. Is it a checkpoint of this config (model family, variant, '
        'num_classes)?' + (f' {hint}' if hint else ''))


def _opt_out_hint(what: str) -> str:
    return (f'To {what} anyway with only the matching weights, set {STRICT_LOAD_KEY} = '
            f'False in the config (--cfg-options {STRICT_LOAD_KEY}=False).')


class strict_loading:
    """Context manager: mmengine's checkpoint-to-model loads inside it are checked strictly.

    Args:
        source (str): The checkpoint, for messages.
        hint (str): How to opt out, for messages.
        enabled (bool): False makes it a no-op.
    """

    def __init__(self, source: str, hint: str = '', enabled: bool = True):
        self._value = _Strict(str(source), hint) if enabled else None
        self._token = None

    def __enter__(self):
        self._token = _STRICT.set(self._value)
        return self

    def __exit__(self, *exc):
        _STRICT.reset(self._token)
        return False


def _revised_state_dict(checkpoint, revise_keys):
    state_dict = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint,
                                                                        dict) else {}
    for pattern, replacement in revise_keys:
        state_dict = {re.sub(pattern, replacement, k): v for k, v in state_dict.items()}
    return state_dict


def _checked_load_to_model(original):

    @functools.wraps(original)
    def _load_checkpoint_to_model(model, checkpoint, strict=False, logger=None,
                                  revise_keys=[(r'^module\.', '')]):  # noqa: B006 (as mmengine)
        ctx: Optional[_Strict] = _STRICT.get()
        if ctx is not None and not strict:
            check_state_dict_matches(model, _revised_state_dict(checkpoint, revise_keys),
                                     ctx.source, ctx.hint)
        return original(model, checkpoint, strict, logger, revise_keys)

    _load_checkpoint_to_model.__mmseg_segman_strict__ = True
    return _load_checkpoint_to_model


def _strict_runner_load(original):

    @functools.wraps(original)
    def load_checkpoint(self, filename, *args, **kwargs):
        from mmengine.runner import BaseLoop

        # Training builds its loop before loading (load_from / resume stay non-strict);
        # Runner.test / Runner.val never build it.
        evaluating = not isinstance(getattr(self, '_train_loop', None), BaseLoop)
        enabled = evaluating and bool(self.cfg.get(STRICT_LOAD_KEY, True))
        with strict_loading(filename, _opt_out_hint('evaluate'), enabled):
            return original(self, filename, *args, **kwargs)

    load_checkpoint.__mmseg_segman_strict__ = True
    return load_checkpoint


def _strict_init_model(original):

    @functools.wraps(original)
    def init_model(config, checkpoint=None, device='cuda:0', cfg_options=None):
        from mmengine.config import Config

        enabled = checkpoint is not None
        if enabled:
            cfg = Config.fromfile(config) if not isinstance(config, Config) else config
            enabled = bool((cfg_options or {}).get(STRICT_LOAD_KEY,
                                                   cfg.get(STRICT_LOAD_KEY, True)))
        with strict_loading(checkpoint, _opt_out_hint('use it'), enabled):
            return original(config, checkpoint, device, cfg_options)

    init_model.__mmseg_segman_strict__ = True
    return init_model


def enable_strict_evaluation_loading() -> bool:
    """Install the strict checks (idempotent); see the module docstring.

    Returns:
        bool: True.
    """
    import mmengine.runner.checkpoint as ckpt_module
    import mmengine.runner.runner as runner_module
    import mmseg.apis as apis
    import mmseg.apis.inference as inference

    for module in (ckpt_module, runner_module):
        if not getattr(module._load_checkpoint_to_model, '__mmseg_segman_strict__', False):
            module._load_checkpoint_to_model = _checked_load_to_model(
                module._load_checkpoint_to_model)
    runner_cls = runner_module.Runner
    if not getattr(runner_cls.load_checkpoint, '__mmseg_segman_strict__', False):
        runner_cls.load_checkpoint = _strict_runner_load(runner_cls.load_checkpoint)
    if not getattr(inference.init_model, '__mmseg_segman_strict__', False):
        inference.init_model = _strict_init_model(inference.init_model)
    apis.init_model = inference.init_model
    return True
