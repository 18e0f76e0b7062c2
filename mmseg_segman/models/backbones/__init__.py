from .lrformer import LRFormer
from .segman import SegMANEncoder
from .segnext import SegNeXtMSCAN

__all__ = ['LRFormer', 'SegMANEncoder', 'SegNeXtMSCAN']
