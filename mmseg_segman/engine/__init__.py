"""Training and evaluation behaviour, through MMEngine's extension points only.

Hooks (``CheckpointGuardHook``, ``DataCheckHook``, ``RandomStateHook``,
``BatchSizeCheckHook``), a model wrapper (``CPUAwareDistributedDataParallel``) and the
``atomic_local`` file backend are registered; configs switch them on. :mod:`.dist` holds
the explicit CPU distributed set-up of the plugin's tools.
"""
from ..utils.checkpoint_io import ATOMIC_BACKEND, AtomicLocalBackend
from .hooks import (
    BatchSizeCheckHook,
    CheckpointGuardHook,
    DataCheckHook,
    PlainParamGroupsHook,
    RandomStateHook,
)
from .model_wrappers import CPUAwareDistributedDataParallel

__all__ = ['ATOMIC_BACKEND', 'AtomicLocalBackend', 'BatchSizeCheckHook', 'CheckpointGuardHook',
           'DataCheckHook', 'PlainParamGroupsHook', 'RandomStateHook',
           'CPUAwareDistributedDataParallel']
