from .batch_size_check import BatchSizeCheckHook
from .checkpoint_guard import CheckpointGuardHook
from .compile_compat import PlainParamGroupsHook
from .data_check import DataCheckHook
from .random_state import RandomStateHook

__all__ = ['BatchSizeCheckHook', 'CheckpointGuardHook', 'DataCheckHook', 'PlainParamGroupsHook',
           'RandomStateHook']
