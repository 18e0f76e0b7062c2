"""SegNeXt: SegNeXtMSCAN + SegNeXtHamHead.

MMSeg 1.2.2's built-in ``MSCAN`` and ``LightHamHead`` are the numerical
reference: same weights, same input and same NMF bases must give the same
outputs. Parameter counts are the paper's (T 4.26M, S 13.93M, B 27.64M,
L 48.93M with 150 classes).
"""
import copy
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import load_checkpoint
from mmengine.structures import PixelData
from mmseg.models.backbones.mscan import MSCAN
from mmseg.models.decode_heads.ham_head import NMF2D as MMSegNMF2D
from mmseg.models.decode_heads.ham_head import LightHamHead
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import register_all_modules

import mmseg_segman  # noqa: F401  (registers the plugin's modules)
from mmseg_segman.models.backbones.segnext import SegNeXtMSCAN
from mmseg_segman.models.decode_heads.segnext_head import NMF2D, SegNeXtHamHead, parse_ham_kwargs

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / 'configs' / 'segnext'
BN = dict(type='BN', requires_grad=True)
GN = dict(type='GN', num_groups=32, requires_grad=True)
# arch of MMSeg's upstream MSCAN test (MSCAN's own defaults for the rest)
UPSTREAM_ARCH = dict(
    embed_dims=[8, 16, 32, 64], depths=[3, 4, 6, 3], mlp_ratios=[4, 4, 4, 4])
# reduced MSCAN-T for fast checks (two blocks per stage keep every code path)
SMALL_ARCH = dict(
    embed_dims=[32, 64, 160, 256],
    depths=[1, 2, 2, 1],
    mlp_ratios=[8, 8, 4, 4])


@pytest.fixture(scope='module', autouse=True)
def _registry():
    register_all_modules()


