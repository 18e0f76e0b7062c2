"""Property-based tests (hypothesis): the ops and the three T models on arbitrary shapes.

The ops must equal their references (the published gather for neighbourhood attention, the
step-by-step scan for the selective scan) for any shape, batch and memory layout; the models
must accept any H, W in 1..300, batch 1..3, channels-last and non-contiguous inputs, and
return logits of the input size.
"""
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

from mmseg_segman.ops import na2d, selective_scan_fn, selective_scan_ref
from mmseg_segman.ops.neighborhood_attention.reference import na2d_reference

REPO_ROOT = Path(__file__).resolve().parents[1]
SETTINGS = dict(deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _layout(x, layout):
    """The same values in another memory layout."""
    if layout == 'transposed':  # non-contiguous view of a (.., W, H, ..) buffer
        return x.transpose(2, 3).contiguous().transpose(2, 3)
    if layout == 'strided':  # every other element of a larger buffer
        big = torch.zeros(*x.shape[:-1], 2 * x.shape[-1], dtype=x.dtype)
        big[..., ::2] = x
        return big[..., ::2]
    return x


@settings(max_examples=25, **SETTINGS)
@given(batch=st.integers(1, 3), heads=st.integers(1, 3), kernel=st.sampled_from([3, 5, 7]),
       extra_h=st.integers(0, 12), extra_w=st.integers(0, 12), dim=st.sampled_from([4, 8]),
       dilation=st.integers(1, 2), with_rpb=st.booleans(),
       layout=st.sampled_from(['contiguous', 'transposed', 'strided']), seed=st.integers(0, 99))
def test_na2d_equals_the_reference(batch, heads, kernel, extra_h, extra_w, dim, dilation,
                                   with_rpb, layout, seed):
    gen = torch.Generator().manual_seed(seed)
    H, W = kernel * dilation + extra_h, kernel * dilation + extra_w
    q, k, v = (_layout(torch.randn(batch, heads, H, W, dim, generator=gen), layout)
               for _ in range(3))
    rpb = (torch.randn(heads, 2 * kernel - 1, 2 * kernel - 1, generator=gen)
           if with_rpb else None)
    out = na2d(q, k, v, kernel, dilation=dilation, rpb=rpb)
    ref = na2d_reference(*(t.double() for t in (q, k, v)), kernel, dilation=dilation,
                         rpb=None if rpb is None else rpb.double())
    assert out.shape == q.shape
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-5)


@settings(max_examples=25, **SETTINGS)
@given(batch=st.integers(1, 3), dim=st.integers(1, 6), length=st.integers(1, 80),
       d_state=st.integers(1, 4), with_z=st.booleans(), softplus=st.booleans(),
       layout=st.sampled_from(['contiguous', 'strided']), seed=st.integers(0, 99))
def test_selective_scan_equals_the_reference(batch, dim, length, d_state, with_z, softplus,
                                             layout, seed):
    gen = torch.Generator().manual_seed(seed)
    u = _layout(torch.randn(batch, dim, length, generator=gen), layout)
    delta = _layout(torch.rand(batch, dim, length, generator=gen), layout)
    A = -torch.rand(dim, d_state, generator=gen) * 4
    B, C = (torch.randn(batch, d_state, length, generator=gen) for _ in range(2))
    D = torch.randn(dim, generator=gen)
    z = torch.randn(batch, dim, length, generator=gen) if with_z else None
    bias = torch.randn(dim, generator=gen) * 0.5
    out = selective_scan_fn(u, delta, A, B, C, D, z=z, delta_bias=bias, delta_softplus=softplus)
    ref = selective_scan_ref(*(t.double() for t in (u, delta, A, B, C, D)),
                             z=None if z is None else z.double(), delta_bias=bias.double(),
                             delta_softplus=softplus)
    assert out.shape == u.shape
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-5)


_MODELS = {}


def _model(family):
    """The family's T segmentor from its ADE20K config, random weights, eval mode."""
    if family not in _MODELS:
        init_default_scope('mmseg')
        cfg = Config.fromfile(str(REPO_ROOT / 'configs' / family / f'{family}-t_ade20k.py'))
        cfg.model.backbone.init_cfg = None
        torch.manual_seed(0)
        model = revert_sync_batchnorm(MODELS.build(cfg.model))
        model.init_weights()
        _MODELS[family] = model.eval()
    return _MODELS[family]


@pytest.mark.slow  # a few forward passes of each T model up to 288 x 288 (LRFormer's take
# most of a minute: elongated inputs cost it r^2 in the aspect ratio, docs/lrformer.md)
@pytest.mark.parametrize('family', ['segman', 'segnext', 'lrformer'])
@settings(max_examples=4, **SETTINGS)
@given(height=st.integers(1, 288), width=st.integers(1, 288), batch=st.integers(1, 2),
       layout=st.sampled_from(['contiguous', 'channels_last', 'transposed']),
       seed=st.integers(0, 99))
def test_t_models_accept_any_size_and_layout(family, height, width, batch, layout, seed):
    model = _model(family)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, height, width, generator=gen)
    if layout == 'channels_last':
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == 'transposed':
        x = _layout(x, 'transposed')
    metas = [dict(img_shape=(height, width), ori_shape=(height, width),
                  pad_shape=(height, width), padding_size=[0, 0, 0, 0])] * batch
    with torch.no_grad():
        logits = model.encode_decode(x, metas)
        assert logits.shape == (batch, 150, height, width)
        assert torch.isfinite(logits).all()
        if layout != 'contiguous':  # the memory layout of the input does not change the result
            reference = model.encode_decode(x.contiguous(), metas)
            torch.testing.assert_close(logits, reference, rtol=1e-4, atol=1e-4)
