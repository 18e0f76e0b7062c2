"""2-D neighborhood attention: every backend against a per-pixel loop, natten, and float64
gradcheck; the choice of backend with the CUDA backends' availability monkeypatched."""
import os
from types import SimpleNamespace

import pytest
import torch

from mmseg_segman.ops import na2d, na2d_av, na2d_qk
from mmseg_segman.ops.neighborhood_attention import (
    api,
    flex,
    na2d_av_reference,
    na2d_backend,
    na2d_qk_reference,
    na2d_reference,
    natten_ops,
    split_backend,
    tiled,
)


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


def _loop_reference(q, k, v, kernel_size, dilation, rpb, scale, key_mask=None):
    """Per-pixel loop: logits (q.k + rpb) and softmax(scale q.k + rpb) @ v; keys where the
    (H, W) ``key_mask`` is False are left out of the softmax."""
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
            scores = (q[:, :, i, j, None] * scale * keys).sum(-1) + bias
            if key_mask is not None:
                keep = key_mask[rows][:, cols].flatten()
                scores = scores.masked_fill(~keep, float('-inf'))
            weights = scores.softmax(-1)
            out[:, :, i, j] = (weights[..., None] * vals).sum(-2)
    return logits, out


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
    # the published gather reference, which the other tests use as ground truth
    torch.testing.assert_close(na2d_qk_reference(q, k, kernel_size, dilation, rpb), ref_logits,
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(na2d_reference(q, k, v, kernel_size, dilation, rpb, 0.7),
                               ref_out, rtol=1e-12, atol=1e-12)


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
            lambda q, k, v, rpb: na2d_reference(q, k, v, kernel_size, dilation, rpb, 0.3)):
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
    monkeypatch.setattr(tiled, '_TILE', 4)
    monkeypatch.setattr(tiled, '_WORKSPACE_BYTES', 1)
    chunked = na2d_qk(q, k, 3, dilation, rpb=rpb)
    torch.testing.assert_close(whole, ref_logits, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(chunked, ref_logits, rtol=1e-12, atol=1e-12)
    attn = torch.randn(ref_logits.shape, dtype=torch.float64)
    monkeypatch.undo()
    expected = na2d_av(attn, v, 3, dilation)
    monkeypatch.setattr(tiled, '_TILE', 4)
    monkeypatch.setattr(tiled, '_WORKSPACE_BYTES', 1)
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
        adapter = natten_ops.na2d_fused(q, k, v, kernel_size, dilation, 0.3)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(adapter, out, rtol=1e-5, atol=1e-5)


def test_natten_selection_by_version(monkeypatch):
    """natten < 0.20 offers the split ops (same layout, rpb); >= 0.20 only the fused op, which
    counts as supported only where natten's chooser names a kernel other than eager flex."""
    split = SimpleNamespace(na2d_qk=object(), na2d_av=object())
    old = SimpleNamespace(__version__='0.17.5+torch250cu124', functional=split)
    chosen = []
    new = SimpleNamespace(__version__='0.21.7', na2d=object(), functional=SimpleNamespace(
        choose_backend=lambda q, k, v, torch_compile: chosen[-1]))
    q = torch.zeros(1, 2, 5, 6, 4)
    monkeypatch.setattr(natten_ops, '_natten', lambda: old)
    assert natten_ops.split_ops() == (split.na2d_qk, split.na2d_av)
    assert not natten_ops.fused_supports(q, q, q)
    monkeypatch.setattr(natten_ops, '_natten', lambda: new)
    assert natten_ops.split_ops() is None
    chosen.append('hopper-fna')
    assert natten_ops.fused_supports(q, q, q)
    chosen.append('flex-fna')
    assert not natten_ops.fused_supports(q, q, q)
    new.functional = SimpleNamespace()  # no chooser: cannot tell, so not chosen
    assert not natten_ops.fused_supports(q, q, q)
    monkeypatch.setattr(natten_ops, '_natten', lambda: None)
    assert natten_ops.split_ops() is None and not natten_ops.fused_supports(q, q, q)


def test_natten_chooser_rejects_cpu_tensors():
    """With the installed natten: CPU tensors have no natten kernel of their own."""
    _natten()
    q = torch.randn(1, 2, 9, 9, 16)
    assert not natten_ops.fused_supports(q, q, q)


# ----------------------------------------------------------------------------- flex backend
def _flex_available():
    if flex._flex() is None:
        pytest.skip('torch.nn.attention.flex_attention is not available in this torch')


def test_flex_backend_matches_reference_on_cpu():
    """Eager flex attention on CPU (compiled needs CUDA; on CPU flex has no backward), with
    rpb and a per-batch key mask, against the gather reference in float64."""
    _flex_available()
    q, k, v, rpb = _inputs((2, 2, 11, 10, 8), 3, True)
    key_mask = torch.rand(2, 1, 11, 10, generator=torch.Generator().manual_seed(0)) > 0.2
    key_mask[..., ::2, ::2] = True  # every 3x3 window keeps a key
    with torch.no_grad():
        for mask in (None, key_mask):
            out = flex.na2d_flex(q, k, v, 3, 2, rpb, 0.4, key_mask=mask)
            ref = na2d_reference(q, k, v, 3, 2, rpb, 0.4, key_mask=mask)
            torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
        out = flex.na2d_flex(q, k, v, 4, 1, None, 0.4)
        torch.testing.assert_close(out, na2d_reference(q, k, v, 4, 1, None, 0.4), rtol=1e-10,
                                   atol=1e-10)


def test_flex_needs_cuda_and_triton():
    assert not flex.supports(torch.zeros(1, 1, 4, 4, 2))


# ----------------------------------------------------------------------------- dispatch
def _pretend(monkeypatch, cuda=True, fused=False, split=False, flex_ok=False):
    """Availability of the CUDA backends, as na2d_backend sees it."""
    monkeypatch.setattr(api, '_on_cuda', lambda x: cuda)
    monkeypatch.setattr(natten_ops, 'fused_supports', lambda q, k, v: fused)
    ops = (lambda *a, **kw: None, lambda *a, **kw: None)
    monkeypatch.setattr(natten_ops, 'split_ops', lambda: ops if split else None)
    monkeypatch.setattr(flex, 'supports', lambda q: flex_ok)


@pytest.mark.parametrize('available,kernel_size,with_rpb,with_mask,expected', [
    (dict(cuda=False, fused=True, split=True, flex_ok=True), 3, False, False, 'tiled'),
    (dict(fused=True, split=True, flex_ok=True), 3, False, False, 'natten-fused'),
    (dict(fused=True, split=True, flex_ok=True), 3, True, False, 'natten-split'),
    (dict(fused=True, split=True, flex_ok=True), 3, False, True, 'natten-split'),
    (dict(fused=True, split=True, flex_ok=True), 4, True, False, 'flex'),  # split: odd only
    (dict(fused=True, flex_ok=True), 3, True, False, 'flex'),
    (dict(fused=True), 3, True, False, 'tiled'),
    (dict(split=True), 4, False, False, 'tiled'),
    (dict(), 3, False, False, 'tiled'),
])
def test_backend_choice(monkeypatch, available, kernel_size, with_rpb, with_mask, expected):
    q = torch.zeros(1, 2, 8, 8, 4)
    rpb = torch.zeros(2, 2 * kernel_size - 1, 2 * kernel_size - 1) if with_rpb else None
    key_mask = torch.ones(8, 8, dtype=torch.bool) if with_mask else None
    _pretend(monkeypatch, **available)
    assert na2d_backend(q, q, q, kernel_size, 1, rpb, key_mask) == expected
    split_expected = 'natten-split' if expected == 'natten-split' or (
        available.get('split') and available.get('cuda', True) and kernel_size % 2) else 'tiled'
    assert split_backend(q, kernel_size) == split_expected


def test_exporting_chooses_the_reference(monkeypatch):
    _pretend(monkeypatch, fused=True, split=True, flex_ok=True)
    monkeypatch.setattr(api, 'is_exporting', lambda: True)
    q = torch.zeros(1, 1, 6, 6, 2)
    assert na2d_backend(q, q, q, 3) == 'reference' and split_backend(q, 3) == 'reference'


def test_na2d_runs_the_chosen_backend(monkeypatch):
    """With a CUDA device pretended, na2d and the split functions call the chosen backend (here
    stand-ins on CPU that record their calls) and return its result."""
    q, k, v, rpb = _inputs((1, 2, 9, 8, 4), 3, True)
    _, expected = _loop_reference(q, k, v, 3, 1, rpb, scale=0.5)
    calls = []

    def natten_qk(q, k, kernel_size, dilation, rpb=None):
        calls.append('qk')
        return na2d_qk_reference(q, k, kernel_size, dilation, rpb)

    def natten_av(attn, v, kernel_size, dilation):
        calls.append('av')
        return na2d_av_reference(attn, v, kernel_size, dilation)

    def fused(q, k, v, kernel_size, dilation, scale):
        calls.append('fused')
        return na2d_reference(q, k, v, kernel_size, dilation, None, scale)

    def flex_stand_in(q, k, v, kernel_size, dilation, rpb, scale, key_mask=None):
        calls.append('flex')
        return na2d_reference(q, k, v, kernel_size, dilation, rpb, scale, key_mask)

    _pretend(monkeypatch, split=True, fused=True, flex_ok=True)
    monkeypatch.setattr(natten_ops, 'split_ops', lambda: (natten_qk, natten_av))
    monkeypatch.setattr(natten_ops, 'na2d_fused', fused)
    monkeypatch.setattr(flex, 'na2d_flex', flex_stand_in)
    torch.testing.assert_close(na2d(q, k, v, 3, rpb=rpb, scale=0.5), expected)
    assert calls == ['qk', 'av']
    calls.clear()
    _, no_bias = _loop_reference(q, k, v, 3, 1, None, scale=0.5)
    torch.testing.assert_close(na2d(q, k, v, 3, scale=0.5), no_bias)
    assert calls == ['fused']
    calls.clear()
    torch.testing.assert_close(na2d(q, k, v, 4, rpb=torch.zeros(2, 7, 7), scale=0.5),
                               _loop_reference(q, k, v, 4, 1, None, scale=0.5)[1])
    assert calls == ['flex']
    calls.clear()
    na2d_av(na2d_qk(q, k, 3, rpb=rpb), v, 3)
    assert calls == ['qk', 'av']


# ----------------------------------------------------------------------------- key mask
@pytest.mark.parametrize('H,W,kernel_size,dilation', [(9, 10, 3, 1), (10, 12, 3, 2),
                                                      (8, 9, 4, 1)])
def test_key_mask_matches_loop_reference(H, W, kernel_size, dilation):
    q, k, v, rpb = _inputs((2, 2, H, W, 3), kernel_size, True)
    key_mask = torch.rand(H, W, generator=torch.Generator().manual_seed(H)) > 0.3
    key_mask[::2, ::2] = True  # no window is left without a key
    _, expected = _loop_reference(q, k, v, kernel_size, dilation, rpb, 0.6, key_mask)
    for mask in (key_mask, key_mask.expand(2, 1, H, W), key_mask.expand(1, 2, H, W)):
        out = na2d(q, k, v, kernel_size, dilation, rpb=rpb, scale=0.6, key_mask=mask)
        torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
        ref = na2d_reference(q, k, v, kernel_size, dilation, rpb, 0.6, mask)
        torch.testing.assert_close(ref, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('height,width', [(3, 5), (7, 2), (4, 4)])
def test_key_mask_on_a_map_padded_to_the_kernel(height, width):
    """SegMAN's small maps: zero-padded up to the kernel with the padding masked out, every
    query attends to every real position with the bias of the true offset, i.e. dense
    attention over the map (computed here directly)."""
    kernel_size = 7
    q, k, v, rpb = _inputs((1, 2, height, width, 4), kernel_size, True)
    dy = torch.arange(height)[None, :] - torch.arange(height)[:, None] + kernel_size - 1
    dx = torch.arange(width)[None, :] - torch.arange(width)[:, None] + kernel_size - 1
    bias = rpb[:, dy[:, None, :, None], dx[None, :, None, :]].flatten(3)  # h, y, x, keys
    scores = torch.einsum('bhyxd,bhkd->bhyxk', q, k.flatten(2, 3)) + bias
    dense = torch.einsum('bhyxk,bhkd->bhyxd', scores.softmax(-1), v.flatten(2, 3))
    H, W = max(height, kernel_size), max(width, kernel_size)
    pad = (0, 0, 0, W - width, 0, H - height)
    key_mask = torch.zeros(H, W, dtype=torch.bool)
    key_mask[:height, :width] = True
    out = na2d(*(torch.nn.functional.pad(t, pad) for t in (q, k, v)), kernel_size, rpb=rpb,
               scale=1.0, key_mask=key_mask)
    torch.testing.assert_close(out[:, :, :height, :width], dense, rtol=1e-12, atol=1e-12)


def test_key_mask_errors():
    q = torch.randn(2, 2, 8, 8, 4)
    with pytest.raises(TypeError, match='key_mask must be a bool tensor, got torch.float32'):
        na2d(q, q, q, 3, key_mask=torch.ones(8, 8))
    with pytest.raises(ValueError, match=r'key_mask must have shape \(H, W\) = \(8, 8\)'):
        na2d(q, q, q, 3, key_mask=torch.ones(2, 8, 8, dtype=torch.bool))
    empty = torch.ones(8, 8, dtype=torch.bool)
    empty[:3, :3] = False  # the window of query (0, 0) is exactly this corner
    with pytest.raises(ValueError, match='key_mask leaves some query with no key'):
        na2d(q, q, q, 3, key_mask=empty)


# ----------------------------------------------------------------------------- errors
def test_bad_inputs_raise_clear_errors():
    q = torch.randn(1, 2, 10, 12, 4)
    with pytest.raises(ValueError, match=r'H >= kernel_size \* dilation.*H=10.*key_mask'):
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
