"""The operators as ``torch.library`` custom ops, which ``torch.compile`` treats as single ops.

The eager kernels (the chunked selective scan, the tiled neighbourhood attention) branch on
data, take Python numbers from tensors and keep shape-keyed caches: dynamo would break the
graph at each of those places (118 breaks for SegMAN-T) and could not trace their autograd
Functions in training mode. Registered as custom ops with a fake (meta) kernel, which gives the
output shapes from the input shapes alone, and a backward formula that calls another custom op,
they enter a compiled graph as one node each, forward and backward, and the eager kernels run
unchanged inside them on real tensors (caches included: no graph is being recorded there).

Ops (namespace ``mmseg_segman``):

- ``selective_scan_infer``: the scan's forward without autograd state.
- ``selective_scan_train``: the forward that also returns what the backward needs (step sizes,
  decays, states, the pre-gate output, and each chunk's total decay and whether it was solved
  step by step); its backward is ``selective_scan_bwd``.
- ``na2d_qk`` (with the relative-position bias added inside, from a cached index, as the
  eager no-grad path does) / ``na2d_av``: the tiled split ops; backward ``na2d_qk_bwd`` /
  ``na2d_av_bwd``.
- ``resize_bias_bicubic``: SegMAN's resized global-attention bias, inference only, cached
  per weights and size like the eager cache (inside a compiled graph it would be recomputed
  and fused, slowly, into the softmax).

They exist where ``torch.library.custom_op`` does (torch >= 2.4; :data:`AVAILABLE`). The model
code calls :func:`~mmseg_segman.ops.selective_scan_fn` and :func:`~mmseg_segman.ops.na2d` as
before; those use the custom ops only while dynamo traces (:func:`use_library_ops`), so eager
calls keep their autograd Functions, their speed and their exact outputs. On older torch the
operators stay autograd Functions, which ``torch.compile`` runs with graph breaks.
"""
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from .export import compiling, is_exporting

__all__ = ['AVAILABLE', 'use_library_ops', 'selective_scan', 'na2d_qk', 'na2d_av',
           'resize_bias_bicubic']

AVAILABLE = hasattr(torch.library, 'custom_op') and hasattr(torch.library, 'register_fake')


def use_library_ops() -> bool:
    """True while dynamo traces for ``torch.compile`` on a torch with custom ops; False while
    a graph is exported (``torch.export`` traces with dynamo too), where the operators take
    their export forms, which ONNX can express."""
    return AVAILABLE and compiling() and not is_exporting()


def _empty(like: Tensor) -> Tensor:
    return like.new_empty(0)


