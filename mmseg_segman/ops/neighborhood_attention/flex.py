"""Flex-attention backend: PyTorch's ``torch.nn.attention.flex_attention`` (CUDA, compiled).

A block mask restricts each query to its NATTEN window (and to the keys a key mask keeps);
``rpb`` enters as a score modification. Compiled, flex attention skips the masked blocks, so it
never forms the full H*W x H*W scores; it needs Triton, hence CUDA. Eager flex attention (used
on other devices, i.e. by the tests on CPU) forms them all and is only good for checking.

Gradient of ``rpb``, two ways (:data:`RPB_GRAD`):

- ``'window'`` (default): flex attention sees ``rpb`` as a constant and returns the
  log-sum-exp of each query's scores; an identity autograd node on its output then adds
  ``d rpb`` in the backward, from each query's k*k window only:
  ``dS = P * (dO . v - rowsum(dO * O))`` with ``P = exp(scale q.k + rpb - lse)``, formed with
  the tiled backend's window logits and summed into the bias table. It needs no gradient of
  a captured tensor inside the compiled kernel, and its formula is checked on CPU.
- ``'flex'``: the captured ``rpb`` requires grad and flex attention's own backward
  accumulates its gradient (this torch supports captured-buffer gradients in the compiled
  kernel, with atomic adds into the (heads, 2k-1, 2k-1) table). Kept to compare on a GPU.
"""
import functools
from typing import Optional

import torch
from torch import Tensor

from .common import bias_table, group_window, key_slots
from .tiled import na2d_qk_tiled

__all__ = ['supports', 'na2d_flex', 'rpb_grad_from_window', 'RPB_GRAD']

_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# How rpb's gradient is formed: 'window' or 'flex' (module docstring).
RPB_GRAD = 'window'


def _flex():
    try:
        from torch.nn.attention import flex_attention
    except ImportError:
        return None
    return flex_attention


def _has_triton() -> bool:
    try:
        from torch.utils._triton import has_triton
    except ImportError:
        return False
    return has_triton()


def supports(q: Tensor) -> bool:
    """Whether compiled flex attention can run on ``q``'s device and dtype."""
    return q.is_cuda and q.dtype in _DTYPES and _flex() is not None and _has_triton()


@functools.lru_cache(maxsize=None)
def _compiled_flex():
    return torch.compile(_flex().flex_attention)


def _axis(query_pos, key_pos, length, kernel_size, dilation):
    """Whether ``key_pos`` is in the window of ``query_pos`` on one axis, and its rpb index."""
    residue, query_group, start = group_window(query_pos, length, kernel_size, dilation)
    key_group = key_pos // dilation
    inside = ((key_pos % dilation == residue) & (key_group >= start) &
              (key_group < start + kernel_size))
    bias_index = (key_group - query_group + kernel_size - 1).clamp(0, 2 * kernel_size - 2)
    return inside, bias_index


