"""Whole LRFormer models (LRFormer backbone + LRHead), mostly built from configs/lrformer.

References: the golden outputs of the official code (``lrformer-t.pt``), the official parameter
layout written out from the official constructors (_family_helpers; checked here against the
golden state dict), the paper's parameter counts (T 13.26M, S 32.22M, B 67.5M, L 111.0M with
150 classes) and the official training recipe.
"""
import os
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from _family_helpers import (
    BN,
    TINY_ARCH,
    VARIANTS,
    _random_like,
    n_params,
    official_backbone_shapes,
    official_head_shapes,
    rel_err,
    shapes_of,
)
from mmengine.config import Config, ConfigDict
from mmengine.optim import build_optim_wrapper
from mmengine.runner import load_checkpoint
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import mmseg_segman  # noqa: F401  (registers the plugin's modules)
from mmseg_segman.models.backbones.lrformer import LRFormer

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / 'configs' / 'lrformer'
pytestmark = pytest.mark.usefixtures('mmseg_registry')


@pytest.fixture(scope='module')
def golden(golden_dir):  # golden_dir: tests/conftest.py (skips, or fails under CI)
    path = golden_dir / 'lrformer-t.pt'
    if not path.is_file():
        if os.environ.get('CI'):
            pytest.fail(f'golden file {path} is missing (CI is set)')
        pytest.skip(f'golden file {path} not found; set MMSEG_SEGMAN_GOLDEN')
    return torch.load(path, weights_only=True)


def load_config(name):
    return Config.fromfile(str(CONFIGS / f'{name}.py'))


def build_from_config(name, device='cpu'):
    cfg = load_config(name)
    with torch.device(device):
        return MODELS.build(cfg.model)


# --------------------------------------------------------------------------------------------
# Official parameter layout
# --------------------------------------------------------------------------------------------
def test_official_layout_table_matches_golden_state_dict(golden):
    """The written-out official layout is right: it reproduces the official T state dict."""
    expected = [(f'backbone.{k}', s) for k, s in official_backbone_shapes(*VARIANTS['t'][2:])
                .items()]
    expected += [(f'decode_head.{k}', s) for k, s in official_head_shapes(
        *VARIANTS['t'][:2], num_classes=150).items()]
    assert shapes_of(golden['state_dict']) == expected


@pytest.mark.parametrize('arch', ['t', 's', 'b', 'l'])
def test_segmentor_state_dict_is_official_key_for_key(arch):
    channels, in_channels, dims, depths = VARIANTS[arch]
    model = build_from_config(f'lrformer-{arch}_ade20k', device='meta')
    expected = [(f'backbone.{k}', s) for k, s in official_backbone_shapes(dims, depths).items()]
    expected += [(f'decode_head.{k}', s)
                 for k, s in official_head_shapes(channels, in_channels, 150).items()]
    assert shapes_of(model.state_dict()) == expected


# --------------------------------------------------------------------------------------------
# Golden outputs of the official code
# --------------------------------------------------------------------------------------------
@pytest.mark.smoke
def test_golden_lrformer_t_reproduces_official_outputs(golden):
    model = build_from_config('lrformer-t_ade20k').eval()
    model.load_state_dict(golden['state_dict'], strict=True)
    with torch.no_grad():
        for x, feats_ref, logits_ref in zip(golden['inputs'], golden['features'],
                                            golden['logits']):
            feats = model.backbone(x)
            outs = [*feats, model.decode_head(feats)]
            for out, ref in zip(outs, [*feats_ref, logits_ref]):
                assert out.shape == ref.shape
                assert rel_err(out, ref) <= 1e-4


def test_golden_checkpoint_loads_through_mmengine_strictly(golden, tmp_path):
    """A released segmentation checkpoint (``state_dict`` + ``meta``) loads as users load it."""
    path = tmp_path / 'lrformer-t_official.pth'
    torch.save({'state_dict': golden['state_dict'], 'meta': {}}, path)
    model = build_from_config('lrformer-t_ade20k')
    load_checkpoint(model, str(path), map_location='cpu', strict=True)
    for key, value in golden['state_dict'].items():
        assert torch.equal(model.state_dict()[key], value), key


