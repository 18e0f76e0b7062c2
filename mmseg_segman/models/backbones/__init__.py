from .segman import SegMANEncoder  # noqa: F401
from .lrformer import LRFormer  # noqa: F401
from .segnext import SegNeXtMSCAN  # noqa: F401
