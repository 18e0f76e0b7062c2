"""Deployment helpers: ONNX export of MMSeg segmentors built from this package's configs."""
from .onnx_export import (
    DEFAULT_OPSET,
    SegmentorLogits,
    build_segmentor,
    export_onnx,
    preprocess_summary,
    require_packages,
    verify_onnx,
)

__all__ = ['SegmentorLogits', 'build_segmentor', 'export_onnx', 'verify_onnx',
           'require_packages', 'preprocess_summary', 'DEFAULT_OPSET']