# eps of every norm in the official code: the outputs cannot tell 1e-5 from 1e-6 apart.
OFFICIAL_EPS = [  # (name suffix / pattern, module type, eps)
    ('backbone.patch_embed1.conv1.', nn.BatchNorm2d, 1e-5),  # nn.BatchNorm2d defaults
    ('.pre_norm', nn.BatchNorm2d, 1e-5),
    ('backbone.patch_embed', nn.LayerNorm, 1e-6),  # LayerNorm(eps=1e-6) in Stem/PatchEmbed
    ('.attn.norm', nn.LayerNorm, 1e-5),  # PoolingAttention: nn.LayerNorm(dim)
    ('backbone.block', nn.LayerNorm, 1e-6),  # norm1/norm2: partial(LayerNorm, eps=1e-6)
    ('decode_head.', nn.modules.batchnorm._BatchNorm, 1e-5),  # SyncBN from norm_cfg
]


def _official_eps(name, module):
    for pattern, kind, eps in OFFICIAL_EPS:
        if pattern in name and isinstance(module, kind):
            return eps
    raise AssertionError(f'norm {name} ({type(module).__name__}) has no official counterpart')


@pytest.mark.parametrize('config', ['lrformer-t_ade20k', 'lrformer-l_ade20k'])
def test_norm_eps_and_momentum_match_official(config):
    model = build_from_config(config, device='meta')
    norms = [(n, m) for n, m in model.named_modules()
             if isinstance(m, (nn.LayerNorm, nn.modules.batchnorm._BatchNorm))]
    assert len(norms) > 50
    for name, module in norms:
        assert module.eps == _official_eps(name, module), name
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            assert module.momentum == 0.1, name
    assert isinstance(model.decode_head.squeeze1.bn, nn.SyncBatchNorm)
    with torch.device('meta'):
        xl = LRFormer(arch='xl')
    for name, module in xl.named_modules():
        if isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
            assert module.eps == _official_eps(f'backbone.{name}', module), name


# --------------------------------------------------------------------------------------------
# Parameter counts (backbone + head, 150 classes)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize('arch,expected_m', [('t', 13.26), ('s', 32.22), ('b', 67.5),
                                             ('l', 111.0)])
def test_params_match_paper(arch, expected_m):
    model = build_from_config(f'lrformer-{arch}_ade20k', device='meta')
    assert abs(n_params(model) / 1e6 - expected_m) <= 0.005 * expected_m


# --------------------------------------------------------------------------------------------
# Configs and pretrained loading
# --------------------------------------------------------------------------------------------
def test_optimizer_groups_follow_official_recipe():
    """head lr x10, no weight decay on norms, clipping at 35 (official custom_keys)."""
    cfg = load_config('lrformer-t_ade20k')
    model = MODELS.build(cfg.model)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    groups = {id(p): g for g in wrapper.optimizer.param_groups for p in g['params']}
    params = dict(model.named_parameters())

    def lr_wd(name):
        g = groups[id(params[name])]
        return g['lr'], g['weight_decay']

    assert lr_wd('backbone.block1.0.attn.q.0.weight') == (6e-5, 0.01)
    assert lr_wd('backbone.block1.0.norm1.weight') == (6e-5, 0.)
    assert lr_wd('backbone.block3.0.attn.norm.bias') == (6e-5, 0.)
    assert lr_wd('decode_head.fuse_block1.attn.q.weight') == (pytest.approx(6e-4), 0.01)
    assert wrapper.clip_grad_kwargs == dict(max_norm=35, norm_type=2)


def test_config_pretrained_weights_load(tmp_path):
    """The T config's init_cfg loads an ImageNet checkpoint (official format) into the model."""
    cfg = load_config('lrformer-t_ade20k')
    reference = MODELS.build(cfg.model).backbone
    weights = _random_like(reference.state_dict(), seed=2)
    path = tmp_path / 'lrformer_tiny.pth'
    torch.save({'model': dict(weights, **{'head.weight': torch.zeros(1000, 384)})}, path)
    cfg.model.backbone.init_cfg.checkpoint = str(path)
    model = MODELS.build(cfg.model)
    model.init_weights()
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, weights[key]), key
    # and the head got its own initialization, not left untouched
    assert model.decode_head.conv_seg.weight.std().item() == pytest.approx(0.01, rel=0.2)


