"""Deployment helpers: ONNX export of MMSeg segmentors built from this package's configs."""
from .onnx_export import (
    DEFAULT_OPSET,
    DynamicSegmentorLogits,
    SegmentorLogits,
    build_segmentor,
    export_onnx,
    preprocess_summary,
    require_packages,
    strip_debug_metadata,
    verify_onnx,
)

__all__ = ['SegmentorLogits', 'DynamicSegmentorLogits', 'build_segmentor', 'export_onnx',
           'verify_onnx', 'strip_debug_metadata', 'require_packages', 'preprocess_summary',
           'DEFAULT_OPSET']
