"""2-D neighborhood attention against a per-pixel loop, natten, and float64 gradcheck."""
import os
from types import SimpleNamespace

import pytest
import torch

from mmseg_segman.ops import na2d, na2d_av, na2d_qk
from mmseg_segman.ops import neighborhood_attention as na_mod


# ----------------------------------------------------------------------------- reference
def _window(pos, length, kernel_size, dilation):
    """NATTEN window of one axis, written the way natten's flex mask states it: the window
    centre (in group units) is the query clamped to [k//2, group_len - 1 - right]."""
    residue, group_pos = pos % dilation, pos // dilation
    group_len = len(range(residue, length, dilation))
    left, right = kernel_size // 2, kernel_size // 2 - (1 - kernel_size % 2)
    centre = min(max(group_pos, left), group_len - 1 - right)
    keys = [residue + dilation * g for g in range(centre - left, centre + right + 1)]
    bias = [g - group_pos + kernel_size - 1 for g in range(centre - left, centre + right + 1)]
    return keys, bias


def _loop_reference(q, k, v, kernel_size, dilation, rpb, scale):
    """Per-pixel loop: logits (q.k + rpb) and softmax(scale q.k + rpb) @ v."""
    B, heads, H, W, _ = q.shape
    logits = q.new_empty(B, heads, H, W, kernel_size * kernel_size)
    out = torch.empty_like(v)
    for i in range(H):
        rows, brows = _window(i, H, kernel_size, dilation)
        for j in range(W):
            cols, bcols = _window(j, W, kernel_size, dilation)
            keys = k[:, :, rows][:, :, :, cols].flatten(2, 3)  # B h k*k D
            vals = v[:, :, rows][:, :, :, cols].flatten(2, 3)
            bias = 0 if rpb is None else rpb[:, brows][:, :, bcols].flatten(1)
            logits[:, :, i, j] = (q[:, :, i, j, None] * keys).sum(-1) + bias
            weights = ((q[:, :, i, j, None] * scale * keys).sum(-1) + bias).softmax(-1)
            out[:, :, i, j] = (weights[..., None] * vals).sum(-2)
    return logits, out


def _gather_reference(q, k, v, kernel_size, dilation, rpb, scale):
    """Vectorised form of the loop: gather every window with the same per-axis rule."""
    H, W = q.shape[2:4]
    rows, brows = map(torch.tensor, zip(*(_window(i, H, kernel_size, dilation) for i in range(H))))
    cols, bcols = map(torch.tensor, zip(*(_window(j, W, kernel_size, dilation) for j in range(W))))

    def neighborhoods(x):  # B h H W k k D
        return x[:, :, rows[:, None, :, None], cols[None, :, None, :]]

    logits = torch.einsum('bhxyd,bhxyijd->bhxyij', q * scale, neighborhoods(k))
    if rpb is not None:
        logits = logits + rpb[:, brows[:, None, :, None], bcols[None, :, None, :]]
    weights = logits.flatten(-2).softmax(-1).unflatten(-1, logits.shape[-2:])
    return torch.einsum('bhxyij,bhxyijd->bhxyd', weights, neighborhoods(v))


def _inputs(shape, kernel_size, bias, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(shape, generator=gen, dtype=dtype) for _ in range(3))
    rpb = torch.randn(shape[1], 2 * kernel_size - 1, 2 * kernel_size - 1, generator=gen,
                      dtype=dtype) if bias else None
    return q, k, v, rpb


CASES = [  # (H, W, kernel_size, dilation): odd/even sizes and kernels, borders, H == k*d
    (9, 10, 3, 1),
    (13, 8, 5, 1),
    (11, 12, 4, 1),
    (13, 12, 3, 2),
    (10, 15, 5, 2),
    (6, 9, 3, 2),
    (7, 7, 7, 1),
]