# --------------------------------------------------------------------------------------------
# Behaviour
# --------------------------------------------------------------------------------------------
def _tiny_segmentor(num_classes=5):
    return MODELS.build(
        ConfigDict(
            type='EncoderDecoder',
            data_preprocessor=dict(type='SegDataPreProcessor', mean=[0, 0, 0], std=[1, 1, 1]),
            backbone=dict(type='LRFormer', arch=TINY_ARCH, drop_path_rate=0.),
            decode_head=dict(
                type='LRHead',
                in_channels=[32, 40, 64],
                in_index=[1, 2, 3],
                channels=32,
                q_pooled_size=8,
                dropout_ratio=0.,
                num_classes=num_classes,
                norm_cfg=BN),
            test_cfg=dict(mode='whole')))


def test_predict_returns_logits_at_input_size():
    model = _tiny_segmentor().eval()
    h, w = 75, 101
    sample = SegDataSample(metainfo=dict(ori_shape=(h, w), img_shape=(h, w), pad_shape=(h, w)))
    with torch.no_grad():
        (result, ) = model.test_step(dict(inputs=[torch.randint(0, 255, (3, h, w))],
                                          data_samples=[sample]))
    assert result.seg_logits.data.shape == (5, h, w)
    assert result.pred_sem_seg.data.shape == (1, h, w)


def test_mmseg_inference_api_on_odd_sized_image():
    """MMSeg's inference API with the ADE config: the test pipeline resizes to multiples of 32
    and the prediction comes back at the image's own size."""
    from mmseg.apis import inference_model, init_model
    model = init_model(str(CONFIGS / 'lrformer-t_ade20k.py'), checkpoint=None, device='cpu')
    image = torch.randint(0, 256, (97, 131, 3), dtype=torch.uint8).numpy()
    result = inference_model(model, image)
    assert result.seg_logits.shape == (97, 131)
    assert result.pred_sem_seg.shape == (97, 131)
    assert [t['type'] for t in model.cfg.test_pipeline][1:3] == ['Resize', 'ResizeToMultiple']


def test_training_reduces_loss():
    torch.manual_seed(0)
    model = _tiny_segmentor(num_classes=3).train()
    size = 32
    x = torch.randn(2, 3, size, size)
    # a learnable, spatially smooth labelling: class from the sign pattern of a blurred input
    smooth = F.avg_pool2d(x[:, :2], 9, stride=1, padding=4)
    labels = (smooth[:, 0] > 0).long() + (smooth[:, 1] > 0).long()
    samples = [SegDataSample(gt_sem_seg=PixelData(data=labels[i:i + 1]),
                             metainfo=dict(img_shape=(size, size), pad_shape=(size, size)))
               for i in range(2)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        loss = model.loss(x, samples)['decode.loss_ce']
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.85 * losses[0]


# --------------------------------------------------------------------------------------------
# Full-size forward/backward and evaluation
# --------------------------------------------------------------------------------------------
def _forward_backward(model, size=512):
    model.train()
    x = torch.randn(1, 3, size, size)
    labels = torch.randint(0, model.decode_head.num_classes, (1, size, size))
    sample = SegDataSample(gt_sem_seg=PixelData(data=labels),
                           metainfo=dict(img_shape=(size, size), pad_shape=(size, size)))
    loss = model.loss(x, [sample])['decode.loss_ce']
    loss.backward()
    assert torch.isfinite(loss)
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not
               torch.isfinite(p.grad).all()]
    assert not no_grad  # every parameter takes part (no find_unused_parameters needed)


# One thread, quiet 2-core machine (2026-12-07): T 3.7 s, S 6 s, B 10 s, L 14 s; all slow
# (the fast tier runs LRFormer-T against the authors' golden outputs).
@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize('arch', ['t', 's', 'b', 'l'])
def test_forward_backward_512(arch):
    _forward_backward(build_from_config(f'lrformer-{arch}_ade20k'))


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_eval_t_cityscapes_full_resolution():
    """Whole-image inference at 1024x2048: logits come back at the input size."""
    cfg = load_config('lrformer-t_cityscapes')
    cfg.model.test_cfg = dict(mode='whole')
    model = MODELS.build(cfg.model).eval()
    sample = SegDataSample(metainfo=dict(ori_shape=(1024, 2048), img_shape=(1024, 2048),
                                         pad_shape=(1024, 2048)))
    with torch.no_grad():
        (result, ) = model.test_step(dict(inputs=[torch.randint(0, 255, (3, 1024, 2048))],
                                          data_samples=[sample]))
    assert result.seg_logits.data.shape == (19, 1024, 2048)
    assert torch.isfinite(result.seg_logits.data).all()