def _n_chunks(length, chunk):
    """Columns of the per-chunk tensors the scan saves: 0 if one chunk (solved step by step)."""
    return 0 if length <= chunk else -(-length // chunk)


if AVAILABLE:
    from .linear_recurrence import SCAN_CHUNK, _pieces
    from .neighborhood_attention import tiled
    from .selective_scan import (
        ScanOverflow,
        _backward,
        _forward_no_grad,
        _forward_train,
    )
    from .selective_scan_common import compute_dtype, operands

    _NS = 'mmseg_segman'

    # ------------------------------------------------------------------------- selective scan
    def _prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        ops = operands(u, A, B, C, D, z, compute_dtype(u))
        decaying = delta_softplus and bool((ops.A <= 0).all())
        return ops, (ops, delta, delta_bias, delta_softplus, decaying)

    @torch.library.custom_op(f'{_NS}::selective_scan_infer', mutates_args=())
    def _scan_infer(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                    D: Optional[Tensor], z: Optional[Tensor], delta_bias: Optional[Tensor],
                    delta_softplus: bool) -> Tensor:
        _, args = _prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
        try:
            out, _ = _forward_no_grad(*args)
        except ScanOverflow:
            out, _, _ = _forward_train(*args)
        return out.to(u.dtype).contiguous()

    @_scan_infer.register_fake
    def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        return torch.empty_like(u, memory_format=torch.contiguous_format)

    @torch.library.custom_op(f'{_NS}::selective_scan_train', mutates_args=())
    def _scan_train(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                    D: Optional[Tensor], z: Optional[Tensor], delta_bias: Optional[Tensor],
                    delta_softplus: bool) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor,
                                                   Tensor, Tensor]:
        _, args = _prepare(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
        out, (dt, a, x, y), chunks = _forward_train(*args)
        rows = a.numel() // a.shape[-1]
        if chunks is None:
            p_end = dt.new_empty(rows, 0)
            bad = torch.zeros(rows, 0, dtype=torch.bool, device=u.device)
        else:
            p_end = torch.cat([p for p, _ in chunks], 1)
            bad = torch.cat([b for _, b in chunks], 1)
        y = y.contiguous() if z is not None else _empty(dt)
        return out.to(u.dtype).contiguous(), dt, a, x, y, p_end, bad

    @_scan_train.register_fake
    def _(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
        ct = compute_dtype(u)
        bsz, d, length = u.shape
        n = A.shape[1]
        cols = _n_chunks(length, SCAN_CHUNK)
        rows = bsz * d * n
        return (u.new_empty(u.shape), u.new_empty(u.shape, dtype=ct),
                u.new_empty((bsz, d, n, length), dtype=ct),
                u.new_empty((bsz, d, n, length), dtype=ct),
                u.new_empty(u.shape if z is not None else (0, ), dtype=ct),
                u.new_empty((rows, cols), dtype=ct),
                u.new_empty((rows, cols), dtype=torch.bool))

    @torch.library.custom_op(f'{_NS}::selective_scan_bwd', mutates_args=())
    def _scan_bwd(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                  D: Optional[Tensor], z: Optional[Tensor], delta_bias: Optional[Tensor],
                  dt: Tensor, a: Tensor, x: Tensor, y: Tensor, p_end: Tensor, bad: Tensor,
                  dout: Tensor, delta_softplus: bool, needs: List[bool]) -> List[Tensor]:
        decaying = delta_softplus and bool((A <= 0).all())
        chunks = None
        if p_end.shape[1]:
            chunks, col = [], 0
            for _, _, n, _ in _pieces(u.shape[-1], SCAN_CHUNK):
                chunks.append((p_end[:, col:col + n], bad[:, col:col + n]))
                col += n
        saved = (u, delta, A, B, C, D, z, delta_bias, dt, a, x, y if z is not None else None)
        grads = _backward(saved, needs, delta_softplus, decaying, chunks, dout, None)
        return [_empty(u) if g is None else g.contiguous() for g in grads]

    @_scan_bwd.register_fake
    def _(u, delta, A, B, C, D, z, delta_bias, dt, a, x, y, p_end, bad, dout, delta_softplus,
          needs):
        inputs = (u, delta, A, B, C, D, z, delta_bias)
        return [t.new_empty(t.shape) if t is not None and need else u.new_empty(0)
                for t, need in zip(inputs, needs)]

    def _scan_setup(ctx, inputs, output):
        ctx.delta_softplus = inputs[8]
        ctx.has = [t is not None for t in inputs[:8]]
        ctx.save_for_backward(*inputs[:8], *output[1:])

    def _scan_backward(ctx, dout, *_):
        saved = ctx.saved_tensors
        needs = [bool(n) and h for n, h in zip(ctx.needs_input_grad[:8], ctx.has)]
        grads = _scan_bwd(*saved[:8], *saved[8:], dout, ctx.delta_softplus, needs)
        return (*(g if need else None for g, need in zip(grads, needs)), None)

    _scan_train.register_autograd(_scan_backward, setup_context=_scan_setup)

    def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                       delta_softplus=False):
        """The chunked scan through the custom ops (no last state); arguments checked."""
        tensors = (u, delta, A, B, C, D, z, delta_bias)
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
            return _scan_train(*tensors, bool(delta_softplus))[0]
        return _scan_infer(*tensors, bool(delta_softplus))

    # ------------------------------------------------------------------------- neighbourhood
    def _flat_bias_index(q, kernel_size, dilation):
        return tiled._bias_flat_index(q.shape[2], q.shape[3], kernel_size, dilation, q.device)

    @torch.library.custom_op(f'{_NS}::na2d_qk', mutates_args=())
    def _na_qk(q: Tensor, k: Tensor, rpb: Optional[Tensor], kernel_size: int,
               dilation: int) -> Tensor:
        (attn, ) = tiled._over_subgrids(tiled._qk_fwd, (q, k), kernel_size, dilation,
                                        (kernel_size * kernel_size, ))
        if rpb is not None:  # as the eager no-grad path: one index_select, added in place
            H, W = q.shape[2:4]
            bias = rpb.reshape(rpb.shape[0], -1).index_select(
                1, _flat_bias_index(q, kernel_size, dilation))
            attn.add_(bias.view(rpb.shape[0], H, W, -1).to(attn.dtype))
        return attn

    @_na_qk.register_fake
    def _(q, k, rpb, kernel_size, dilation):
        return q.new_empty((*q.shape[:4], kernel_size * kernel_size))

    @torch.library.custom_op(f'{_NS}::na2d_qk_bwd', mutates_args=())
    def _na_qk_bwd(q: Tensor, k: Tensor, rpb: Optional[Tensor], grad_attn: Tensor,
                   kernel_size: int, dilation: int, need_rpb: bool) -> Tuple[Tensor, Tensor,
                                                                             Tensor]:
        D = q.shape[-1]
        grad_q, grad_k = tiled._over_subgrids(tiled._qk_bwd,
                                              tiled._in_common_dtype(q, k, grad_attn),
                                              kernel_size, dilation, (D, D))
        grad_rpb = _empty(q)
        if rpb is not None and need_rpb:  # the adjoint of the bias gather: a scatter-add
            heads = rpb.shape[0]
            index = _flat_bias_index(q, kernel_size, dilation)
            per_head = grad_attn.sum(0).reshape(heads, -1).to(rpb.dtype)
            grad_rpb = rpb.new_zeros(heads, rpb[0].numel()).index_add_(1, index, per_head)
            grad_rpb = grad_rpb.view(rpb.shape)
        return grad_q.to(q.dtype), grad_k.to(k.dtype), grad_rpb

    @_na_qk_bwd.register_fake
    def _(q, k, rpb, grad_attn, kernel_size, dilation, need_rpb):
        grad_rpb = rpb.new_empty(rpb.shape) if rpb is not None and need_rpb else q.new_empty(0)
        return q.new_empty(q.shape), k.new_empty(k.shape), grad_rpb

    def _na_qk_setup(ctx, inputs, output):
        ctx.save_for_backward(inputs[0], inputs[1], inputs[2])
        ctx.kernel_size, ctx.dilation = inputs[3], inputs[4]

    def _na_qk_backward(ctx, grad_attn):
        q, k, rpb = ctx.saved_tensors
        need_rpb = rpb is not None and ctx.needs_input_grad[2]
        grad_q, grad_k, grad_rpb = _na_qk_bwd(q, k, rpb, grad_attn, ctx.kernel_size,
                                              ctx.dilation, need_rpb)
        return grad_q, grad_k, grad_rpb if need_rpb else None, None, None

    _na_qk.register_autograd(_na_qk_backward, setup_context=_na_qk_setup)

    @torch.library.custom_op(f'{_NS}::na2d_av', mutates_args=())
    def _na_av(attn: Tensor, v: Tensor, kernel_size: int, dilation: int) -> Tensor:
        (out, ) = tiled._over_subgrids(tiled._av_fwd, (attn, v), kernel_size, dilation,
                                       (v.shape[-1], ))
        return out

    @_na_av.register_fake
    def _(attn, v, kernel_size, dilation):
        return attn.new_empty((*attn.shape[:4], v.shape[-1]))

    @torch.library.custom_op(f'{_NS}::na2d_av_bwd', mutates_args=())
    def _na_av_bwd(attn: Tensor, v: Tensor, grad_out: Tensor, kernel_size: int,
                   dilation: int) -> Tuple[Tensor, Tensor]:
        grad_attn, grad_v = tiled._over_subgrids(tiled._av_bwd,
                                                 tiled._in_common_dtype(attn, v, grad_out),
                                                 kernel_size, dilation,
                                                 (attn.shape[-1], v.shape[-1]))
        return grad_attn.to(attn.dtype), grad_v.to(v.dtype)

    @_na_av_bwd.register_fake
    def _(attn, v, grad_out, kernel_size, dilation):
        return attn.new_empty(attn.shape), v.new_empty(v.shape)

    def _na_av_setup(ctx, inputs, output):
        ctx.save_for_backward(inputs[0], inputs[1])
        ctx.kernel_size, ctx.dilation = inputs[2], inputs[3]

    def _na_av_backward(ctx, grad_out):
        attn, v = ctx.saved_tensors
        grad_attn, grad_v = _na_av_bwd(attn, v, grad_out, ctx.kernel_size, ctx.dilation)
        return grad_attn, grad_v, None, None

    _na_av.register_autograd(_na_av_backward, setup_context=_na_av_setup)

    def na2d_qk(q: Tensor, k: Tensor, kernel_size: int, dilation: int,
                rpb: Optional[Tensor] = None) -> Tensor:
        return _na_qk(q, k, rpb, kernel_size, dilation)

    # ------------------------------------------------------------------------- resized bias
    _RESIZED = {}

    @torch.library.custom_op(f'{_NS}::resize_bias_bicubic', mutates_args=())
    def _resize_bias(bias: Tensor, size: int) -> Tensor:
        """(heads, n, n) -> (heads, size, size), bicubic; cached per weights (inference)."""
        key = (size, bias.data_ptr(), bias._version, bias.dtype, bias.device,
               tuple(bias.shape))
        hit = _RESIZED.get(key)
        if hit is None:
            if len(_RESIZED) >= 16:
                _RESIZED.clear()
            hit = _RESIZED[key] = torch.nn.functional.interpolate(
                bias[None], size=(size, size), mode='bicubic', align_corners=False)[0]
        return hit.clone()  # the caller (inductor) may reuse its output's buffer

    @_resize_bias.register_fake
    def _(bias, size):
        return bias.new_empty((bias.shape[0], size, size))

    def resize_bias_bicubic(bias: Tensor, size: int) -> Tensor:
        """Inference only (no autograd): ``F.interpolate(bias[None], (size, size), 'bicubic')``
        computed once per weights and size (compiled graphs recompute it every call)."""
        return _resize_bias(bias, size)

    def na2d_av(attn: Tensor, v: Tensor, kernel_size: int, dilation: int) -> Tensor:
        return _na_av(attn, v, kernel_size, dilation)
