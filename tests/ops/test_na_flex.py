"""Flex-attention backend of neighbourhood attention on CPU: the rpb gradient in both modes
(``flex.RPB_GRAD``) against the gather reference's autograd gradient in float64.

Eager flex attention on CPU refuses a backward when q, k or v require grad; with only rpb
requiring grad it runs. One test lifts that device check (a private torch function) to run
flex attention's dense backward on CPU, so that the gradients of q, k, v flowing past the
window-mode identity node are checked too. The compiled CUDA kernels are checked by the
CUDA tier (tests/cuda).
"""
import pytest
import torch

from mmseg_segman.ops.neighborhood_attention import flex, na2d_reference

pytestmark = pytest.mark.skipif(flex._flex() is None,
                                reason='torch.nn.attention.flex_attention is not available')

CASES = [  # B, heads, H, W, D, kernel_size, dilation, key mask
    (2, 2, 11, 10, 8, 3, 2, False),
    (1, 3, 9, 12, 4, 4, 1, False),
    (2, 2, 10, 9, 8, 5, 1, True),
]


def _inputs(B, heads, H, W, D, kernel_size, masked, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q, k, v, grad = (torch.randn(B, heads, H, W, D, generator=gen, dtype=dtype)
                     for _ in range(4))
    rpb = torch.randn(heads, 2 * kernel_size - 1, 2 * kernel_size - 1, generator=gen,
                      dtype=dtype)
    key_mask = None
    if masked:  # per-batch mask; every window keeps its even-even keys
        key_mask = torch.rand(B, 1, H, W, generator=gen) > 0.3
        key_mask[..., ::2, ::2] = True
    return q, k, v, rpb, grad, key_mask


@pytest.mark.parametrize('mode', ['window', 'flex'])
@pytest.mark.parametrize('B,heads,H,W,D,kernel_size,dilation,masked', CASES)
def test_rpb_gradient_matches_reference(monkeypatch, mode, B, heads, H, W, D, kernel_size,
                                        dilation, masked):
    monkeypatch.setattr(flex, 'RPB_GRAD', mode)
    q, k, v, rpb, grad, key_mask = _inputs(B, heads, H, W, D, kernel_size, masked)
    rpb.requires_grad_()
    ref = na2d_reference(q, k, v, kernel_size, dilation, rpb, 0.4, key_mask=key_mask)
    (expected,) = torch.autograd.grad(ref, rpb, grad)
    out = flex.na2d_flex(q, k, v, kernel_size, dilation, rpb, 0.4, key_mask=key_mask)
    (got,) = torch.autograd.grad(out, rpb, grad)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    assert expected.abs().max() > 1e-2  # a gradient worth comparing


def test_window_formula_in_float32_against_float64():
    """rpb_grad_from_window on float32 inputs (lse from flex) against the float64 gradient."""
    q, k, v, rpb, grad, _ = _inputs(2, 2, 12, 11, 16, 5, False)
    rpb.requires_grad_()
    ref = na2d_reference(q, k, v, 5, 1, rpb, 0.25)
    (expected,) = torch.autograd.grad(ref, rpb, grad)
    f32 = [t.float() for t in (q, k, v, rpb.detach(), grad)]
    with torch.no_grad():
        flat = [t.reshape(2, 2, 132, 16) for t in f32[:3]]
        mask = flex._block_mask(2, 2, 12, 11, 5, 1, None, 'cpu')
        _, score_mod = flex._mods(12, 11, 5, 1, f32[3], None)
        out, aux = flex._flex().flex_attention(*flat, score_mod=score_mod, block_mask=mask,
                                               scale=0.25,
                                               return_aux=flex._flex().AuxRequest(lse=True))
    got = flex.rpb_grad_from_window(*f32[:3], out.view(2, 2, 12, 11, 16),
                                    aux.lse.view(2, 2, 12, 11), f32[4], 5, 1, f32[3], 0.25)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, rtol=1e-4, atol=1e-4)


def test_qkv_gradients_pass_the_window_node(monkeypatch):
    """With flex attention's CPU device check lifted, its dense backward gives q, k, v
    gradients; the window mode's identity node must pass dO through unchanged."""
    module = pytest.importorskip('torch.nn.attention.flex_attention')
    if not hasattr(module, '_validate_device'):
        pytest.skip('this torch has no _validate_device to lift')
    monkeypatch.setattr(module, '_validate_device', lambda *args: None)
    monkeypatch.setattr(flex, 'RPB_GRAD', 'window')
    q, k, v, rpb, grad, key_mask = _inputs(2, 2, 10, 9, 8, 3, True)
    leaves = [t.requires_grad_() for t in (q, k, v, rpb)]
    ref = na2d_reference(q, k, v, 3, 1, rpb, 0.5, key_mask=key_mask)
    expected = torch.autograd.grad(ref, leaves, grad)
    out = flex.na2d_flex(q, k, v, 3, 1, rpb, 0.5, key_mask=key_mask)
    got = torch.autograd.grad(out, leaves, grad)
    for name, g, e in zip('qkv', got, expected):
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-9, msg=f'gradient of {name}')
    torch.testing.assert_close(got[3], expected[3], rtol=1e-9, atol=1e-9)


def test_window_block_mask_is_built_once_per_geometry():
    first = flex._block_mask(1, 2, 9, 9, 3, 1, None, 'cpu')
    assert flex._block_mask(4, 8, 9, 9, 3, 1, None, torch.device('cpu')) is first
    assert flex._block_mask(1, 2, 9, 9, 3, 2, None, 'cpu') is not first


def test_unknown_rpb_grad_mode_is_refused(monkeypatch):
    monkeypatch.setattr(flex, 'RPB_GRAD', 'atomic')
    q = torch.zeros(1, 1, 6, 6, 4)
    with pytest.raises(ValueError, match="RPB_GRAD must be 'window' or 'flex'"):
        flex.na2d_flex(q, q, q, 3, 1, None, 1.0)