def _mods(H, W, kernel_size, dilation, rpb, keys):
    """(mask_mod, score_mod) of the window; ``keys`` (B, heads, H*W) bool or None."""

    def axes(q_idx, kv_idx):
        rows = _axis(q_idx // W, kv_idx // W, H, kernel_size, dilation)
        cols = _axis(q_idx % W, kv_idx % W, W, kernel_size, dilation)
        return rows, cols

    def mask_mod(b, h, q_idx, kv_idx):
        (in_rows, _), (in_cols, _) = axes(q_idx, kv_idx)
        inside = in_rows & in_cols
        return inside if keys is None else inside & keys[b, h, kv_idx]

    score_mod = None
    if rpb is not None:
        def score_mod(score, b, h, q_idx, kv_idx):
            (_, bias_row), (_, bias_col) = axes(q_idx, kv_idx)
            return score + rpb[h, bias_row, bias_col].to(score.dtype)

    return mask_mod, score_mod


@functools.lru_cache(maxsize=64)
def _window_block_mask(H: int, W: int, kernel_size: int, dilation: int, device: torch.device):
    """The block mask of the plain window (no key mask), built once per geometry and device.

    On CUDA mask creation is compiled: eager creation evaluates the mask on all H*W x H*W
    pairs at once (gigabytes at 128 x 128), compiled creation fuses it per block.
    """
    flex = _flex()
    mask_mod, _ = _mods(H, W, kernel_size, dilation, None, None)
    create = torch.compile(flex.create_block_mask) if device.type == 'cuda' else \
        flex.create_block_mask
    return create(mask_mod, None, None, H * W, H * W, device=device)


def _block_mask(B, heads, H, W, kernel_size, dilation, keys, device):
    if keys is None:
        return _window_block_mask(H, W, kernel_size, dilation, torch.device(device))
    mask_mod, _ = _mods(H, W, kernel_size, dilation, None, keys)
    return _flex().create_block_mask(mask_mod, B, heads, H * W, H * W, device=device)


def rpb_grad_from_window(q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                         grad_out: Tensor, kernel_size: int, dilation: int, rpb: Tensor,
                         scale: float, key_mask: Optional[Tensor] = None) -> Tensor:
    """Gradient of ``rpb`` from each query's window (the ``'window'`` mode); computed in
    float32 (float64 for float64 inputs).

    Args:
        q, k, v (Tensor): (B, heads, H, W, D), unscaled q.
        out (Tensor): The attention output (B, heads, H, W, D).
        lse (Tensor): Natural log-sum-exp of each query's scores (B, heads, H, W).
        grad_out (Tensor): Gradient of ``out``.
        kernel_size, dilation (int): The window.
        rpb (Tensor): (heads, 2k-1, 2k-1); only its shape, dtype and device are used.
        scale (float): Logit scale.
        key_mask (Tensor, optional): bool (b, h, H, W), as given to :func:`na2d_flex`.

    Returns:
        Tensor: d rpb, (heads, 2k-1, 2k-1) in rpb's dtype.
    """
    H, W = q.shape[2:4]
    ct = torch.promote_types(q.dtype, torch.float32)  # half-precision inputs: float32
    q32, k32, v32, out32, g32 = (t.to(ct) for t in (q, k, v, out, grad_out))
    with torch.no_grad():
        logits = na2d_qk_tiled(q32 * scale, k32, kernel_size, dilation, rpb.detach().to(ct))
        if key_mask is not None:
            logits = logits.masked_fill(~key_slots(key_mask, kernel_size, dilation),
                                        float('-inf'))
        probs = (logits - lse.to(ct)[..., None]).exp_()
        grad_probs = na2d_qk_tiled(g32, v32, kernel_size, dilation)  # dO . v per window key
        delta = (g32 * out32).sum(-1, keepdim=True)  # = sum_j P_j (dO . v_j)
        grad_scores = probs.mul_(grad_probs.sub_(delta)).sum(0)  # heads, H, W, k*k
    # Adjoint of the bias gather: autograd of bias_table on a stand-in table.
    with torch.enable_grad():
        table = torch.zeros(rpb.shape, dtype=ct, device=rpb.device, requires_grad=True)
        (grad,) = torch.autograd.grad(bias_table(table, H, W, kernel_size, dilation), table,
                                      grad_scores)
    return grad.to(rpb.dtype)


class _AddRPBGrad(torch.autograd.Function):
    """Identity on flex attention's output whose backward also returns d rpb
    (:func:`rpb_grad_from_window`); the gradient of ``out`` passes through unchanged."""

    @staticmethod
    def forward(ctx, out, q, k, v, lse, rpb, kernel_size, dilation, scale, key_mask):
        ctx.save_for_backward(q, k, v, out, lse, rpb, key_mask)
        ctx.geometry = (kernel_size, dilation, scale)
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse, rpb, key_mask = ctx.saved_tensors
        kernel_size, dilation, scale = ctx.geometry
        grad_rpb = rpb_grad_from_window(q, k, v, out, lse, grad_out, kernel_size, dilation, rpb,
                                        scale, key_mask)
        return grad_out, None, None, None, None, grad_rpb, None, None, None, None


def na2d_flex(q: Tensor, k: Tensor, v: Tensor, kernel_size: int, dilation: int,
              rpb: Optional[Tensor], scale: float, key_mask: Optional[Tensor] = None) -> Tensor:
    """``na2d`` through flex attention; compiled on CUDA, eager elsewhere.

    Args:
        q, k, v (Tensor): (B, heads, H, W, D).
        kernel_size (int): Window edge k.
        dilation (int): Dilation d.
        rpb (Tensor, optional): (heads, 2k-1, 2k-1).
        scale (float): Logit scale.
        key_mask (Tensor, optional): bool (b, h, H, W) with b in {1, B}, h in {1, heads}.

    Returns:
        Tensor: (B, heads, H, W, D).
    """
    if RPB_GRAD not in ('window', 'flex'):
        raise ValueError(f"flex.RPB_GRAD must be 'window' or 'flex', got {RPB_GRAD!r}")
    flex = _flex()
    B, heads, H, W, D = q.shape
    keys = None
    if key_mask is not None:
        keys = key_mask.expand(B, heads, H, W).reshape(B, heads, H * W)
    window_grad = (rpb is not None and RPB_GRAD == 'window' and torch.is_grad_enabled()
                   and rpb.requires_grad)
    _, score_mod = _mods(H, W, kernel_size, dilation,
                         rpb.detach() if window_grad else rpb, keys)
    block_mask = _block_mask(B, heads, H, W, kernel_size, dilation, keys, q.device)
    attend = _compiled_flex() if q.is_cuda else flex.flex_attention
    flat = [x.reshape(B, heads, H * W, D) for x in (q, k, v)]
    if not window_grad:
        out = attend(*flat, score_mod=score_mod, block_mask=block_mask, scale=scale)
        return out.view(B, heads, H, W, D)
    out, aux = attend(*flat, score_mod=score_mod, block_mask=block_mask, scale=scale,
                      return_aux=flex.AuxRequest(lse=True))
    out = out.view(B, heads, H, W, D)
    lse = aux.lse.detach().view(B, heads, H, W)
    return _AddRPBGrad.apply(out, q.detach(), k.detach(), v.detach(), lse, rpb, kernel_size,
                             dilation, scale, key_mask)
