from .lrformer_head import LRHead
from .segman_head import SegMANDecoder
from .segnext_head import SegNeXtHamHead

__all__ = ['LRHead', 'SegMANDecoder', 'SegNeXtHamHead']
