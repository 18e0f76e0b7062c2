from .ss2d import SS2D, cross_merge_2d, cross_scan_2d  # noqa: F401
