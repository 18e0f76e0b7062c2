"""SegMAN blocks (models/layers/segman_blocks.py): neighbourhood attention on maps smaller than
the kernel, against a float64 brute-force loop over queries."""
import pytest
import torch

from mmseg_segman.models.layers import neighborhood_attention


def _brute_force_na(q, k, v, kernel_size, rpb):
    """float64 loop over queries: NATTEN windows (shifted inward at borders) clipped to the map."""
    _, heads, height, width, _ = q.shape
    out = torch.zeros_like(v)

    def window(p, length):
        start = min(max(p - kernel_size // 2, 0), max(length - kernel_size, 0))
        return range(start, min(start + kernel_size, length))

    for i in range(height):
        for j in range(width):
            keys = [(a, b) for a in window(i, height) for b in window(j, width)]
            logits = torch.stack([
                (q[:, :, i, j] * k[:, :, a, b]).sum(-1)
                + rpb[:, a - i + kernel_size - 1, b - j + kernel_size - 1] for a, b in keys], -1)
            weights = logits.softmax(-1)
            out[:, :, i, j] = sum(weights[..., n, None] * v[:, :, a, b]
                                  for n, (a, b) in enumerate(keys))
    return out


@pytest.mark.parametrize('size', [(7, 6), (3, 4), (2, 9), (5, 5)])
def test_neighborhood_attention_handles_maps_smaller_than_kernel(size):
    kernel_size = 5
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, *size, 4, generator=gen, dtype=torch.float64) for _ in range(3))
    rpb = torch.randn(3, 2 * kernel_size - 1, 2 * kernel_size - 1, generator=gen,
                      dtype=torch.float64)
    out = neighborhood_attention(q, k, v, kernel_size, rpb)
    torch.testing.assert_close(out, _brute_force_na(q, k, v, kernel_size, rpb))
