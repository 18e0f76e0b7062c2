from .segman_head import SegMANDecoder  # noqa: F401
from .segnext_head import SegNeXtHamHead  # noqa: F401
from .lrformer_head import LRHead  # noqa: F401
