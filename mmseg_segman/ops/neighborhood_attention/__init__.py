"""2-D neighborhood attention with NATTEN semantics, one module per backend.

Layout: ``q``, ``k``, ``v`` are (batch, heads, H, W, head_dim); attention weights are
(batch, heads, H, W, kernel_size ** 2), ordered row-major over the query's k x k window. The
window rule (NATTEN's, windows shift inward at the borders) is in :mod:`.common`; the public
functions and the choice of backend in :mod:`.api`; the backends in :mod:`.reference`
(gather; export and tests), :mod:`.tiled` (pure PyTorch, the default), :mod:`.natten_ops` and
:mod:`.flex` (CUDA).
"""
from .api import na2d, na2d_av, na2d_backend, na2d_qk, split_backend
from .reference import na2d_av_reference, na2d_qk_reference, na2d_reference

__all__ = [
    'na2d', 'na2d_qk', 'na2d_av', 'na2d_backend', 'split_backend', 'na2d_reference',
    'na2d_qk_reference', 'na2d_av_reference'
]
