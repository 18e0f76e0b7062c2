"""2-D neighborhood attention with NATTEN semantics, in pure PyTorch.

Layout: ``q``, ``k``, ``v`` are (batch, heads, H, W, head_dim); attention weights are
(batch, heads, H, W, kernel_size ** 2), ordered row-major over the query's k x k window.

Boundary rule (as NATTEN): with dilation ``d`` an axis splits into ``d`` interleaved groups
(positions with equal ``index % d``). Inside its group, a query at group position ``p``
attends to the ``k`` group positions starting at ``clamp(p - k // 2, 0, group_len - k)``:
windows shift inward at the borders, there is no zero padding. Every group must therefore
hold at least ``k`` positions, i.e. each axis needs ``length >= kernel_size * dilation``.
The relative positional bias ``rpb`` (heads, 2k-1, 2k-1) is indexed on each axis by
``(key - query) / d + k - 1``.

Algorithm: a dilated problem is ``d * d`` independent undilated problems on the strided
sub-grids. Each sub-grid is cut into T x T query tiles; the union of the windows of a tile
is a (T+k-1) x (T+k-1) halo (placed with the boundary rule), so a tile's logits are one
matmul against its halo, from which every query's k x k entries are picked with a fixed
index. The k x k neighborhoods of keys and values are never materialised, and the custom
autograd functions keep only their inputs for the backward pass.
"""
import functools
from typing import NamedTuple

import torch
from torch import Tensor

from .selective_scan_export import is_exporting as _exporting

__all__ = ['na2d_qk', 'na2d_av', 'na2d']

# Query tile edge. Larger tiles mean fewer, bigger matmuls but more wasted halo columns
# ((T+k-1)^2 logits per query instead of k^2); see benchmarks/bench_neighborhood_attention.py.
_TILE = 8
# Bound on the tile-logit workspace of one step; batch*heads and tile rows are chunked to it.
_WORKSPACE_BYTES = 4 * 2**20


# ----------------------------------------------------------------------------- checks
def _check_kernel_dilation(kernel_size, dilation):
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 2:
        raise ValueError(f'kernel_size must be an int >= 2 (as in NATTEN), got {kernel_size!r}')
    if isinstance(dilation, bool) or not isinstance(dilation, int) or dilation < 1:
        raise ValueError(f'dilation must be an int >= 1, got {dilation!r}')


def _check_tensor(name, x, ref_shape=None):
    if not isinstance(x, Tensor):
        raise TypeError(f'{name} must be a torch.Tensor, got {type(x).__name__}')
    if x.dim() != 5:
        raise ValueError(f'{name} must be 5-D (batch, heads, H, W, dim), '
                         f'got shape {tuple(x.shape)}')
    if ref_shape is not None and x.shape[:4] != ref_shape:
        raise ValueError(f'{name} has shape {tuple(x.shape)}; its first four dims must match '
                         f'{tuple(ref_shape)} (batch, heads, H, W)')


def _check_spatial(H, W, kernel_size, dilation):
    for axis, length in (('H', H), ('W', W)):
        if length < kernel_size * dilation:
            raise ValueError(
                f'neighborhood attention needs {axis} >= kernel_size * dilation '
                f'({kernel_size} * {dilation} = {kernel_size * dilation}), got {axis}={length}: '
                'every dilation group must hold a full window (NATTEN raises here too)')


def _check_rpb(rpb, heads, kernel_size):
    if rpb is None:
        return
    if not isinstance(rpb, Tensor):
        raise TypeError(f'rpb must be a torch.Tensor or None, got {type(rpb).__name__}')
    expected = (heads, 2 * kernel_size - 1, 2 * kernel_size - 1)
    if tuple(rpb.shape) != expected:
        raise ValueError(f'rpb must have shape (heads, 2k-1, 2k-1) = {expected}, '
                         f'got {tuple(rpb.shape)}')


