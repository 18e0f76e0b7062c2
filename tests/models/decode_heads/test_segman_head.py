"""SegMANDecoder: official golden outputs, checkpoint layout, arbitrary sizes, training."""

import pytest
import torch
import torch.nn as nn
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import mmseg_segman  # noqa: F401  (registers the plugin's modules)
from mmseg_segman.models.decode_heads.segman_head import SegMANDecoder

T_HEAD = dict(type='SegMANDecoder', in_channels=[32, 64, 144, 192], channels=128,
              feat_proj_dim=192, num_classes=150, norm_cfg=dict(type='BN', requires_grad=True),
              align_corners=False)




def _decoder_state(golden):
    prefix = 'decode_head.'
    return {k[len(prefix):]: v for k, v in golden['state_dict'].items() if k.startswith(prefix)}


def _features(batch, c2_size, channels=(8, 16, 24, 32), seed=0):
    """Random encoder maps at strides 4/8/16/32 given the stride-8 size (ceil division)."""
    g = torch.Generator().manual_seed(seed)
    h, w = c2_size
    sizes = [(2 * h, 2 * w), (h, w), (-(-h // 2), -(-w // 2)), (-(-h // 4), -(-w // 4))]
    return [torch.randn(batch, c, *s, generator=g) for c, s in zip(channels, sizes)]


def _small_head(**kwargs):
    cfg = dict(type='SegMANDecoder', in_channels=[8, 16, 24, 32], channels=16, feat_proj_dim=24,
               num_classes=5, norm_cfg=dict(type='BN', requires_grad=True))
    return MODELS.build({**cfg, **kwargs})


def test_matches_official_golden_logits(load_golden):
    golden = load_golden('segman-t.pt')
    head = MODELS.build(T_HEAD).eval()
    head.load_state_dict(_decoder_state(golden), strict=True)
    with torch.no_grad():
        for feats, ref in zip(golden['features'], golden['logits']):
            out = head(feats)
            assert out.shape == ref.shape
            assert (out - ref).abs().max() <= 1e-4 * ref.abs().max()


def test_state_dict_layout_and_norm_eps_match_official(load_golden):
    golden = load_golden('segman-t.pt')
    official = _decoder_state(golden)
    ours = MODELS.build(T_HEAD).state_dict()
    assert len(ours) == 87
    assert list(ours) == list(official)
    assert all(ours[k].shape == official[k].shape for k in ours)
    head = MODELS.build(T_HEAD)
    # Official: LayerNorm2d(eps=1e-6) in the VSSM block; BN (PyTorch default eps 1e-5) in every
    # ConvModule.
    assert head.vssm.norm1.eps == head.vssm.norm2.eps == 1e-6
    bns = [m for m in head.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 10 and all(m.eps == 1e-5 for m in bns)
    assert head.vssm.token_mixer.dt_rank == 24 and head.vssm.token_mixer.d_state == 1


def test_c1_is_unused():
    head = _small_head().eval()
    feats = _features(1, (8, 12))
    other_c1 = [torch.randn_like(feats[0])] + feats[1:]
    with torch.no_grad():
        assert torch.equal(head(feats), head(other_c1))


@pytest.mark.parametrize('c2_size', [(8, 12), (7, 10), (5, 3), (1, 2)])
def test_any_size_and_padding_is_local_to_mmscope(c2_size):
    head = _small_head().eval()
    feats = _features(2, c2_size)
    with torch.no_grad():
        out = head(feats)
        assert out.shape == (2, 5, *c2_size) and torch.isfinite(out).all()
        # The MMSCopE context of a map equals the top-left crop of the context of the map
        # zero-padded to a multiple of 4 (i.e. padding never shifts or rescales the grid).
        h, w = c2_size
        x = torch.randn(2, 16, h, w)
        padded = nn.functional.pad(x, (0, -w % 4, 0, -h % 4))
        assert torch.allclose(head.multi_scale_context(x),
                              head.multi_scale_context(padded)[:, :, :h, :w], atol=1e-6)


def test_predict_resizes_logits_to_the_padded_input():
    # MMSeg's contract: the head resizes to pad_shape; EncoderDecoder then crops to img_shape
    # and resizes to ori_shape (checked end to end in test_segman_model.py).
    head = _small_head(align_corners=False).eval()
    feats = _features(1, (7, 10))
    metas = [dict(img_shape=(53, 77), pad_shape=(56, 80))]
    with torch.no_grad():
        seg = head.predict(feats, metas, test_cfg=dict(mode='whole'))
        ref = nn.functional.interpolate(head(feats), size=(56, 80), mode='bilinear',
                                        align_corners=False)
    assert seg.shape == (1, 5, 56, 80)
    assert torch.allclose(seg, ref)


def test_loss_decreases_and_every_parameter_learns():
    torch.manual_seed(0)
    head = _small_head(dropout_ratio=0.0)
    feats = _features(2, (8, 8))
    # One class per stride-8 cell, so the stride-8 logits can fit the labels.
    labels = torch.randint(0, 5, (2, 8, 8)).repeat_interleave(8, 1).repeat_interleave(8, 2)
    labels[:, :4] = 255  # ignore_index must be honoured
    samples = []
    for lab in labels:
        s = SegDataSample()
        s.gt_sem_seg = PixelData(data=lab[None])
        samples.append(s)
    opt = torch.optim.Adam(head.parameters(), lr=5e-3)
    losses = []
    for step in range(8):
        opt.zero_grad()
        loss = head.loss(feats, samples, train_cfg={})['loss_ce']
        loss.backward()
        if step == 0:
            silent = [n for n, p in head.named_parameters() if p.grad is None or not p.grad.any()]
            assert not silent, f'no gradient reaches {silent}'
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses


def test_bad_arguments():
    with pytest.raises(ValueError, match='in_channels'):
        SegMANDecoder(in_channels=[16, 24, 32], channels=16, feat_proj_dim=24, num_classes=5,
                      in_index=[1, 2, 3])
    with pytest.raises(ValueError, match='input_transform'):
        _small_head(input_transform='resize_concat')
    with pytest.raises(ValueError, match='feat_proj_dim'):
        _small_head(feat_proj_dim=0)
