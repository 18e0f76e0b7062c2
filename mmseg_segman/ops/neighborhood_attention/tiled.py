"""Tiled backend: pure PyTorch, any device, with a hand-written backward.

Algorithm: a dilated problem is ``d * d`` independent undilated problems on the strided
sub-grids. Each sub-grid is cut into T x T query tiles; the union of the windows of a tile
is a (T+k-1) x (T+k-1) halo (placed with the boundary rule of :mod:`.common`), so a tile's
logits are one matmul against its halo, from which every query's k x k entries are picked
with a fixed index. The k x k neighborhoods of keys and values are never materialised, and
the autograd Functions keep only their inputs for the backward pass.

The tiling picks its bands with ``nonzero()`` and Python ints taken from tensors, which graph
exporters refuse as data-dependent; while exporting the dispatch uses :mod:`.reference`.
"""
import collections
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from ..export import caches_allowed
from .common import _bias_index, bias_table, window_start

__all__ = ['na2d_qk_tiled', 'na2d_av_tiled']

# Query tile edge. Larger tiles mean fewer, bigger matmuls but more wasted halo columns
# ((T+k-1)^2 logits per query instead of k^2); benchmarks/bench_neighborhood_attention.py
# sweeps it (docs/benchmarks.md).
_TILE = 8
# Bound on the tile-logit workspace of one step; batch*heads and tile rows are chunked to it.
_WORKSPACE_BYTES = 4 * 2**20


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
    start = window_start(length, kernel_size, device)
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
        tile_pix = rows.tile_pos[:, None, :, None] * W + cols.tile_pos[None, :, None, :]
        self.tile_pixel = tile_pix.flatten()
        self.nbytes = sum(t.numel() * t.element_size() for t in (
            self.query_index, self.logit_index, self.halo_pixel, self.tile_pixel))

    def gather(self, x, halo):
        """(N, H, W, C) -> (N, n_r, n_c, tile_len or halo_len, C): copies of tiles or halos.

        One ``index_select`` of flat pixels already in tile order: two advanced-indexing
        passes and a permuting copy cost 7x more (SegMAN-T stage 1 at 512x512)."""
        N, C = x.shape[0], x.shape[-1]
        pixels = self.halo_pixel if halo else self.tile_pixel
        return x.reshape(N, -1, C).index_select(1, pixels).view(N, *self.tile_shape, -1, C)

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


# Index plans of recent grid shapes: they depend on the shape only, and building one costs
# about as much as the matmuls it serves (4.5 ms for a 128x128 map, kernel 11; every LASS block
# of a stage and both the qk and av steps reuse it). Bounded in bytes: the plan of an
# H x W map holds H * W * k * k int64 logit indices.
_PLAN_CACHE = collections.OrderedDict()
_PLAN_CACHE_BYTES = 64 * 2**20


