from .lrformer_head import LRHead  # noqa: F401
