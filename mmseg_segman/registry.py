"""Registries of the ``mmseg_segman`` scope, one child of each MMSeg registry.

A config that inherits a packaged one (``_base_ = ['mmseg_segman::segman/segman-t_ade20k.py']``)
has its dicts tagged with ``_scope_='mmseg_segman'`` by MMEngine, which then imports
``mmseg_segman.registry`` and builds them from the registries of that scope. These children
register nothing themselves: a lookup falls through to MMSeg's registry (where this plugin
registers its models) and on to MMEngine's, so everything MMSeg builds builds here too.
"""
from mmengine.registry import FUNCTIONS as _MMENGINE_FUNCTIONS
from mmengine.registry import Registry
from mmseg import registry as _mmseg

SCOPE = 'mmseg_segman'


def _child(parent: Registry) -> Registry:
    # `locations`: what MMEngine imports before a lookup in this scope (the whole plugin).
    return Registry(parent.name, parent=parent, scope=SCOPE, locations=[SCOPE])


DATASETS = _child(_mmseg.DATASETS)
DATA_SAMPLERS = _child(_mmseg.DATA_SAMPLERS)
EVALUATOR = _child(_mmseg.EVALUATOR)
FUNCTIONS = _child(_MMENGINE_FUNCTIONS)  # MMSeg has none; collate functions live here
HOOKS = _child(_mmseg.HOOKS)
INFERENCERS = _child(_mmseg.INFERENCERS)
LOG_PROCESSORS = _child(_mmseg.LOG_PROCESSORS)
LOOPS = _child(_mmseg.LOOPS)
METRICS = _child(_mmseg.METRICS)
MODELS = _child(_mmseg.MODELS)
MODEL_WRAPPERS = _child(_mmseg.MODEL_WRAPPERS)
OPTIMIZERS = _child(_mmseg.OPTIMIZERS)
OPTIM_WRAPPERS = _child(_mmseg.OPTIM_WRAPPERS)
OPTIM_WRAPPER_CONSTRUCTORS = _child(_mmseg.OPTIM_WRAPPER_CONSTRUCTORS)
PARAM_SCHEDULERS = _child(_mmseg.PARAM_SCHEDULERS)
RUNNERS = _child(_mmseg.RUNNERS)
RUNNER_CONSTRUCTORS = _child(_mmseg.RUNNER_CONSTRUCTORS)
TASK_UTILS = _child(_mmseg.TASK_UTILS)
TRANSFORMS = _child(_mmseg.TRANSFORMS)
VISBACKENDS = _child(_mmseg.VISBACKENDS)
VISUALIZERS = _child(_mmseg.VISUALIZERS)
WEIGHT_INITIALIZERS = _child(_mmseg.WEIGHT_INITIALIZERS)
