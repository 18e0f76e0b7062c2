"""Operators only (no model code): selective scan and 2-D neighborhood attention.

While a graph is exported (:func:`.export.is_exporting`) every operator switches to a form
made of static tensor operations by itself; model code just calls them.
"""
from .export import is_exporting
from .neighborhood_attention import na2d, na2d_av, na2d_qk
from .selective_scan import (
    linear_scan,
    mamba_kernel_call,
    selective_scan_chunked,
    selective_scan_fn,
    selective_scan_ref,
)

__all__ = [
    'selective_scan_fn', 'selective_scan_ref', 'selective_scan_chunked', 'linear_scan',
    'mamba_kernel_call', 'na2d', 'na2d_qk', 'na2d_av', 'is_exporting'
]
