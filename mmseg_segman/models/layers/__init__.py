"""Every block shared between models: norms, FFN, layer scale, and the family blocks that a
backbone and a decode head both use."""
from .ffn import DepthwiseConvFFN
from .layer_scale import LayerScale2d, layer_scale_parameter, scale_channels
from .lrformer_blocks import LowResolutionSelfAttention, LRFormerBlock
from .norm import LayerNorm2d, apply_channel_norm
from .segman_blocks import RoPE2d, apply_rope2d, heads_to_channels, neighborhood_attention
from .ss2d import SS2D, cross_merge_2d, cross_scan_2d

__all__ = [
    'DepthwiseConvFFN', 'LayerNorm2d', 'apply_channel_norm', 'LayerScale2d',
    'layer_scale_parameter', 'scale_channels', 'LowResolutionSelfAttention', 'LRFormerBlock',
    'RoPE2d', 'apply_rope2d', 'heads_to_channels', 'neighborhood_attention', 'SS2D',
    'cross_merge_2d', 'cross_scan_2d'
]
