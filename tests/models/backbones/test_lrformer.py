"""LRFormer backbone (models/backbones/lrformer.py).

References: the official parameter layout written out from the official constructors
(_family_helpers; itself checked against the golden state dict in test_lrformer_model.py),
the paper's XL size (184.7M), the official checkpoint formats and initialization, and the
FLOP count of the attention worked out by hand.
"""
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn
from _family_helpers import (
    BN,
    TINY_ARCH,
    VARIANTS,
    XL,
    _random_like,
    n_params,
    official_backbone_shapes,
    shapes_of,
)
from mmengine.analysis import FlopAnalyzer

import mmseg_segman  # noqa: F401  (registers the plugin's modules)
from mmseg_segman.models.backbones.lrformer import LRFormer
from mmseg_segman.models.decode_heads.lrformer_head import LRHead

pytestmark = pytest.mark.usefixtures('mmseg_registry')


# --------------------------------------------------------------------------------------------
# Official parameter layout
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize('arch', ['t', 's', 'b', 'l', 'xl'])
def test_backbone_state_dict_is_official_key_for_key(arch):
    dims, depths = XL if arch == 'xl' else VARIANTS[arch][2:]
    with torch.device('meta'):
        backbone = LRFormer(arch=arch)
    assert shapes_of(backbone.state_dict()) == list(
        official_backbone_shapes(dims, depths).items())
    if arch == 'xl':  # the fp16 pre-norms of the official XL
        assert [n for n, m in backbone.named_modules() if n.endswith('pre_norm')
                and isinstance(m, nn.BatchNorm2d)] == ['block3.7.pre_norm', 'block3.15.pre_norm']


def test_xl_backbone_params():
    with torch.device('meta'):
        assert abs(n_params(LRFormer(arch='xl')) / 1e6 - 184.7) <= 0.005 * 184.7


# --------------------------------------------------------------------------------------------
# Pretrained loading and initialization
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize('wrap', ['bare', 'state_dict', 'model', 'module', 'segmentor',
                                  'dp_segmentor'])
def test_pretrained_official_formats_load(wrap, tmp_path):
    """Every checkpoint format the official loader accepts loads all backbone weights."""
    backbone = LRFormer(arch=TINY_ARCH)
    weights = _random_like(backbone.state_dict(), seed=1)
    prefix = {'module': 'module.', 'segmentor': 'backbone.',
              'dp_segmentor': 'module.backbone.'}.get(wrap, '')
    state = OrderedDict((prefix + k, v) for k, v in weights.items())
    state['head.weight'] = torch.zeros(1000, 64)  # ImageNet classifier: ignored
    ckpt = {'bare': state, 'model': {'model': state}}.get(wrap, {'state_dict': state})
    path = tmp_path / 'ckpt.pth'
    torch.save(ckpt, path)
    backbone = LRFormer(arch=TINY_ARCH, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    backbone.init_weights()
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, weights[key]), key


def test_pretrained_errors(tmp_path):
    missing = tmp_path / 'nope.pth'
    backbone = LRFormer(arch=TINY_ARCH, init_cfg=dict(type='Pretrained', checkpoint=str(missing)))
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        backbone.init_weights()
    unrelated = tmp_path / 'resnet.pth'
    torch.save({'state_dict': {'conv1.weight': torch.zeros(1)}}, unrelated)
    backbone = LRFormer(arch=TINY_ARCH,
                        init_cfg=dict(type='Pretrained', checkpoint=str(unrelated)))
    with pytest.raises(ValueError, match=r'resnet.pth does not match this LRFormer: of its '
                       r'weights, \d+ missing from the checkpoint'):
        backbone.init_weights()


def test_default_init_is_official():
    """Without a checkpoint: Linear ~ trunc_normal(0.02) with zero bias, LayerNorm 1/0."""
    torch.manual_seed(0)
    backbone = LRFormer(arch='t')
    backbone.init_weights()
    kv = backbone.block3[0].attn.kv[0]
    # PyTorch's own Linear init would give std 1 / sqrt(3 * 240) = 0.037
    assert kv.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert torch.count_nonzero(kv.bias) == 0
    assert torch.equal(backbone.block3[0].layer_scale_1, torch.full((240, ), 1e-6))
    assert backbone.block1[0].layer_scale_1 is None  # layer scale only in stages 3-4
    head = LRHead(in_channels=[96, 240, 384], in_index=[1, 2, 3], channels=256, num_classes=150,
                  norm_cfg=BN)
    head.init_weights()
    assert head.fuse_block1.attn.kv.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert head.conv_seg.weight.std().item() == pytest.approx(0.01, rel=0.05)


