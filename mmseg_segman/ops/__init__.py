"""Operators only (no model code): selective scan and 2-D neighborhood attention."""
from .neighborhood_attention import na2d, na2d_av, na2d_qk
from .selective_scan import selective_scan_fn, selective_scan_ref

__all__ = ['selective_scan_fn', 'selective_scan_ref', 'na2d', 'na2d_qk', 'na2d_av']