# ----------------------------------------------------------------------------- windows
def _window_start(length, kernel_size, device):
    """First key of each position's window on an undilated axis: (length,)."""
    pos = torch.arange(length, device=device)
    return (pos - kernel_size // 2).clamp(min=0, max=length - kernel_size)


def _bias_index(length, kernel_size, dilation, device):
    """rpb index ``(key - query) / d + k - 1`` of each position's window keys: (length, k)."""
    pos = torch.arange(length, device=device)
    group_pos = pos // dilation
    group_len = (length - pos % dilation + dilation - 1) // dilation
    start = torch.minimum((group_pos - kernel_size // 2).clamp(min=0), group_len - kernel_size)
    offsets = torch.arange(kernel_size, device=device)
    return start[:, None] + offsets - group_pos[:, None] + kernel_size - 1


def _bias_table(rpb, H, W, kernel_size, dilation):
    """rpb gathered per query: (heads, H, W, k*k); one axis at a time keeps indices small."""
    rows = _bias_index(H, kernel_size, dilation, rpb.device)
    cols = _bias_index(W, kernel_size, dilation, rpb.device)
    bias = rpb[:, rows][:, :, :, cols]  # heads, H, k, W, k
    return bias.permute(0, 1, 3, 2, 4).reshape(rpb.shape[0], H, W, kernel_size * kernel_size)


class _AxisTiles(NamedTuple):
    """Tiling of one undilated axis into query tiles and their key halos.

    A band (consecutive tiles) is described the same way; its queries are the positions
    ``[lo, hi)`` owned by its tiles, and ``tile_of`` counts from the band's first tile.
    """
    tile_pos: Tensor  # (n, T) positions of each query tile
    halo_pos: Tensor  # (n, T+k-1) positions of each tile's halo
    tile_of: Tensor  # (hi - lo,) tile that owns each query
    local: Tensor  # (hi - lo,) query's index inside its tile
    key_local: Tensor  # (hi - lo, k) query's window keys as indices into its tile's halo
    lo: int
    hi: int

    def band(self, first, last):
        """Tiles ``[first, last)`` and the queries they own."""
        owned = ((self.tile_of >= first) & (self.tile_of < last)).nonzero()
        lo, hi = int(owned[0]), int(owned[-1]) + 1
        return _AxisTiles(self.tile_pos[first:last], self.halo_pos[first:last],
                          self.tile_of[lo:hi] - first, self.local[lo:hi], self.key_local[lo:hi],
                          self.lo + lo, self.lo + hi)


def _axis_tiles(length, kernel_size, tile, device):
    tile = min(tile, length)
    halo = min(tile + kernel_size - 1, length)
    n = -(-length // tile)
    # The last tile is moved back to end at the border (it may overlap its neighbour)
    # so every tile is full and they batch into one matmul.
    first = torch.arange(n, device=device) * tile
    first[-1] = length - tile
    start = _window_start(length, kernel_size, device)
    # The windows of a tile span [start[first], start[last] + k), at most tile + k - 1
    # positions because start grows by at most 1 per position; clamping keeps the halo inside.
    halo_first = start[first].clamp(max=length - halo)
    pos = torch.arange(length, device=device)
    tile_of = (pos // tile).clamp(max=n - 1)
    offsets = torch.arange(kernel_size, device=device)
    key_local = start[:, None] + offsets - halo_first[tile_of, None]
    return _AxisTiles(first[:, None] + torch.arange(tile, device=device),
                      halo_first[:, None] + torch.arange(halo, device=device), tile_of,
                      pos - first[tile_of], key_local, 0, length)


class _GridTiles:
    """Index plan of a band of tile rows of an undilated grid (all tile columns).

    Tile tensors are (N, n_r, n_c, tile_len, C) and tile logits
    (N, n_r, n_c, tile_len, halo_len), with tile_len = T_r * T_c, halo_len = L_r * L_c.
    """

    def __init__(self, rows, cols, W):
        self.rows, self.cols, self.W = rows, cols, W
        self.tile_shape = (rows.tile_pos.shape[0], cols.tile_pos.shape[0])
        n_cols, t_r, t_c = cols.tile_pos.shape[0], rows.tile_pos.shape[1], cols.tile_pos.shape[1]
        h_r, h_c = rows.halo_pos.shape[1], cols.halo_pos.shape[1]
        self.tile_len, self.halo_len = t_r * t_c, h_r * h_c
        self.window_len = cols.key_local.shape[1]**2
        # Flat (tile_r, tile_c, local_r, local_c) row of each owned query: row + column part.
        row_part = rows.tile_of * (n_cols * t_r * t_c) + rows.local * t_c
        col_part = cols.tile_of * (t_r * t_c) + cols.local
        self.query_index = (row_part[:, None] + col_part[None, :]).flatten()
        # Flat entry of the tile logits of each (query, window key), row-major window order.
        key_row = row_part[:, None] * self.halo_len + rows.key_local * h_c  # (rows, k)
        key_col = col_part[:, None] * self.halo_len + cols.key_local  # (W, k)
        self.logit_index = (key_row[:, None, :, None] + key_col[None, :, None, :]).flatten()
        # Pixel of every halo entry, in (tile_r, tile_c, halo_r, halo_c) order.
        halo_pix = rows.halo_pos[:, None, :, None] * W + cols.halo_pos[None, :, None, :]
        self.halo_pixel = halo_pix.flatten()

    def gather(self, x, halo):
        """(N, H, W, C) -> (N, n_r, n_c, tile_len or halo_len, C): copies of tiles or halos."""
        rows = self.rows.halo_pos if halo else self.rows.tile_pos
        cols = self.cols.halo_pos if halo else self.cols.tile_pos
        t = x[:, rows][:, :, :, cols]  # N, n_r, t_r, n_c, t_c, C
        return t.permute(0, 1, 3, 2, 4, 5).reshape(x.shape[0], *self.tile_shape, -1, x.shape[-1])

    def fold_halos(self, halos, out):
        """Adjoint of ``gather(x, halo=True)``: add halo entries into ``out`` (N, H, W, C)."""
        N, C = halos.shape[0], halos.shape[-1]
        out.view(N, -1, C).index_add_(1, self.halo_pixel, halos.reshape(N, -1, C))

    def queries(self, tiles):
        """(N, n_r, n_c, tile_len, C) -> (N, hi - lo, W, C), each query from its own tile."""
        N, C = tiles.shape[0], tiles.shape[-1]
        return tiles.reshape(N, -1, C).index_select(1, self.query_index).view(N, -1, self.W, C)

    def pick(self, logits):
        """Tile logits -> window entries (N, hi - lo, W, k*k)."""
        N = logits.shape[0]
        picked = logits.reshape(N, -1).index_select(1, self.logit_index)
        return picked.view(N, -1, self.W, self.window_len)

    def spread(self, attn):
        """Adjoint of ``pick``: window entries (N, hi - lo, W, k*k) -> zero-filled tile logits."""
        N = attn.shape[0]
        out = attn.new_zeros(N, *self.tile_shape, self.tile_len, self.halo_len)
        out.view(N, -1).index_copy_(1, self.logit_index, attn.reshape(N, -1))
        return out


# ----------------------------------------------------------------------------- undilated kernels
# Each works on one band of an undilated (sub-)grid: full-grid (N, H, W, C) inputs and outputs,
# reading / writing the band's query rows [lo, hi) and, for key and value gradients,
# accumulating into the whole grid.
def _qk_fwd(plan, q, k, attn):
    logits = plan.gather(q, halo=False) @ plan.gather(k, halo=True).transpose(-1, -2)
    attn[:, plan.rows.lo:plan.rows.hi] = plan.pick(logits)


def _qk_bwd(plan, q, k, grad_attn, grad_q, grad_k):
    grad_logits = plan.spread(grad_attn[:, plan.rows.lo:plan.rows.hi])
    grad_q[:, plan.rows.lo:plan.rows.hi] = plan.queries(grad_logits @ plan.gather(k, halo=True))
    plan.fold_halos(grad_logits.transpose(-1, -2) @ plan.gather(q, halo=False), grad_k)


def _av_fwd(plan, attn, v, out):
    tiles = plan.spread(attn[:, plan.rows.lo:plan.rows.hi]) @ plan.gather(v, halo=True)
    out[:, plan.rows.lo:plan.rows.hi] = plan.queries(tiles)


def _av_bwd(plan, attn, v, grad_out, grad_attn, grad_v):
    grad_tiles = plan.gather(grad_out, halo=False)
    logits = grad_tiles @ plan.gather(v, halo=True).transpose(-1, -2)
    grad_attn[:, plan.rows.lo:plan.rows.hi] = plan.pick(logits)
    weights = plan.spread(attn[:, plan.rows.lo:plan.rows.hi])
    plan.fold_halos(weights.transpose(-1, -2) @ grad_tiles, grad_v)


def _over_subgrids(kernel, inputs, kernel_size, dilation, out_dims):
    """Run an undilated band ``kernel(plan, *inputs, *outputs)`` over a dilated grid.

    ``inputs`` are (B, heads, H, W, .) tensors; returns one (B, heads, H, W, out_dim) tensor
    per entry of ``out_dims``. The kernels see N = B * heads. The d * d dilation sub-grids are
    independent problems; inside one, N and the tile rows are chunked so that a step's tile
    logits stay within ``_WORKSPACE_BYTES``.
    """
    results = tuple(inputs[0].new_zeros(*inputs[0].shape[:4], d) for d in out_dims)
    inputs = [x.reshape(-1, *x.shape[2:]).contiguous() for x in inputs]
    outs = [o.flatten(0, 1) for o in results]  # views: kernels write into ``results``
    ref = inputs[0]
    N, H, W = ref.shape[:3]
    for r in range(dilation):
        for c in range(dilation):
            if dilation == 1:
                subs, sub_outs = inputs, outs
            else:  # contiguous sub-grids so the kernels can use flat pixel indices
                subs = [x[:, r::dilation, c::dilation].contiguous() for x in inputs]
                sub_outs = [o.new_zeros(*subs[0].shape[:3], o.shape[-1]) for o in outs]
            rows = _axis_tiles(subs[0].shape[1], kernel_size, _TILE, ref.device)
            cols = _axis_tiles(subs[0].shape[2], kernel_size, _TILE, ref.device)
            row_bytes = (cols.tile_pos.numel() * rows.tile_pos.shape[1] * cols.halo_pos.shape[1] *
                         rows.halo_pos.shape[1] * ref.element_size())  # one tile row, one item
            n_chunk = max(1, min(N, _WORKSPACE_BYTES // (row_bytes * rows.tile_pos.shape[0])))
            band = max(1, _WORKSPACE_BYTES // (row_bytes * n_chunk))
            for first in range(0, rows.tile_pos.shape[0], band):
                plan = _GridTiles(rows.band(first, first + band), cols, subs[0].shape[2])
                for n in range(0, N, n_chunk):
                    kernel(plan, *(x[n:n + n_chunk] for x in subs),
                           *(o[n:n + n_chunk] for o in sub_outs))
            if dilation > 1:
                for out, sub in zip(outs, sub_outs):
                    out[:, r::dilation, c::dilation] = sub
    return results


class _NA2DQK(torch.autograd.Function):
    """q.k over each neighborhood; saves only q and k for the backward pass."""

    @staticmethod
    def forward(ctx, q, k, kernel_size, dilation):
        ctx.save_for_backward(q, k)
        ctx.kernel_size, ctx.dilation = kernel_size, dilation
        kk = kernel_size * kernel_size
        (attn, ) = _over_subgrids(_qk_fwd, (q, k), kernel_size, dilation, (kk, ))
        return attn

    @staticmethod
    def backward(ctx, grad_attn):
        q, k = ctx.saved_tensors
        D = q.shape[-1]
        grad_q, grad_k = _over_subgrids(_qk_bwd, (q, k, grad_attn), ctx.kernel_size,
                                        ctx.dilation, (D, D))
        return grad_q, grad_k, None, None


class _NA2DAV(torch.autograd.Function):
    """Weights times neighborhood values; saves only attn and v for the backward pass."""

    @staticmethod
    def forward(ctx, attn, v, kernel_size, dilation):
        ctx.save_for_backward(attn, v)
        ctx.kernel_size, ctx.dilation = kernel_size, dilation
        (out, ) = _over_subgrids(_av_fwd, (attn, v), kernel_size, dilation, (v.shape[-1], ))
        return out

    @staticmethod
    def backward(ctx, grad_out):
        attn, v = ctx.saved_tensors
        grad_attn, grad_v = _over_subgrids(_av_bwd, (attn, v, grad_out), ctx.kernel_size,
                                           ctx.dilation, (attn.shape[-1], v.shape[-1]))
        return grad_attn, grad_v, None, None


# ----------------------------------------------------------------------------- export path
# Graph exporters (ONNX, torch.export) trace the custom autograd Functions' forward, but the
# tiling picks its bands with ``nonzero()`` and Python ints taken from tensors, which
# ``torch.export`` rejects as data-dependent. While exporting, na2d_qk / na2d_av instead
# gather every query's k x k keys or values with a constant index and contract them: plain
# tensor ops that any exporter follows, at the cost of materialising the neighborhoods
# (k*k times the memory of k or v), which is acceptable for an inference graph.
def _window_keys(length, kernel_size, dilation, device):
    """Positions of each position's window keys on one (dilated) axis: (length, k)."""
    pos = torch.arange(length, device=device)
    residue, group_pos = pos % dilation, pos // dilation
    group_len = (length - residue + dilation - 1) // dilation
    start = torch.minimum((group_pos - kernel_size // 2).clamp(min=0), group_len - kernel_size)
    offsets = torch.arange(kernel_size, device=device)
    return (start[:, None] + offsets) * dilation + residue[:, None]


def _neighbor_index(H, W, kernel_size, dilation, device):
    """Flat pixel of every (query, window key), row-major window order: (H * W * k * k,)."""
    rows = _window_keys(H, kernel_size, dilation, device)  # (H, k)
    cols = _window_keys(W, kernel_size, dilation, device)  # (W, k)
    return (rows[:, None, :, None] * W + cols[None, :, None, :]).flatten()


def _neighbors(x, kernel_size, dilation):
    """(B, heads, H, W, C) -> (B, heads, H, W, k*k, C): each query's window entries."""
    B, heads, H, W, C = x.shape
    index = _neighbor_index(H, W, kernel_size, dilation, x.device)
    picked = x.reshape(B, heads, H * W, C).index_select(2, index)
    return picked.view(B, heads, H, W, kernel_size * kernel_size, C)


def _na2d_qk_gather(q, k, kernel_size, dilation):
    keys = _neighbors(k, kernel_size, dilation)
    return (keys @ q.unsqueeze(-1)).squeeze(-1)


def _na2d_av_gather(attn, v, kernel_size, dilation):
    values = _neighbors(v, kernel_size, dilation)
    return (attn.unsqueeze(-2) @ values).squeeze(-2)


# ----------------------------------------------------------------------------- public API
def na2d_qk(q, k, kernel_size, dilation=1, rpb=None):
    """Attention logits of every query against its neighborhood's keys.

    Args:
        q (Tensor): Queries (B, heads, H, W, D), already scaled if a scale is wanted.
        k (Tensor): Keys, same shape as ``q``.
        kernel_size (int): Window edge k (>= 2).
        dilation (int): Dilation d; needs H, W >= k * d. Default: 1.
        rpb (Tensor, optional): Relative positional bias (heads, 2k-1, 2k-1), added to the
            logits. Default: None.

    Returns:
        Tensor: Logits (B, heads, H, W, k*k), window entries in row-major order.
    """
    _check_kernel_dilation(kernel_size, dilation)
    _check_tensor('q', q)
    _check_tensor('k', k, q.shape[:4])
    if k.shape[-1] != q.shape[-1]:
        raise ValueError(f'q and k must have the same head dim, '
                         f'got {q.shape[-1]} and {k.shape[-1]}')
    H, W = q.shape[2:4]
    _check_spatial(H, W, kernel_size, dilation)
    _check_rpb(rpb, q.shape[1], kernel_size)
    if _exporting():
        attn = _na2d_qk_gather(q, k, kernel_size, dilation)
        if rpb is not None:
            attn = attn + _bias_table(rpb, H, W, kernel_size, dilation).to(attn.dtype)
        return attn
    natten_ops = _natten_split_ops() if q.is_cuda and kernel_size % 2 else None
    if natten_ops is not None:
        return natten_ops[0](q, k, kernel_size, dilation, rpb=rpb)
    attn = _NA2DQK.apply(q, k, kernel_size, dilation)
    if rpb is not None:  # in place: the qk backward does not need its output
        attn.add_(_bias_table(rpb, H, W, kernel_size, dilation).to(attn.dtype))
    return attn


def na2d_av(attn, v, kernel_size, dilation=1):
    """Sum of each query's neighborhood values weighted by ``attn``.

    Args:
        attn (Tensor): Weights (B, heads, H, W, k*k), as returned by :func:`na2d_qk`.
        v (Tensor): Values (B, heads, H, W, D).
        kernel_size (int): Window edge k (>= 2).
        dilation (int): Dilation d; needs H, W >= k * d. Default: 1.

    Returns:
        Tensor: Output (B, heads, H, W, D).
    """
    _check_kernel_dilation(kernel_size, dilation)
    _check_tensor('v', v)
    _check_tensor('attn', attn, v.shape[:4])
    if attn.shape[-1] != kernel_size * kernel_size:
        raise ValueError(f'attn must have kernel_size**2 = {kernel_size * kernel_size} entries '
                         f'in its last dim, got {attn.shape[-1]}')
    _check_spatial(v.shape[2], v.shape[3], kernel_size, dilation)
    if _exporting():
        return _na2d_av_gather(attn, v, kernel_size, dilation)
    natten_ops = _natten_split_ops() if v.is_cuda and kernel_size % 2 else None
    if natten_ops is not None:
        return natten_ops[1](attn, v, kernel_size, dilation)
    return _NA2DAV.apply(attn, v, kernel_size, dilation)


def na2d(q, k, v, kernel_size, dilation=1, rpb=None, scale=None):
    """Fused form: ``softmax(scale * q.k + rpb) @ v`` over each query's neighborhood.

    Args:
        q, k, v (Tensor): (B, heads, H, W, D).
        kernel_size (int): Window edge k (>= 2).
        dilation (int): Dilation d; needs H, W >= k * d. Default: 1.
        rpb (Tensor, optional): Relative positional bias (heads, 2k-1, 2k-1). Default: None.
        scale (float, optional): Logit scale. Default: ``D ** -0.5``.

    Returns:
        Tensor: Output (B, heads, H, W, D).
    """
    _check_kernel_dilation(kernel_size, dilation)
    _check_tensor('q', q)
    _check_tensor('k', k, q.shape[:4])
    _check_tensor('v', v, q.shape[:4])
    if scale is None:
        scale = q.shape[-1]**-0.5
    if (q.is_cuda and q.dtype in (torch.float16, torch.bfloat16, torch.float32)
            and not _exporting()):
        _check_spatial(q.shape[2], q.shape[3], kernel_size, dilation)
        _check_rpb(rpb, q.shape[1], kernel_size)
        if rpb is None and _natten_fused() is not None:
            return _na2d_natten(q, k, v, kernel_size, dilation, scale)
        if _flex_attention() is not None:
            return _na2d_flex(q, k, v, kernel_size, dilation, rpb, scale)
    attn = na2d_qk(q * scale, k, kernel_size, dilation, rpb).softmax(dim=-1)
    return na2d_av(attn, v, kernel_size, dilation)


# ----------------------------------------------------------------------------- CUDA adapters
# Thin, optional fast paths for CUDA tensors. Each is only chosen when it supports the call
# (natten < 0.20 split ops: odd kernels; natten >= 0.20: no rpb; flex: float dtypes);
# otherwise the pure PyTorch path above runs on CUDA as well.
def _natten_module():
    try:
        import natten
    except ImportError:
        return None
    return natten


def _natten_version(natten):
    major, minor = (int(part) for part in natten.__version__.split('.')[:2])
    return major, minor


def _natten_split_ops():
    """natten < 0.20 split ops ``(na2d_qk, na2d_av)``; same layout and rpb as this module."""
    natten = _natten_module()
    if natten is None or _natten_version(natten) >= (0, 20):
        return None  # natten 0.20 removed the split (unfused) ops
    functional = getattr(natten, 'functional', None)
    if not hasattr(functional, 'na2d_qk'):  # older releases named them differently
        return None
    return functional.na2d_qk, functional.na2d_av


def _natten_fused():
    """natten >= 0.20 fused ``na2d`` (heads-last layout, no rpb argument)."""
    natten = _natten_module()
    if natten is None or _natten_version(natten) < (0, 20):
        return None
    return natten.na2d


def _na2d_natten(q, k, v, kernel_size, dilation, scale):
    """natten >= 0.20 fused op on the (B, heads, H, W, D) layout of this module."""
    def heads_last(x):
        return x.permute(0, 2, 3, 1, 4)

    out = _natten_fused()(heads_last(q), heads_last(k), heads_last(v), kernel_size,
                          dilation=dilation, scale=scale)
    return out.permute(0, 3, 1, 2, 4)


def _flex_attention():
    try:
        from torch.nn.attention import flex_attention
    except ImportError:
        return None
    return flex_attention


@functools.lru_cache(maxsize=None)
def _compiled_flex():
    # Eager flex_attention materialises all H*W x H*W scores; compiled, it skips masked blocks.
    return torch.compile(_flex_attention().flex_attention)


def _neighborhood_axis(query_pos, key_pos, length, kernel_size, dilation):
    """Flex mask and bias index on one axis from flattened token coordinates."""
    residue = query_pos % dilation
    query_group, key_group = query_pos // dilation, key_pos // dilation
    group_len = (length - residue + dilation - 1) // dilation
    start = torch.minimum((query_group - kernel_size // 2).clamp(min=0), group_len - kernel_size)
    inside = ((key_pos % dilation == residue) & (key_group >= start) &
              (key_group < start + kernel_size))
    bias_index = (key_group - query_group + kernel_size - 1).clamp(0, 2 * kernel_size - 2)
    return inside, bias_index


def _na2d_flex(q, k, v, kernel_size, dilation, rpb, scale, compiled=True):
    """Fused neighborhood attention through ``torch.nn.attention.flex_attention``.

    A block mask restricts each query to its NATTEN window and ``rpb`` enters as a score
    modification, so the flex kernel never forms the full H*W x H*W scores when compiled.
    """
    flex = _flex_attention()
    B, heads, H, W, D = q.shape

    def axes(q_idx, kv_idx):
        rows = _neighborhood_axis(q_idx // W, kv_idx // W, H, kernel_size, dilation)
        cols = _neighborhood_axis(q_idx % W, kv_idx % W, W, kernel_size, dilation)
        return rows, cols

    def mask_mod(b, h, q_idx, kv_idx):
        (in_rows, _), (in_cols, _) = axes(q_idx, kv_idx)
        return in_rows & in_cols

    score_mod = None
    if rpb is not None:
        def score_mod(score, b, h, q_idx, kv_idx):
            (_, bias_row), (_, bias_col) = axes(q_idx, kv_idx)
            return score + rpb[h, bias_row, bias_col].to(score.dtype)

    block_mask = flex.create_block_mask(mask_mod, None, None, H * W, H * W, device=q.device)
    attend = _compiled_flex() if compiled else flex.flex_attention
    out = attend(*(x.reshape(B, heads, H * W, D) for x in (q, k, v)), score_mod=score_mod,
                 block_mask=block_mask, scale=scale)
    return out.view(B, heads, H, W, D)
