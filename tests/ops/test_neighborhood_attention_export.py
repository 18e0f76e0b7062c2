"""The export path of neighborhood attention (the gather reference) against the tiled kernels."""
import pytest
import torch

from mmseg_segman.ops import na2d, na2d_av, na2d_qk
from mmseg_segman.ops.neighborhood_attention import na2d_av_reference, na2d_qk_reference
from mmseg_segman.ops.neighborhood_attention.common import window_keys


def inputs(shape, kernel_size, seed):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(*shape, generator=g) for _ in range(3))
    rpb = torch.randn(shape[1], 2 * kernel_size - 1, 2 * kernel_size - 1, generator=g)
    return q, k, v, rpb


# Square and non-square maps, even and odd kernels, dilations 1-3 (borders shift windows).
@pytest.mark.parametrize('shape,kernel_size,dilation', [
    ((2, 3, 9, 9, 4), 3, 1),
    ((1, 2, 11, 16, 8), 7, 1),
    ((1, 2, 12, 13, 4), 4, 2),
    ((2, 1, 10, 9, 4), 3, 3),
])
def test_gather_path_equals_tiled_kernels(shape, kernel_size, dilation):
    q, k, v, _ = inputs(shape, kernel_size, seed=sum(shape))
    logits = na2d_qk(q, k, kernel_size, dilation)
    gathered = na2d_qk_reference(q, k, kernel_size, dilation)
    assert gathered.shape == logits.shape == (*shape[:4], kernel_size**2)
    assert (gathered - logits).abs().max().item() <= 1e-5 * logits.abs().max().item()
    attn = logits.softmax(-1)
    out = na2d_av(attn, v, kernel_size, dilation)
    out_gathered = na2d_av_reference(attn, v, kernel_size, dilation)
    assert (out_gathered - out).abs().max().item() <= 1e-5 * out.abs().max().item()


def test_window_keys_by_hand():
    # length 7, k = 3, d = 2: groups {0,2,4,6} and {1,3,5}; windows shift inward at the ends.
    keys = window_keys(7, 3, 2, 'cpu')
    assert keys.tolist() == [[0, 2, 4], [1, 3, 5], [0, 2, 4], [1, 3, 5], [2, 4, 6], [1, 3, 5],
                             [2, 4, 6]]


def test_na2d_is_exportable_and_matches_eager():
    q, k, v, rpb = inputs((1, 2, 10, 12, 4), 5, seed=0)

    class Attention(torch.nn.Module):

        def forward(self, q, k, v, rpb):
            return na2d(q, k, v, 5, dilation=2, rpb=rpb)

    module = Attention()
    eager = module(q, k, v, rpb)
    # The tiled kernels take Python ints from tensors, which torch.export refuses; while
    # exporting, na2d switches to the gather reference.
    program = torch.export.export(module, (q, k, v, rpb))
    exported = program.module()(q, k, v, rpb)
    assert exported.shape == (1, 2, 10, 12, 4)
    assert (exported - eager).abs().max().item() <= 1e-5 * eager.abs().max().item()
    # The exported program is a real function of its inputs, not a constant of the example.
    q2 = torch.randn_like(q)
    assert (program.module()(q2, k, v, rpb) - module(q2, k, v, rpb)).abs().max().item() <= 1e-5
    assert (module(q2, k, v, rpb) - eager).abs().max().item() > 0.1
