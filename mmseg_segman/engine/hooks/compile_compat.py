"""``PlainParamGroupsHook``: MMEngine's ``compile=True`` with a ``paramwise_cfg``.

With a ``paramwise_cfg`` (every shipped config has one) MMEngine's optimizer constructor
hands the optimizer ``ConfigDict`` parameter groups. Under ``compile=True`` dynamo then
fails inside the optimizer's step (torch 2.13: ``InternalTorchDynamoError:
'UserDefinedDictVariable' object has no attribute 'items'`` in
``torch/_dynamo/variables/optimizer.py``), whatever the model. Before training, only when
the config sets ``compile``, this hook turns the groups into plain dicts with the same keys
and the same tensors; nothing else changes. ``docs/get_started.md`` ("Workarounds") lists
it; ``tests/models/test_compile_runner.py`` trains the toy config with it.
"""
from typing import TYPE_CHECKING

import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

if TYPE_CHECKING:
    from mmengine.runner import Runner

__all__ = ['PlainParamGroupsHook', 'plain_param_groups']


def plain_param_groups(optimizer: torch.optim.Optimizer) -> int:
    """Replace ``optimizer``'s dict-subclass parameter groups by plain dicts.

    Returns:
        int: How many groups were replaced.
    """
    replaced = sum(type(g) is not dict for g in optimizer.param_groups)
    optimizer.param_groups[:] = [dict(g) for g in optimizer.param_groups]
    return replaced


@HOOKS.register_module()
class PlainParamGroupsHook(Hook):
    """Plain-dict parameter groups before training, when the config compiles the model."""

    priority = 'VERY_HIGH'

    def before_train(self, runner: 'Runner') -> None:
        if not runner.cfg.get('compile', False):
            return
        wrappers = getattr(runner.optim_wrapper, 'optim_wrappers', None)
        for wrapper in (wrappers.values() if wrappers else [runner.optim_wrapper]):
            plain_param_groups(wrapper.optimizer)
