"""``init_model``: MMSeg's, reading the checkpoint weights-only and strictly."""
from typing import Optional, Union

import torch.nn as nn
from mmengine.config import Config

from ..engine.hooks.checkpoint_guard import STRICT_LOAD_KEY
from ..utils.checkpoint import check_state_dict_matches, checkpoint_weights
from ..utils.checkpoint_io import weights_only_checkpoints

__all__ = ['init_model', 'strict_load_enabled', 'check_loaded_checkpoint']


def strict_load_enabled(cfg: Config, cfg_options: Optional[dict] = None) -> bool:
    """The ``strict_load`` setting of a config (``--cfg-options`` first); True by default."""
    return bool((cfg_options or {}).get(STRICT_LOAD_KEY, cfg.get(STRICT_LOAD_KEY, True)))


def check_loaded_checkpoint(model: nn.Module, checkpoint: dict, source: str,
                            what: str = 'use it') -> None:
    """Raise :class:`~mmseg_segman.errors.CheckpointMismatchError` unless ``checkpoint``
    (as read from ``source``) fits ``model`` exactly; the message names the opt-out."""
    check_state_dict_matches(
        model, checkpoint_weights(checkpoint), source,
        f'To {what} anyway with only the matching weights, set {STRICT_LOAD_KEY} = False in '
        f'the config (cfg_options={{"{STRICT_LOAD_KEY}": False}}).')


def init_model(config: Union[str, Config],
               checkpoint: Optional[str] = None,
               device: str = 'cuda:0',
               cfg_options: Optional[dict] = None) -> nn.Module:
    """:func:`mmseg.apis.init_model`, loading ``checkpoint`` weights-only and strictly.

    MMSeg's function loads non-strictly (a checkpoint of another class count leaves a
    random head) and with mmengine's loader; this one refuses a checkpoint that does not
    fit the model, naming the keys, unless the config sets ``strict_load = False``.

    Args:
        config (str | Config): Config file path or object.
        checkpoint (str, optional): Checkpoint path or URL.
        device (str): Where to put the model. Default: 'cuda:0' (as MMSeg).
        cfg_options (dict, optional): Overrides of the config.

    Returns:
        nn.Module: The segmentor in eval mode.
    """
    from mmseg.apis import init_model as mmseg_init_model

    cfg = Config.fromfile(config) if not isinstance(config, Config) else config
    loaded: dict = {}
    with weights_only_checkpoints(record=loaded):
        model = mmseg_init_model(cfg, checkpoint, device, cfg_options)
    if checkpoint is not None and strict_load_enabled(cfg, cfg_options) and loaded:
        check_loaded_checkpoint(model, next(iter(loaded.values())), checkpoint)
    return model