@pytest.mark.parametrize('bias', [False, True])
@pytest.mark.parametrize('H,W,kernel_size,dilation', CASES)
def test_matches_loop_reference(H, W, kernel_size, dilation, bias):
    q, k, v, rpb = _inputs((2, 2, H, W, 3), kernel_size, bias)
    ref_logits, ref_out = _loop_reference(q, k, v, kernel_size, dilation, rpb, scale=0.7)

    logits = na2d_qk(q, k, kernel_size, dilation, rpb=rpb)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-12, atol=1e-12)
    split = na2d_av(na2d_qk(q * 0.7, k, kernel_size, dilation, rpb=rpb).softmax(-1), v,
                    kernel_size, dilation)
    torch.testing.assert_close(split, ref_out, rtol=1e-12, atol=1e-12)
    fused = na2d(q, k, v, kernel_size, dilation, rpb=rpb, scale=0.7)
    torch.testing.assert_close(fused, ref_out, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('H,W,kernel_size,dilation', [(40, 37, 11, 1), (45, 50, 7, 3)])
def test_split_form_gradients_match_gather_reference(H, W, kernel_size, dilation):
    """SegMAN's split form, forward and all gradients, at sizes with many tiles and bands."""
    q, k, v, rpb = _inputs((2, 2, H, W, 8), kernel_size, True)
    grad = torch.randn(2, 2, H, W, 8, dtype=torch.float64)
    results = []
    for fn in (
            lambda q, k, v, rpb: na2d_av(
                na2d_qk(q * 0.3, k, kernel_size, dilation, rpb=rpb).softmax(-1), v,
                kernel_size, dilation),
            lambda q, k, v, rpb: _gather_reference(q, k, v, kernel_size, dilation, rpb, 0.3)):
        leaves = [t.detach().requires_grad_() for t in (q, k, v, rpb)]
        out = fn(*leaves)
        results.append([out] + list(torch.autograd.grad(out, leaves, grad)))
    for ours, ref in zip(*results):
        torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)


