"""Utilities that are not part of a model: FLOP counting."""
from .flops import (
    custom_op_handles,
    flop_analyzer,
    na2d_av_flops,
    na2d_qk_flops,
    sdpa_flops,
    selective_scan_flops,
)

__all__ = [
    'selective_scan_flops', 'na2d_qk_flops', 'na2d_av_flops', 'sdpa_flops', 'custom_op_handles',
    'flop_analyzer'
]
