from .segman_blocks import ConvFFN, LayerNorm2d, LayerScale2d, RoPE2d, apply_rope2d
from .ss2d import SS2D, cross_merge_2d, cross_scan_2d

__all__ = [
    'ConvFFN', 'LayerNorm2d', 'LayerScale2d', 'RoPE2d', 'apply_rope2d', 'SS2D', 'cross_merge_2d',
    'cross_scan_2d'
]
