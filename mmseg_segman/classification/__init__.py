"""ImageNet classification with the plugin's encoders, through mmpretrain (optional).

Where mmpretrain is installed (``requirements/classification.txt``; ``bash tools/install.sh
--classification`` builds ``.venv-cls`` with it), importing :mod:`mmseg_segman` registers
``SegMANEncoder``, ``SegNeXtMSCAN`` and ``LRFormer`` and the heads of
:mod:`~mmseg_segman.classification.heads` in mmpretrain's ``MODELS``, so the configs in
``configs/imagenet`` build mmpretrain ``ImageClassifier`` s. Without mmpretrain nothing is
imported and nothing changes. An mmpretrain that is installed but does not import (e.g.
torchvision not importable next to this torch) gives one warning naming the cause; the
segmentation side works as before, and :func:`require_mmpretrain` raises the error.

:mod:`~mmseg_segman.classification.convert` (key layouts of the authors' ImageNet files and of
mmpretrain checkpoints) needs torch only.
"""
import importlib.util
import warnings
from typing import Optional

from .convert import (
    classifier_prefix,
    is_mmpretrain_layout,
    load_classifier_weights,
    mmpretrain_to_official,
    official_to_mmpretrain,
    to_official_state_dict,
)

__all__ = [
    'MMPRETRAIN_INSTALLED', 'mmpretrain_registered', 'require_mmpretrain', 'classifier_prefix',
    'is_mmpretrain_layout', 'load_classifier_weights', 'mmpretrain_to_official',
    'official_to_mmpretrain', 'to_official_state_dict'
]

INSTALL_HINT = ('install the classification environment: bash tools/install.sh '
                '--classification (or pip install -r requirements/classification.txt)')

MMPRETRAIN_INSTALLED: bool = importlib.util.find_spec('mmpretrain') is not None
# Why registering into mmpretrain failed, if it did.
_ERROR: Optional[BaseException] = None

if MMPRETRAIN_INSTALLED:
    try:
        from . import registration  # noqa: F401
    except Exception as err:  # noqa: BLE001  (any failure: the segmentation side must load)
        _ERROR = err
        warnings.warn(
            f'mmseg_segman: mmpretrain is installed but does not import '
            f'({type(err).__name__}: {err}); the encoders are not registered for '
            f'classification. To use configs/imagenet, {INSTALL_HINT}', RuntimeWarning)


def mmpretrain_registered() -> bool:
    """Whether the encoders and heads are in mmpretrain's ``MODELS``."""
    return MMPRETRAIN_INSTALLED and _ERROR is None


def require_mmpretrain() -> None:
    """Raise :class:`ImportError` saying what to install unless :func:`mmpretrain_registered`."""
    if not MMPRETRAIN_INSTALLED:
        raise ImportError(f'mmpretrain is not installed; to classify with the plugin '
                          f'encoders, {INSTALL_HINT}')
    if _ERROR is not None:
        raise ImportError(f'mmpretrain does not import here ({type(_ERROR).__name__}: '
                          f'{_ERROR}); {INSTALL_HINT}') from _ERROR
