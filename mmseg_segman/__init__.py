"""mmseg-segman: SegMAN, SegNeXt and LRFormer for MMSegmentation 1.x.

Importing this package applies the dependency shims of :mod:`mmseg_segman.compat` (inert on a
full install) and registers every module into MMSegmentation's registries.
"""
from . import compat  # noqa: F401,I001  (first: before anything imports mmseg; order matters)
from . import datasets  # noqa: F401  (data checks: LoadCheckedAnnotations, dataset wrappers)
from . import engine  # noqa: F401  (registers the training hooks)
from . import models  # noqa: F401
from . import classification  # noqa: F401  (mmpretrain's MODELS, only where it is installed)
from . import apis  # noqa: F401  (inferencer by name; the mmseg_segman:: config scope)
from .version import __version__

__all__ = ['__version__']