def perturb_(module, seed=0):
    """Give every parameter and BN statistic a non-trivial value.

    Layer scales (1e-2), zero biases, unit norm weights and fresh BN
    statistics would hide a wrongly used parameter; this makes each one
    matter while keeping activations O(1).
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name.endswith('layer_scale_1') or name.endswith(
                    'layer_scale_2'):
                p.copy_(0.3 + 0.1 * noise)
            elif p.dim() == 1 and name.endswith('weight'):  # norm scales
                p.copy_(1 + 0.2 * noise)
            elif p.dim() == 1:  # biases
                p.copy_(0.1 * noise)
            else:
                p.add_(0.02 * noise)
        for name, b in module.named_buffers():
            if name.endswith('running_mean'):
                b.copy_(0.2 * torch.randn(b.shape, generator=gen))
            elif name.endswith('running_var'):
                b.copy_(0.5 + torch.rand(b.shape, generator=gen))
    return module


def max_abs(a, b):
    return (a - b).abs().max().item()


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


def head_kwargs(rank=16, **ham_kwargs):
    return dict(
        in_channels=[64, 160, 256],
        in_index=[1, 2, 3],
        channels=64,
        ham_channels=64,
        num_classes=19,
        norm_cfg=GN,
        ham_kwargs=dict(MD_R=rank, **ham_kwargs))


def fake_features(batch=2, height=64, width=96, seed=1):
    gen = torch.Generator().manual_seed(seed)
    dims = [32, 64, 160, 256]
    return [
        torch.randn(batch, c, height // s, width // s, generator=gen)
        for c, s in zip(dims, (4, 8, 16, 32))
    ]


def official_keys(state_dict):
    """The official SegNeXt key format: MLP dwconv wrapped in ``dwconv``."""
    return {
        k.replace('.mlp.dwconv.', '.mlp.dwconv.dwconv.'): v.clone()
        for k, v in state_dict.items()
    }


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


def test_segmentor_loads_official_and_mmseg_checkpoints(tmp_path):
    """Whole seg checkpoints (``load_from``): keys of MMSeg's built-in
    EncoderDecoder, and the official ones."""
    common = dict(
        type='EncoderDecoder',
        data_preprocessor=dict(type='SegDataPreProcessor'),
        test_cfg=dict(mode='whole'))
    ref = MODELS.build(
        dict(
            backbone=dict(
                type='MSCAN',
                embed_dims=SMALL_ARCH['embed_dims'],
                depths=SMALL_ARCH['depths'],
                mlp_ratios=SMALL_ARCH['mlp_ratios'],
                norm_cfg=BN),
            decode_head=dict(type='LightHamHead', **head_kwargs()),
            **common))
    perturb_(ref)
    mmseg_state = ref.state_dict()
    formats = dict(mmseg=mmseg_state, official=official_keys(mmseg_state))
    for fmt, state in formats.items():
        path = tmp_path / f'segnext_{fmt}.pth'
        torch.save({'state_dict': state, 'meta': {}}, path)
        model = MODELS.build(
            dict(
                backbone=dict(
                    type='SegNeXtMSCAN', arch=SMALL_ARCH, norm_cfg=BN),
                decode_head=dict(type='SegNeXtHamHead', **head_kwargs()),
                **common))
        load_checkpoint(model, str(path), strict=True)
        for key, value in model.state_dict().items():
            assert torch.equal(value, mmseg_state[key]), (fmt, key)
    # the whole model, with random NMF bases from the same seed
    ref.eval()
    model.eval()
    model.decode_head.hamburger.ham.deterministic_eval = False
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.manual_seed(0)
        expected = ref(x, mode='tensor')
        torch.manual_seed(0)
        assert max_abs(model(x, mode='tensor'), expected) <= 1e-5


# ------------------------------------------------------------------- head


def test_head_equals_lighthamhead_with_the_same_bases():
    torch.manual_seed(0)
    ref = LightHamHead(**head_kwargs())
    perturb_(ref, seed=1)
    ours = SegNeXtHamHead(**head_kwargs(deterministic_eval=False))
    ours.load_state_dict(ref.state_dict(), strict=True)
    feats = fake_features()
    for train in (True, False):
        ref.train(train)
        ours.train(train)
        # random bases from the global RNG: the same seed, the same bases
        torch.manual_seed(7)
        expected = ref(feats)
        torch.manual_seed(7)
        out = ours(feats)
        assert out.shape == (2, 19, 8, 12)
        assert expected.abs().max() > 0.1
        assert max_abs(out, expected) <= 1e-5
        # and the output does depend on the bases (else this test is void)
        torch.manual_seed(8)
        assert max_abs(ours(feats), expected) > 1e-4


def test_head_deterministic_eval_uses_fixed_bases(monkeypatch):
    """Default evaluation = the built-in head fed with our fixed bases."""
    ref = LightHamHead(**head_kwargs())
    perturb_(ref, seed=2)
    ours = SegNeXtHamHead(**head_kwargs())
    ours.load_state_dict(ref.state_dict(), strict=True)
    ref.eval()
    ours.eval()
    fixed = ours.hamburger.ham.bases
    assert fixed.shape == (1, 64, 16)
    assert torch.allclose(fixed.norm(dim=1), torch.ones(1, 16))
    monkeypatch.setattr(
        MMSegNMF2D,
        '_build_bases',
        lambda self, B, S, D, R, device=None: fixed.repeat(B, 1, 1))
    feats = fake_features()
    with torch.no_grad():
        assert max_abs(ours(feats), ref(feats)) <= 1e-5


def test_eval_is_deterministic_and_batch_independent():
    head = SegNeXtHamHead(**head_kwargs()).eval()
    perturb_(head, seed=3)
    feats = fake_features(batch=3)
    with torch.no_grad():
        first, second = head(feats), head(feats)
        alone = head([f[1:2] for f in feats])
    assert torch.equal(first, second)
    assert max_abs(alone, first[1:2]) <= 1e-5
    # the original behaviour (and MMSeg's head) is not deterministic
    head.hamburger.ham.deterministic_eval = False
    with torch.no_grad():
        assert max_abs(head(feats), head(feats)) > 1e-4


def test_fixed_bases_are_not_in_checkpoints_unless_rand_init_false():
    head = SegNeXtHamHead(**head_kwargs())
    assert not any('bases' in k for k in head.state_dict())
    # rand_init=False: the buffer MMSeg registers at its first forward
    ref = LightHamHead(**head_kwargs(rand_init=False)).eval()
    perturb_(ref, seed=4)
    feats = fake_features()
    with torch.no_grad():
        expected = ref(feats)
    ours = SegNeXtHamHead(**head_kwargs(rand_init=False)).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    ours.train()  # the stored bases are used in training too
    assert torch.equal(ours.hamburger.ham.bases, ref.hamburger.ham.bases)
    ours.eval()
    with torch.no_grad():
        assert max_abs(ours(feats), expected) <= 1e-5


def test_head_upstream_expectations():
    """MMSeg's test_ham_head, for our class."""
    head = SegNeXtHamHead(
        in_channels=[16, 32, 64],
        in_index=[1, 2, 3],
        channels=64,
        ham_channels=64,
        dropout_ratio=0.1,
        num_classes=19,
        norm_cfg=GN,
        align_corners=False,
        ham_kwargs=dict(
            MD_S=1,
            MD_R=64,
            train_steps=6,
            eval_steps=7,
            inv_t=100,
            rand_init=True))
    assert head.hamburger.ham_in.norm_cfg is None  # ham_in has no norm
    assert head.in_channels == [16, 32, 64]
    assert head.hamburger.ham_in.in_channels == 64
    inputs = [
        torch.randn(1, 8, 32, 32),
        torch.randn(1, 16, 16, 16),
        torch.randn(1, 32, 8, 8),
        torch.randn(1, 64, 4, 4)
    ]
    assert head(inputs).shape == (1, 19, 16, 16)


def test_head_rejects_other_input_transform():
    with pytest.raises(ValueError, match='input_transform'):
        SegNeXtHamHead(**head_kwargs(), input_transform='resize_concat')


# ------------------------------------------------------------- ham_kwargs