def test_default_scale_is_inverse_sqrt_head_dim():
    q, k, v, _ = _inputs((1, 1, 8, 8, 4), 3, False)
    _, ref_out = _loop_reference(q, k, v, 3, 1, None, scale=0.5)
    torch.testing.assert_close(na2d(q, k, v, 3), ref_out, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('dilation', [1, 2])
def test_chunked_bands_and_batches_match_single_step(monkeypatch, dilation):
    """A tiny workspace forces one tile row per band and one batch*head item per step."""
    q, k, v, rpb = _inputs((2, 3, 21, 19, 4), 3, True)
    whole = na2d_qk(q, k, 3, dilation, rpb=rpb)
    ref_logits, _ = _loop_reference(q, k, v, 3, dilation, rpb, scale=1.0)
    monkeypatch.setattr(na_mod, '_TILE', 4)
    monkeypatch.setattr(na_mod, '_WORKSPACE_BYTES', 1)
    chunked = na2d_qk(q, k, 3, dilation, rpb=rpb)
    torch.testing.assert_close(whole, ref_logits, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(chunked, ref_logits, rtol=1e-12, atol=1e-12)
    attn = torch.randn(ref_logits.shape, dtype=torch.float64)
    monkeypatch.undo()
    expected = na2d_av(attn, v, 3, dilation)
    monkeypatch.setattr(na_mod, '_TILE', 4)
    monkeypatch.setattr(na_mod, '_WORKSPACE_BYTES', 1)
    torch.testing.assert_close(na2d_av(attn, v, 3, dilation), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('H,W,kernel_size,dilation', [(6, 7, 3, 1), (7, 6, 3, 2), (5, 6, 4, 1)])
def test_gradcheck_float64(H, W, kernel_size, dilation):
    q, k, v, rpb = _inputs((1, 2, H, W, 2), kernel_size, True)
    attn = torch.randn(1, 2, H, W, kernel_size**2, dtype=torch.float64)
    for t in (q, k, v, rpb, attn):
        t.requires_grad_()
    # fast_mode compares random projections of the Jacobians (one backward, not one per output)
    assert torch.autograd.gradcheck(
        lambda q, k, rpb: na2d_qk(q, k, kernel_size, dilation, rpb=rpb), (q, k, rpb),
        fast_mode=True)
    assert torch.autograd.gradcheck(lambda a, v: na2d_av(a, v, kernel_size, dilation), (attn, v),
                                    fast_mode=True)
    assert torch.autograd.gradcheck(
        lambda q, k, v, rpb: na2d(q, k, v, kernel_size, dilation, rpb=rpb), (q, k, v, rpb),
        fast_mode=True)


def test_gradcheck_float64_full_jacobian():
    q, k, v, rpb = _inputs((1, 1, 5, 6, 2), 3, True)
    for t in (q, k, v, rpb):
        t.requires_grad_()
    assert torch.autograd.gradcheck(lambda q, k, v, rpb: na2d(q, k, v, 3, rpb=rpb), (q, k, v, rpb))


def test_backward_saves_no_neighborhood_tensors():
    """The split form keeps O(H W k^2) for the weights, never O(H W k^2 D) gathered keys."""
    q, k, v, rpb = _inputs((1, 1, 24, 24, 16), 7, True, dtype=torch.float32)
    for t in (q, k, v, rpb):
        t.requires_grad_()
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = na2d_av(na2d_qk(q, k, 7, rpb=rpb).softmax(-1), v, 7)
    weights = 24 * 24 * 49
    assert max(saved) <= weights  # a gathered neighborhood would be 16x larger
    assert sum(saved) <= 2 * weights + 4 * q.numel() + 24 * 7 * 2
    out.sum().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in (q, k, v, rpb))


# ----------------------------------------------------------------------------- natten oracle
def _natten():
    try:
        import natten
    except ImportError:
        if os.environ.get('CI'):
            raise
        pytest.skip('natten is not installed (pip install --no-build-isolation natten==0.21.7)')
    return natten


@pytest.mark.parametrize('H,W,kernel_size,dilation', [(13, 12, 5, 1), (11, 14, 3, 2),
                                                      (9, 10, 4, 1)])
def test_matches_natten_forward(H, W, kernel_size, dilation):
    natten = _natten()
    q, k, v, _ = _inputs((2, 2, H, W, 32), kernel_size, False, dtype=torch.float32)
    with torch.no_grad():
        expected = natten.na2d(*(t.permute(0, 2, 3, 1, 4) for t in (q, k, v)), kernel_size,
                               dilation=dilation, scale=0.3).permute(0, 3, 1, 2, 4)
        out = na2d(q, k, v, kernel_size, dilation, scale=0.3)
        adapter = na_mod._na2d_natten(q, k, v, kernel_size, dilation, 0.3)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(adapter, out, rtol=1e-5, atol=1e-5)


def test_natten_selection_by_version(monkeypatch):
    """natten < 0.20 offers the split ops (same layout, rpb); >= 0.20 only the fused op."""
    split = SimpleNamespace(na2d_qk=object(), na2d_av=object())
    old = SimpleNamespace(__version__='0.17.5+torch250cu124', functional=split)
    new = SimpleNamespace(__version__='0.21.7', functional=SimpleNamespace(), na2d=object())
    monkeypatch.setattr(na_mod, '_natten_module', lambda: old)
    assert na_mod._natten_split_ops() == (split.na2d_qk, split.na2d_av)
    assert na_mod._natten_fused() is None
    monkeypatch.setattr(na_mod, '_natten_module', lambda: new)
    assert na_mod._natten_split_ops() is None
    assert na_mod._natten_fused() is new.na2d
    monkeypatch.setattr(na_mod, '_natten_module', lambda: None)
    assert na_mod._natten_split_ops() is None and na_mod._natten_fused() is None


# ----------------------------------------------------------------------------- flex adapter
def test_flex_adapter_matches_on_cpu():
    if na_mod._flex_attention() is None:
        pytest.skip('torch.nn.attention.flex_attention is not available in this torch')
    q, k, v, rpb = _inputs((1, 2, 11, 10, 8), 3, True, dtype=torch.float32)
    with torch.no_grad():
        flex = na_mod._na2d_flex(q, k, v, 3, 2, rpb, 0.4, compiled=False)
        expected = na2d(q, k, v, 3, 2, rpb=rpb, scale=0.4)
    torch.testing.assert_close(flex, expected, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- errors
def test_bad_inputs_raise_clear_errors():
    q = torch.randn(1, 2, 10, 12, 4)
    with pytest.raises(ValueError, match=r'H >= kernel_size \* dilation.*H=10'):
        na2d_qk(q, q, 11)
    with pytest.raises(ValueError, match=r'W >= kernel_size \* dilation.*W=12'):
        tall = torch.randn(1, 2, 16, 12, 4)
        na2d_qk(tall, tall, 3, dilation=5)
    with pytest.raises(ValueError, match='kernel_size must be an int >= 2'):
        na2d_qk(q, q, 1)
    with pytest.raises(ValueError, match='dilation must be an int >= 1'):
        na2d_av(torch.randn(1, 2, 10, 12, 9), q, 3, dilation=0)
    with pytest.raises(ValueError, match=r'rpb must have shape \(heads, 2k-1, 2k-1\)'):
        na2d_qk(q, q, 3, rpb=torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match='attn must have kernel_size\\*\\*2 = 9'):
        na2d_av(torch.randn(1, 2, 10, 12, 8), q, 3)
    with pytest.raises(ValueError, match='k has shape'):
        na2d_qk(q, q[:, :1], 3)
    with pytest.raises(ValueError, match='q must be 5-D'):
        na2d_qk(q[0], q[0], 3)
