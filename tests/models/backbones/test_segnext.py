"""SegNeXt backbone: SegNeXtMSCAN (models/backbones/segnext.py).

MMSeg 1.2.2's built-in ``MSCAN`` and ``LightHamHead`` are the numerical
reference: same weights, same input and same NMF bases must give the same
outputs.
"""
import copy

import pytest
import torch
from _family_helpers import BN, SMALL_ARCH, max_abs, official_keys, perturb_
from mmengine.runner import load_checkpoint
from mmseg.models.backbones.mscan import MSCAN

import mmseg_segman  # noqa: F401  (registers the plugin's modules)
from mmseg_segman.models.backbones.segnext import SegNeXtMSCAN

# arch of MMSeg's upstream MSCAN test (MSCAN's own defaults for the rest)
UPSTREAM_ARCH = dict(
    embed_dims=[8, 16, 32, 64], depths=[3, 4, 6, 3], mlp_ratios=[4, 4, 4, 4])
pytestmark = pytest.mark.usefixtures('mmseg_registry')


def build_pair(
        embed_dims=(32, 64, 160, 256),
        depths=(1, 2, 2, 1),
        mlp_ratios=(8, 8, 4, 4)):
    """MMSeg's MSCAN and ours with the same arch and the same weights."""
    ref = MSCAN(
        embed_dims=list(embed_dims),
        depths=list(depths),
        mlp_ratios=list(mlp_ratios),
        drop_path_rate=0.,
        norm_cfg=BN)
    ref.init_weights()
    perturb_(ref)
    ours = SegNeXtMSCAN(
        arch=dict(
            embed_dims=list(embed_dims),
            depths=list(depths),
            mlp_ratios=list(mlp_ratios)),
        drop_path_rate=0.,
        norm_cfg=BN)
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


# --------------------------------------------------------------- backbone


def test_backbone_equals_mmseg_mscan_eval_and_train():
    ref, ours = build_pair()
    x = torch.randn(2, 3, 32, 64)
    for train in (False, True):  # eval: running stats; train: batch stats
        ref.train(train)
        ours.train(train)
        with torch.no_grad():
            outs, refs = ours(x), ref(x)
        assert len(outs) == 4
        for out, expected in zip(outs, refs):
            assert out.shape == expected.shape
            assert expected.abs().max() > 0.5  # LayerNorm'd, O(1)
            assert max_abs(out, expected) <= 1e-5


def test_backbone_init_matches_official_scheme():
    """Same seed -> the same initial weights as MMSeg's MSCAN (the official
    rule), so the construction and init order are the same."""
    torch.manual_seed(3)
    ref = MSCAN(embed_dims=[8, 16, 32, 64], depths=[1, 2, 1, 1], norm_cfg=BN)
    ref.init_weights()
    torch.manual_seed(3)
    ours = SegNeXtMSCAN(
        arch=dict(
            embed_dims=[8, 16, 32, 64],
            depths=[1, 2, 1, 1],
            mlp_ratios=[4, 4, 4, 4]),
        norm_cfg=BN)
    ours.init_weights()
    ref_state = ref.state_dict()
    for key, value in ours.state_dict().items():
        assert torch.equal(value, ref_state[key]), key
    # and the rule itself: zero conv biases; std sqrt(2 / fan_out) with
    # fan_out = 21 * 1 * 16 / 16 for block2's 21x1 depthwise strip conv
    conv3 = ours.block1[0].attn.spatial_gating_unit.conv3
    assert conv3.bias.abs().max() == 0
    fan_out = 21 * 1 * 16 // 16
    strip = ours.block2[0].attn.spatial_gating_unit.conv2_2.weight
    assert abs(strip.std().item() / (2 / fan_out)**0.5 - 1) < 0.15


def test_backbone_upstream_expectations():
    """MMSeg's test_mscan_backbone, for our class."""
    model = SegNeXtMSCAN(arch=UPSTREAM_ARCH, norm_cfg=BN)
    model.init_weights()
    model.train()
    feats = model(torch.randn(2, 3, 64, 128))
    assert [tuple(f.shape) for f in feats] == [(2, 8, 16, 32), (2, 16, 8, 16),
                                               (2, 32, 4, 8), (2, 64, 2, 4)]
    feats = model(torch.randn(2, 3, 95, 27))
    assert [tuple(f.shape[2:]) for f in feats] == [(24, 7), (12, 4), (6, 2),
                                                   (3, 1)]


def test_backbone_in_channels_is_used():
    # MMSeg's MSCAN ignores in_channels in the stem; ours does not.
    model = SegNeXtMSCAN(arch=UPSTREAM_ARCH, in_channels=4, norm_cfg=BN).eval()
    assert model.patch_embed1.proj[0].in_channels == 4
    assert model(torch.randn(1, 4, 32, 32))[3].shape == (1, 64, 1, 1)


def test_backbone_rejects_bad_arch():
    with pytest.raises(ValueError, match="arch 'xl' is not one of"):
        SegNeXtMSCAN(arch='xl')
    with pytest.raises(ValueError, match=r"arch dict is missing \['mlp_ratios'\]"):
        SegNeXtMSCAN(arch=dict(embed_dims=[8, 16, 32, 64], depths=[1] * 4))
    with pytest.raises(ValueError, match='one value per stage'):
        SegNeXtMSCAN(
            arch=dict(
                embed_dims=[8, 16, 32, 64],
                depths=[1, 1, 1],
                mlp_ratios=[4] * 4))


# ------------------------------------------------------------ checkpoints


def test_backbone_loads_official_and_mmseg_keys(tmp_path):
    ref, _ = build_pair()
    mmseg_state = ref.state_dict()
    official_state = official_keys(mmseg_state)
    assert set(official_state) != set(mmseg_state)  # the formats do differ
    for fmt, state in (('mmseg', mmseg_state), ('official', official_state)):
        # plain torch loading, strict
        model = SegNeXtMSCAN(arch=SMALL_ARCH, norm_cfg=BN)
        model.load_state_dict(copy.deepcopy(state), strict=True)
        for key, value in model.state_dict().items():
            assert torch.equal(value, mmseg_state[key]), (fmt, key)
        # an ImageNet file through init_cfg=Pretrained (mmengine's loader)
        path = tmp_path / f'mscan_{fmt}.pth'
        torch.save({'state_dict': state}, path)
        model = SegNeXtMSCAN(
            arch=SMALL_ARCH,
            norm_cfg=BN,
            init_cfg=dict(type='Pretrained', checkpoint=str(path)))
        model.init_weights()
        for key, value in model.state_dict().items():
            assert torch.equal(value, mmseg_state[key]), (fmt, key)
        # mmengine's loader in strict mode: no missing / unexpected key
        load_checkpoint(
            SegNeXtMSCAN(arch=SMALL_ARCH, norm_cfg=BN), str(path), strict=True)
