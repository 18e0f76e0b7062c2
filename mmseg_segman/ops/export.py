"""The export switch read by every operator of this package.

Graph exporters (``torch.onnx.export``, ``torch.export.export``) cannot follow the operators'
eager implementations: those branch on data (the selective scan picks per chunk between a
closed form and a step-by-step solve; the tiled neighborhood attention takes Python ints from
tensors). While :func:`is_exporting` is true, :func:`~mmseg_segman.ops.selective_scan_fn` and
the neighborhood-attention functions switch to forms made of static tensor operations (see
:mod:`mmseg_segman.ops.selective_scan_export` and
:mod:`mmseg_segman.ops.neighborhood_attention.reference`). Model code calls the operators as
usual and never checks the switch itself.
"""
import sys

import torch

__all__ = ['is_exporting', 'caches_allowed', 'compiling']


def is_exporting() -> bool:
    """True while ``torch.onnx.export`` (either exporter) or ``torch.export`` traces a model.

    ``torch.onnx.is_in_onnx_export()`` is set by both ONNX exporters (TorchScript and
    ``dynamo=True``); ``torch.compiler.is_exporting()`` by ``torch.export.export``.
    """
    if torch.onnx.is_in_onnx_export():
        return True
    is_export = getattr(getattr(torch, 'compiler', None), 'is_exporting', None)
    return bool(is_export is not None and is_export())


def caches_allowed() -> bool:
    """False while a graph is being recorded (``torch.jit.trace``, as FLOP counters use it;
    graph export; ``torch.compile``): tensors kept from an earlier call (index plans, RoPE
    tables, resized biases) would enter that graph as values of another graph."""
    if torch.jit.is_tracing() or is_exporting():
        return False
    return not compiling()


def compiling() -> bool:
    """True while dynamo traces a function (``torch.compile``, ``torch._dynamo.explain``).

    Code that dynamo would break the graph on (host syncs, data-dependent branches, caches)
    takes a traceable route then; see :mod:`mmseg_segman.ops.library`."""
    is_compiling = getattr(getattr(torch, 'compiler', None), 'is_compiling', None)
    if is_compiling is None:  # torch < 2.3: dynamo's own flag, if dynamo was ever imported
        is_compiling = getattr(sys.modules.get('torch._dynamo'), 'is_compiling', None)
    return bool(is_compiling is not None and is_compiling())