def _plans(H, W, N, kernel_size, element_size, device):
    """(n_chunk, [plan of each band of tile rows]) of an undilated H x W grid, N items."""
    key = (H, W, N, kernel_size, _TILE, element_size, str(device))
    hit = _PLAN_CACHE.get(key) if caches_allowed() else None
    if hit is not None:
        _PLAN_CACHE.move_to_end(key)
        return hit[0], hit[1]
    rows = _axis_tiles(H, kernel_size, _TILE, device)
    cols = _axis_tiles(W, kernel_size, _TILE, device)
    row_bytes = (cols.tile_pos.numel() * rows.tile_pos.shape[1] * cols.halo_pos.shape[1] *
                 rows.halo_pos.shape[1] * element_size)  # one tile row, one item
    n_chunk = max(1, min(N, _WORKSPACE_BYTES // (row_bytes * rows.tile_pos.shape[0])))
    band = max(1, _WORKSPACE_BYTES // (row_bytes * n_chunk))
    plans = [_GridTiles(rows.band(first, first + band), cols, W)
             for first in range(0, rows.tile_pos.shape[0], band)]
    _cache_put(key, (n_chunk, plans, sum(p.nbytes for p in plans)))
    return n_chunk, plans


def _cache_put(key, entry):
    """Store ``entry`` (its last item: its bytes) unless it alone exceeds the cap; drop the
    least recently used entries beyond the cap."""
    if entry[-1] > _PLAN_CACHE_BYTES or not caches_allowed():
        return
    _PLAN_CACHE[key] = entry
    while sum(v[-1] for v in _PLAN_CACHE.values()) > _PLAN_CACHE_BYTES:
        _PLAN_CACHE.popitem(last=False)


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
            n_chunk, plans = _plans(subs[0].shape[1], subs[0].shape[2], N, kernel_size,
                                    ref.element_size(), ref.device)
            for plan in plans:
                for n in range(0, N, n_chunk):
                    kernel(plan, *(x[n:n + n_chunk] for x in subs),
                           *(o[n:n + n_chunk] for o in sub_outs))
            if dilation > 1:
                for out, sub in zip(outs, sub_outs):
                    out[:, r::dilation, c::dilation] = sub
    return results


def _in_common_dtype(*tensors: Tensor) -> tuple:
    """The tensors in their promoted dtype. Under autocast the forward matmuls ran in the
    autocast dtype, but the backward runs without autocast and receives, e.g., float32
    softmax weights next to bfloat16 values; no-op casts when the dtypes agree."""
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return tuple(t.to(dtype) for t in tensors)


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
        grad_q, grad_k = _over_subgrids(_qk_bwd, _in_common_dtype(q, k, grad_attn),
                                        ctx.kernel_size, ctx.dilation, (D, D))
        return grad_q.to(q.dtype), grad_k.to(k.dtype), None, None


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
        grad_attn, grad_v = _over_subgrids(_av_bwd, _in_common_dtype(attn, v, grad_out),
                                           ctx.kernel_size, ctx.dilation,
                                           (attn.shape[-1], v.shape[-1]))
        return grad_attn.to(attn.dtype), grad_v.to(v.dtype), None, None


def na2d_qk_tiled(q: Tensor, k: Tensor, kernel_size: int, dilation: int = 1,
                  rpb: Optional[Tensor] = None) -> Tensor:
    """``na2d_qk`` on the tiled kernels (arguments already checked)."""
    from .. import library  # here: it imports this module
    if library.use_library_ops():  # torch.compile: one custom op, no graph break
        return library.na2d_qk(q, k, kernel_size, dilation, rpb)
    attn = _NA2DQK.apply(q, k, kernel_size, dilation)
    if rpb is not None:  # in place: the qk backward does not need its output
        H, W = q.shape[2:4]
        if torch.is_grad_enabled() and rpb.requires_grad:
            # autograd would keep index_select's H*W*k*k index: the small-index gather
            bias = bias_table(rpb, H, W, kernel_size, dilation)
        else:
            # bias_table's entries by one index_select in the logits' order (2.9x faster than
            # its two advanced-indexing passes and reordering copy at 128x128, kernel 11)
            index = _bias_flat_index(H, W, kernel_size, dilation, rpb.device)
            bias = rpb.reshape(rpb.shape[0], -1).index_select(1, index)
        attn.add_(bias.view(rpb.shape[0], H, W, -1).to(attn.dtype))
    return attn


def _bias_flat_index(H, W, kernel_size, dilation, device):
    """Flat rpb entry of every (query, window key), (H * W * k * k,) int32 (index_select takes
    it and it halves the cached bytes); cached with the index plans."""
    key = ('rpb', H, W, kernel_size, dilation, str(device))
    hit = _PLAN_CACHE.get(key) if caches_allowed() else None
    if hit is not None:
        _PLAN_CACHE.move_to_end(key)
        return hit[0]
    rows = _bias_index(H, kernel_size, dilation, device)  # (H, k) rows of rpb
    cols = _bias_index(W, kernel_size, dilation, device)  # (W, k) columns of rpb
    index = (rows[:, None, :, None] * (2 * kernel_size - 1) + cols[None, :, None, :])
    index = index.flatten().to(torch.int32)
    _cache_put(key, (index, None, index.numel() * 4))
    return index


def na2d_av_tiled(attn: Tensor, v: Tensor, kernel_size: int, dilation: int = 1) -> Tensor:
    """``na2d_av`` on the tiled kernels (arguments already checked)."""
    from .. import library  # here: it imports this module
    if library.use_library_ops():  # torch.compile: one custom op, no graph break
        return library.na2d_av(attn, v, kernel_size, dilation)
    return _NA2DAV.apply(attn, v, kernel_size, dilation)