# --------------------------------------------------------------------------------------------
# Behaviour
# --------------------------------------------------------------------------------------------
def test_any_input_size_backbone_shapes():
    backbone = LRFormer(arch=TINY_ARCH).eval()
    with torch.no_grad():
        feats = backbone(torch.randn(1, 3, 97, 61))
    assert [tuple(f.shape) for f in feats] == [(1, 16, 25, 16), (1, 32, 13, 8), (1, 40, 7, 4),
                                               (1, 64, 4, 2)]


def test_gradient_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    plain = LRFormer(arch=TINY_ARCH, drop_path_rate=0.).train()
    ckpt = LRFormer(arch=TINY_ARCH, drop_path_rate=0., with_cp=True).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 48)
    grads = []
    for model in (plain, ckpt):
        sum(f.square().mean() for f in model(x)).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name, g in grads[0].items():
        assert torch.allclose(g, grads[1][name], rtol=1e-4, atol=1e-6), name


def test_pre_norm_is_used():
    """The XL pre-norm sits on the block input: changing its statistics changes the output."""
    arch = dict(TINY_ARCH, stage3_pre_norm_blocks=(1, ))
    backbone = LRFormer(arch=arch).eval()
    assert isinstance(backbone.block3[1].pre_norm, nn.BatchNorm2d)
    assert isinstance(backbone.block3[0].pre_norm, nn.Identity)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = backbone(x)[2]
        backbone.block3[1].pre_norm.running_var.fill_(4.)
        after = backbone(x)[2]
    assert (before - after).abs().max() > 1e-3


def test_drop_path_schedule_is_linear_over_all_blocks():
    with torch.device('meta'):
        backbone = LRFormer(arch='b', drop_path_rate=0.4)
    rates = [0. if isinstance(b.drop_path, nn.Identity) else b.drop_path.drop_prob
             for i in range(4) for b in getattr(backbone, f'block{i + 1}')]
    assert rates == pytest.approx(torch.linspace(0, 0.4, 31).tolist())


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match='arch'):
        LRFormer(arch='huge')
    with pytest.raises(ValueError, match='q_pooled_sizes'):
        LRFormer(arch=TINY_ARCH, q_pooled_sizes=[16, 16])
    with pytest.raises(ValueError, match='out_indices'):
        LRFormer(arch=TINY_ARCH, out_indices=(4, ))
    with pytest.raises(ValueError, match='num_heads'):
        LRFormer(arch=dict(embed_dims=[15, 32, 40, 64], depths=[1, 1, 1, 1]))
    with pytest.raises(ValueError, match=r'\(B, 3, H, W\)'):
        LRFormer(arch=TINY_ARCH)(torch.randn(1, 4, 32, 32))
    head = dict(in_channels=[32, 40, 64], in_index=[1, 2, 3], channels=32, num_classes=5)
    with pytest.raises(ValueError, match='norm_cfg'):
        LRHead(**head)
    with pytest.raises(ValueError, match='input_transform'):
        LRHead(**head, norm_cfg=BN, input_transform='resize_concat')
    with pytest.raises(TypeError, match='in_channels'):
        LRHead(in_channels=64, in_index=3, channels=32, num_classes=5, norm_cfg=BN)


# --------------------------------------------------------------------------------------------
# Attention cost does not grow with the input
# --------------------------------------------------------------------------------------------
def test_attention_flops_constant_in_resolution():
    backbone = LRFormer(arch='t').eval()
    per_size = []
    for size in (160, 320):
        analyzer = FlopAnalyzer(backbone, (torch.randn(1, 3, size, size), ))
        analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        counts = analyzer.by_module_and_operator()
        attn_matmul = sum(ops.get('matmul', 0) for name, ops in counts.items()
                          if name.endswith('.attn'))
        # convolutions outside the pooled key/value pyramid work at full resolution
        full_res_conv = analyzer.by_operator()['conv'] - sum(
            counts[f'd_convs{i}'].get('conv', 0) for i in range(1, 5))
        per_size.append((attn_matmul, full_res_conv))
    # q k^T and attn v: 2 * Nq * Nk * C MACs per block, Nq = 16 * 16, Nk = 11^2+8^2+6^2+4^2
    expected = sum(2 * 256 * 237 * c * d for c, d in zip(*VARIANTS['t'][2:]))
    assert per_size[0][0] == per_size[1][0] == expected
    assert per_size[1][1] == 4 * per_size[0][1]  # while the convolutions scale with the area


# --------------------------------------------------------------------------------------------
# Full-size forward/backward
# --------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_forward_backward_xl_backbone_512():
    backbone = LRFormer(arch='xl', drop_path_rate=0.4).train()
    feats = backbone(torch.randn(1, 3, 512, 512))
    assert [f.shape[1:] for f in feats] == [(128, 128, 128), (256, 64, 64), (640, 32, 32),
                                            (768, 16, 16)]
    sum(f.float().square().mean() for f in feats).backward()
    assert all(p.grad is not None for p in backbone.parameters())
