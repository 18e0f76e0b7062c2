"""``CPUAwareDistributedDataParallel``: mmengine's DDP wrapper that also runs on the CPU.

Registered in MMSeg's ``MODEL_WRAPPERS`` (a direct child of mmengine's, which
``Runner.wrap_model`` looks the type up in without a scope switch), so configs name it
``'mmseg.CPUAwareDistributedDataParallel'``.

mmengine's Runner passes ``device_ids=[LOCAL_RANK]`` to every ``DistributedDataParallel``
subclass it builds, which DDP rejects for a module on the CPU; and SyncBN cannot
synchronise CPU tensors. Configs select this wrapper with ``model_wrapper_cfg``: on a GPU
it is exactly :class:`~mmengine.model.MMDistributedDataParallel`; on the CPU (gloo) it
drops ``device_ids`` and turns SyncBN into BN with a warning.
"""
import warnings

import torch
import torch.nn as nn
from mmengine.model import MMDistributedDataParallel
from mmseg.registry import MODEL_WRAPPERS

__all__ = ['CPUAwareDistributedDataParallel']


def _on_cpu(module: nn.Module) -> bool:
    return all(t.device.type == 'cpu' for t in [*module.parameters(), *module.buffers()])


@MODEL_WRAPPERS.register_module()
class CPUAwareDistributedDataParallel(MMDistributedDataParallel):
    """:class:`~mmengine.model.MMDistributedDataParallel` that accepts a CPU module.

    Args:
        module (nn.Module): The model.
        **kwargs: ``DistributedDataParallel`` arguments; ``device_ids`` and
            ``output_device`` are dropped for a CPU module.
    """

    def __init__(self, module: nn.Module, **kwargs) -> None:
        if _on_cpu(module):
            from mmengine.model import revert_sync_batchnorm

            if any(isinstance(m, torch.nn.SyncBatchNorm) for m in module.modules()):
                warnings.warn(
                    'SyncBatchNorm cannot synchronise across CPU processes: converted to '
                    'BatchNorm, so each process normalises with its own batch statistics')
                module = revert_sync_batchnorm(module)
            kwargs['device_ids'] = None
            kwargs.pop('output_device', None)
        super().__init__(module=module, **kwargs)
