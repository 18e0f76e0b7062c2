"""Whole SegNeXt models: SegNeXtMSCAN + SegNeXtHamHead, and configs/segnext.

MMSeg 1.2.2's built-in ``MSCAN`` and ``LightHamHead`` are the numerical
reference: same weights, same input and same NMF bases must give the same
outputs.
"""
from pathlib import Path

import pytest
import torch
from _family_helpers import BN, SMALL_ARCH, head_kwargs, max_abs, official_keys, perturb_
from mmengine.config import Config
from mmengine.runner import load_checkpoint
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import mmseg_segman  # noqa: F401  (registers the plugin's modules)

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / 'configs' / 'segnext'
pytestmark = pytest.mark.usefixtures('mmseg_registry')


# ------------------------------------------------------------ checkpoints


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


# --------------------------------------------------------- mixed precision


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
