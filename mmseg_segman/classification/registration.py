"""Put the plugin's encoders and heads into mmpretrain's ``MODELS`` (imports mmpretrain)."""
from mmpretrain.registry import MODELS

from mmseg_segman.models.backbones import LRFormer, SegMANEncoder, SegNeXtMSCAN

from . import heads  # noqa: F401  (registers SegMANClsHead, PooledLinearClsHead)

ENCODERS = (SegMANEncoder, SegNeXtMSCAN, LRFormer)

for _encoder in ENCODERS:
    # The same classes as in MMSeg's registry; skipped when already there (a reload).
    if MODELS.module_dict.get(_encoder.__name__) is not _encoder:
        MODELS.register_module(module=_encoder, force=True)
