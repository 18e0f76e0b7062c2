"""Operators only (no model code): selective scan and 2-D neighborhood attention."""
from .neighborhood_attention import na2d, na2d_av, na2d_qk
from .selective_scan import (linear_scan, mamba_kernel_call, selective_scan_chunked,
                             selective_scan_fn, selective_scan_ref)

__all__ = [
    'selective_scan_fn', 'selective_scan_ref', 'selective_scan_chunked', 'linear_scan',
    'mamba_kernel_call', 'na2d', 'na2d_qk', 'na2d_av'
]
