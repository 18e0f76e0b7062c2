"""LRFormer blocks (models/layers/lrformer_blocks.py).

References: a float64 brute-force LRSA written from the paper / official maths with loops, the
official code's size rounding, and the backbone's Linear layout of the same attention.
"""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from _family_helpers import rel_err

from mmseg_segman.models.layers.lrformer_blocks import (
    LowResolutionSelfAttention,
    aspect_preserving_size,
)


# --------------------------------------------------------------------------------------------
# LRSA against a float64 brute force
# --------------------------------------------------------------------------------------------
def _adaptive_avg_pool_ref(x, out_h, out_w):
    """Cell (i, j) averages rows [floor(i H / h), ceil((i + 1) H / h)), likewise columns."""
    H, W = x.shape[-2:]
    out = x.new_zeros(*x.shape[:-2], out_h, out_w)
    for i in range(out_h):
        r0, r1 = (i * H) // out_h, -((-(i + 1) * H) // out_h)
        for j in range(out_w):
            c0, c1 = (j * W) // out_w, -((-(j + 1) * W) // out_w)
            out[..., i, j] = x[..., r0:r1, c0:c1].mean(dim=(-2, -1))
    return out


def _bilinear_matrix(n_out, n_in):
    """Rows of weights of align_corners=False bilinear resizing along one axis."""
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for o in range(n_out):
        src = max((o + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = min(int(math.floor(src)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        frac = src - i0
        m[o, i0] += 1 - frac
        m[o, i1] += frac
    return m


def lrsa_reference(attn, x, kv_convs):
    """LRSA written from the paper / official maths with loops, float64."""
    B, C, H, W = x.shape
    heads, hd = attn.num_heads, C // attn.num_heads
    short = attn.q_pooled_size
    qh, qw = (short, round(W * short / H + 1e-3)) if W >= H else (round(H * short / W + 1e-3),
                                                                    short)
    q_map = _adaptive_avg_pool_ref(x, qh, qw)
    q_lin = attn.q[0] if isinstance(attn.q, nn.Sequential) else attn.q
    q_w = q_lin.weight.reshape(C, C)
    q = torch.einsum('oc,bcn->bno', q_w, q_map.flatten(2)) + q_lin.bias
    levels = []
    for s, conv in zip(attn.kv_pooled_sizes, kv_convs):
        lh, lw = (s, round(W * s / H + 1e-3)) if W >= H else (round(H * s / W + 1e-3), s)
        level = _adaptive_avg_pool_ref(x, lh, lw)
        level = level + F.conv2d(level, conv.weight, conv.bias, padding=1, groups=C)
        levels.append(level.flatten(2))
    tokens = torch.cat(levels, 2).transpose(1, 2)  # (B, Nk, C)
    mu = tokens.mean(-1, keepdim=True)
    var = ((tokens - mu)**2).mean(-1, keepdim=True)
    tokens = (tokens - mu) / torch.sqrt(var + attn.norm.eps) * attn.norm.weight + attn.norm.bias
    kv_lin = attn.kv[0] if isinstance(attn.kv, nn.Sequential) else attn.kv
    kv = tokens @ kv_lin.weight.T + kv_lin.bias
    k, v = kv[..., :C], kv[..., C:]
    out = torch.zeros_like(q)
    for h in range(heads):
        sl = slice(h * hd, (h + 1) * hd)
        logits = q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(hd)
        weights = torch.exp(logits - logits.amax(-1, keepdim=True))
        weights = weights / weights.sum(-1, keepdim=True)
        out[..., sl] = weights @ v[..., sl]
    out = out @ attn.proj.weight.T + attn.proj.bias  # (B, Nq, C)
    out = out.transpose(1, 2).reshape(B, C, qh, qw)
    return torch.einsum('yi,bcij,xj->bcyx', _bilinear_matrix(H, qh), out,
                        _bilinear_matrix(W, qw))


@pytest.mark.parametrize('size', [(13, 29), (29, 13), (5, 5), (40, 36)])
def test_lrsa_matches_float64_brute_force(size):
    torch.manual_seed(0)
    C = 12
    attn = LowResolutionSelfAttention(C, num_heads=3).double()
    convs = nn.ModuleList([nn.Conv2d(C, C, 3, padding=1, groups=C) for _ in range(4)]).double()
    with torch.no_grad():
        for p in [*attn.parameters(), *convs.parameters()]:
            p.normal_(0, 0.3)
    x = torch.randn(2, C, *size, dtype=torch.float64)
    out = attn(x, convs)
    ref = lrsa_reference(attn, x, convs)
    assert out.shape == (2, C, *size)
    assert rel_err(out, ref) <= 1e-10


def test_aspect_preserving_sizes_follow_official_rounding():
    assert aspect_preserving_size(64, 128, 16) == (16, 32)
    assert aspect_preserving_size(128, 64, 16) == (32, 16)
    assert aspect_preserving_size(512, 683, 11) == (11, 15)  # 14.674 -> 15
    assert aspect_preserving_size(8, 9, 4) == (4, 5)  # 4.5 + 1e-3 -> 5, banker's rounding gives 4


def test_head_layout_attention_equals_backbone_layout():
    """q as a 1x1 conv (head) and as a Linear (backbone) compute the same function."""
    torch.manual_seed(0)
    a = LowResolutionSelfAttention(16, 4, q_pooled_size=8, param_layout='backbone')
    b = LowResolutionSelfAttention(16, 4, q_pooled_size=8, param_layout='head')
    with torch.no_grad():
        b.q.weight.copy_(a.q[0].weight.view(16, 16, 1, 1))
        b.q.bias.copy_(a.q[0].bias)
        b.kv.load_state_dict(a.kv[0].state_dict())
        b.proj.load_state_dict(a.proj.state_dict())
        b.norm.load_state_dict(a.norm.state_dict())
    x = torch.randn(1, 16, 20, 30)
    assert torch.allclose(a(x), b(x), atol=1e-6)
    assert a.kv_pooled_sizes == [6, 4, 3, 2]  # 11, 8, 6, 4 scaled by 8 / 16