def test_ham_kwargs_official_and_mmseg_spellings_agree():
    official = dict(
        MD_S=2, MD_R=8, TRAIN_STEPS=3, EVAL_STEPS=4, RAND_INIT=False)
    mmseg = dict(MD_S=2, MD_R=8, train_steps=3, eval_steps=4, rand_init=False)
    expected = dict(
        num_groups=2, rank=8, train_steps=3, eval_steps=4, rand_init=False)
    assert parse_ham_kwargs(official, 64) == expected
    assert parse_ham_kwargs(mmseg, 64) == expected
    nmf = NMF2D(64, **expected)
    assert nmf.bases.shape == (2, 32, 8)
    x = torch.rand(3, 64, 5, 6)
    nmf.train()
    assert nmf(x).shape == x.shape
    # official keys without effect on NMF are accepted when consistent
    assert parse_ham_kwargs(dict(SPATIAL=True, MD_D=32, MD_S=2),
                            64) == dict(num_groups=2)


def test_ham_kwargs_errors_name_the_key():
    with pytest.raises(ValueError, match="'MD_RANK'"):
        parse_ham_kwargs(dict(MD_RANK=8), 64)
    with pytest.raises(ValueError, match="'rank' twice"):
        parse_ham_kwargs(dict(MD_R=8, md_r=16), 64)
    with pytest.raises(ValueError, match='SPATIAL=False'):
        parse_ham_kwargs(dict(SPATIAL=False), 64)
    with pytest.raises(ValueError, match='MD_D=512'):
        parse_ham_kwargs(dict(MD_D=512), 64)
    with pytest.raises(ValueError, match='divisible'):
        SegNeXtHamHead(**head_kwargs(MD_S=3))
    with pytest.raises(ValueError, match='rank must be an integer >= 1'):
        NMF2D(64, rank=0)
    with pytest.raises(TypeError, match='ham_kwargs must be a dict'):
        parse_ham_kwargs([('MD_R', 8)], 64)


def test_inv_t_is_ignored_with_a_warning():
    with pytest.warns(UserWarning, match='INV_T=100 has no effect'):
        head = SegNeXtHamHead(**head_kwargs(INV_T=100))
    plain = SegNeXtHamHead(**head_kwargs())
    plain.load_state_dict(head.state_dict())
    head.eval()
    plain.eval()
    feats = fake_features()
    with torch.no_grad():
        assert torch.equal(head(feats), plain(feats))


# --------------------------------------------------------- mixed precision


def test_nmf_runs_in_float32_under_autocast():
    nmf = NMF2D(64, rank=16).eval()
    x = torch.rand(2, 64, 6, 8).to(torch.bfloat16)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = nmf(x)
    assert out.dtype == torch.bfloat16
    # bit-identical to the float32 computation from the same input values
    assert torch.equal(out, nmf(x.float()).to(torch.bfloat16))


def _tiny_segmentor(num_classes=5):
    # few channels: CPU bfloat16 depthwise convs loop over channel groups
    arch = dict(
        embed_dims=[8, 16, 16, 32],
        depths=[1, 1, 1, 1],
        mlp_ratios=[2, 2, 2, 2])
    head = dict(
        head_kwargs(),
        in_channels=[16, 16, 32],
        channels=32,
        ham_channels=32,
        num_classes=num_classes)
    return MODELS.build(
        dict(
            type='EncoderDecoder',
            data_preprocessor=dict(type='SegDataPreProcessor'),
            backbone=dict(type='SegNeXtMSCAN', arch=arch, norm_cfg=BN),
            decode_head=dict(type='SegNeXtHamHead', **head),
            test_cfg=dict(mode='whole')))


def test_training_under_bf16_autocast_is_finite_and_learns():
    torch.manual_seed(0)
    model = _tiny_segmentor()
    model.init_weights()
    model.train()
    inputs = torch.randn(2, 3, 32, 32)
    samples = []
    for i in range(2):
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(
            data=torch.randint(
                0, 5, (1, 32, 32), generator=torch.Generator().manual_seed(i)))
        samples.append(sample)
    optim = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(4):
        with torch.autocast('cpu', dtype=torch.bfloat16):
            loss_dict = model.loss(inputs, samples)
        loss = sum(v for k, v in loss_dict.items() if 'loss' in k)
        assert torch.isfinite(loss)
        optim.zero_grad()
        loss.backward()
        for name, p in model.named_parameters():
            assert p.grad is not None, name
            assert torch.isfinite(p.grad).all(), name
        optim.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


# ----------------------------------------------------------------- configs


def test_config_model_evaluates_deterministically():
    """Through the real T config: data preprocessor,
    whole inference, resize to the original shape; twice the same logits."""
    cfg = Config.fromfile(CONFIGS / 'segnext-t_ade20k.py')
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    perturb_(model, seed=5)
    model.eval()
    image = torch.randint(0, 256, (3, 70, 90), dtype=torch.uint8)
    logits = []
    for _ in range(2):
        sample = SegDataSample(
            metainfo=dict(img_shape=(70, 90), ori_shape=(70, 90)))
        with torch.no_grad():
            result = model.test_step(
                dict(inputs=[image], data_samples=[sample]))
        logits.append(result[0].seg_logits.data)
    assert logits[0].shape == (150, 70, 90)
    assert logits[0].std() > 0
    assert torch.equal(logits[0], logits[1])
