"""mmseg-segman: SegMAN, SegNeXt and LRFormer for MMSegmentation 1.x.

Importing this package registers its models, transforms, hooks, model wrapper and file
backend into MMSeg's and MMEngine's registries, and the ``mmseg_segman::`` config scope.
It changes no function, class or method of torch, mmcv, mmengine or mmseg: the added
behaviours (weights-only and strict checkpoint loading, atomic checkpoints, data checks,
exact resume, CPU multi-process training) are switched on by the configs that list them
and by the plugin's own tools (``docs/get_started.md``, "What the plugin changes").
"""
from . import (
    apis,  # noqa: F401  (inferencer by name; the mmseg_segman:: config scope)
    classification,  # noqa: F401  (mmpretrain's MODELS, only where it is installed)
    datasets,  # noqa: F401  (LoadCheckedImageFromFile, LoadCheckedAnnotations)
    engine,  # noqa: F401  (hooks, model wrapper, atomic file backend)
    models,  # noqa: F401
)
from .version import __version__

__all__ = ['__version__']
