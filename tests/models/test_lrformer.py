"""LRFormer backbone + LRHead.

References: the golden outputs of the official code (``lrformer-t.pt``), the official parameter
layout written out from the official constructors (and itself checked against the golden state
dict), a float64 brute-force LRSA, the paper's parameter counts (T 13.26M, S 32.22M,
B 67.5M, L 111.0M with 150 classes) and the official training recipe.
"""
import math
import os
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.analysis import FlopAnalyzer
from mmengine.config import Config, ConfigDict
from mmengine.optim import build_optim_wrapper
from mmengine.runner import load_checkpoint
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import register_all_modules

import mmseg_segman  # noqa: F401  (registers the plugin's modules)
from mmseg_segman.models.backbones.lrformer import LRFormer
from mmseg_segman.models.decode_heads.lrformer_head import LRHead
from mmseg_segman.models.layers.lrformer_blocks import (
    LowResolutionSelfAttention,
    aspect_preserving_size,
)

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / 'configs' / 'lrformer'
BN = dict(type='BN', requires_grad=True)
# Every code path of the backbone with few channels (heads 2/4/10/16 divide the dims).
TINY_ARCH = dict(embed_dims=[16, 32, 40, 64], depths=[1, 1, 2, 1])
VARIANTS = {  # arch: (head channels, head in_channels, backbone embed_dims, depths)
    't': (256, [96, 240, 384], [48, 96, 240, 384], [2, 2, 6, 3]),
    's': (384, [128, 320, 512], [64, 128, 320, 512], [3, 3, 12, 3]),
    'b': (512, [160, 400, 512], [80, 160, 400, 512], [4, 4, 15, 8]),
    'l': (640, [192, 480, 640], [96, 192, 480, 640], [4, 6, 18, 8]),
}
XL = ([128, 256, 640, 768], [4, 8, 22, 8])


@pytest.fixture(scope='module', autouse=True)
def _registry():
    register_all_modules()


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


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def rel_err(out, ref):
    return ((out.double() - ref.double()).abs().max() / ref.double().abs().max()).item()


# --------------------------------------------------------------------------------------------
# Official parameter layout, written out from the official constructors
# (yuhuan-wu/LRFormer @ 59f2764: LRFormer, Stem, PatchEmbed, Block, PoolingAttention, IRB,
# LRHead), in the official registration order.
# --------------------------------------------------------------------------------------------
def _conv(sd, name, cout, cin, k, bias=True):
    sd[f'{name}.weight'] = (cout, cin, k, k)
    if bias:
        sd[f'{name}.bias'] = (cout, )


def _norm(sd, name, c, batch_norm=False):
    sd[f'{name}.weight'] = (c, )
    sd[f'{name}.bias'] = (c, )
    if batch_norm:
        sd[f'{name}.running_mean'] = (c, )
        sd[f'{name}.running_var'] = (c, )
        sd[f'{name}.num_batches_tracked'] = ()


def _linear(sd, name, cout, cin):
    sd[f'{name}.weight'] = (cout, cin)
    sd[f'{name}.bias'] = (cout, )


def _block(sd, p, c, hidden, layer_scale, pre_norm, head):
    if layer_scale:
        sd[f'{p}.layer_scale_1'] = (c, )
        sd[f'{p}.layer_scale_2'] = (c, )
    if pre_norm:
        _norm(sd, f'{p}.pre_norm', c, batch_norm=True)
    _norm(sd, f'{p}.norm1', c, batch_norm=head)
    if head:
        _conv(sd, f'{p}.attn.q', c, c, 1)
        _linear(sd, f'{p}.attn.kv', 2 * c, c)
    else:
        _linear(sd, f'{p}.attn.q.0', c, c)
        _linear(sd, f'{p}.attn.kv.0', 2 * c, c)
    _linear(sd, f'{p}.attn.proj', c, c)
    _norm(sd, f'{p}.attn.norm', c)
    _norm(sd, f'{p}.norm2', c, batch_norm=head)
    _conv(sd, f'{p}.mlp.fc1', hidden, c, 1)
    _conv(sd, f'{p}.mlp.conv', hidden, 1, 3)
    _conv(sd, f'{p}.mlp.fc2', c, hidden, 1)
    _conv(sd, f'{p}.cpe', c, 1, 3)


def official_backbone_shapes(embed_dims, depths, mlp_ratios=(8, 8, 4, 4)):
    sd = OrderedDict()
    c0, mid = embed_dims[0], embed_dims[0] // 2
    stem = 'patch_embed1.conv1'
    _conv(sd, f'{stem}.0', mid, 3, 3)
    _norm(sd, f'{stem}.1', mid, batch_norm=True)
    _conv(sd, f'{stem}.3', mid, mid, 3)
    _norm(sd, f'{stem}.4', mid, batch_norm=True)
    _conv(sd, f'{stem}.6', c0, mid, 3)
    _norm(sd, f'{stem}.7', c0, batch_norm=True)
    _conv(sd, f'{stem}.9', c0, c0, 3)
    _norm(sd, 'patch_embed1.norm', c0)
    for i in range(1, 4):
        _conv(sd, f'patch_embed{i + 1}.proj', embed_dims[i], embed_dims[i - 1], 3)
        _norm(sd, f'patch_embed{i + 1}.norm', embed_dims[i])
    for i, c in enumerate(embed_dims):
        for j in range(4):
            _conv(sd, f'd_convs{i + 1}.{j}', c, 1, 3)
    for i, (c, depth) in enumerate(zip(embed_dims, depths)):
        for j in range(depth):
            _block(sd, f'block{i + 1}.{j}', c, int(c * mlp_ratios[i]), layer_scale=i >= 2,
                   pre_norm=i == 2 and depths[2] > 20 and j in (7, 15), head=False)
    return sd


def official_head_shapes(channels, in_channels, num_classes):
    sd = OrderedDict()
    _conv(sd, 'conv_seg', num_classes, channels, 1)
    for name, cin in (('squeeze1', sum(in_channels)), ('squeeze2', channels + in_channels[-1])):
        _conv(sd, f'{name}.conv', channels, cin, 1, bias=False)
        _norm(sd, f'{name}.bn', channels, batch_norm=True)
    for name in ('fuse_block1', 'fuse_block2'):
        _block(sd, name, channels, 4 * channels, layer_scale=True, pre_norm=False, head=True)
    return sd


def shapes_of(state_dict):
    return [(k, tuple(v.shape)) for k, v in state_dict.items()]


def test_official_layout_table_matches_golden_state_dict(golden):
    """The written-out official layout is right: it reproduces the official T state dict."""
    expected = [(f'backbone.{k}', s) for k, s in official_backbone_shapes(*VARIANTS['t'][2:])
                .items()]
    expected += [(f'decode_head.{k}', s) for k, s in official_head_shapes(
        *VARIANTS['t'][:2], num_classes=150).items()]
    assert shapes_of(golden['state_dict']) == expected


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


# --------------------------------------------------------------------------------------------
# Parameter counts (backbone + head, 150 classes)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize('arch,expected_m', [('t', 13.26), ('s', 32.22), ('b', 67.5),
                                             ('l', 111.0)])
def test_params_match_paper(arch, expected_m):
    model = build_from_config(f'lrformer-{arch}_ade20k', device='meta')
    assert abs(n_params(model) / 1e6 - expected_m) <= 0.005 * expected_m


def test_xl_backbone_params():
    with torch.device('meta'):
        assert abs(n_params(LRFormer(arch='xl')) / 1e6 - 184.7) <= 0.005 * 184.7


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


def _random_like(state_dict, seed):
    gen = torch.Generator().manual_seed(seed)
    return OrderedDict((k, torch.randn(v.shape, generator=gen) if v.is_floating_point() else
                        v.clone()) for k, v in state_dict.items())


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


def test_pretrained_errors(tmp_path):
    missing = tmp_path / 'nope.pth'
    backbone = LRFormer(arch=TINY_ARCH, init_cfg=dict(type='Pretrained', checkpoint=str(missing)))
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        backbone.init_weights()
    unrelated = tmp_path / 'resnet.pth'
    torch.save({'state_dict': {'conv1.weight': torch.zeros(1)}}, unrelated)
    backbone = LRFormer(arch=TINY_ARCH,
                        init_cfg=dict(type='Pretrained', checkpoint=str(unrelated)))
    with pytest.raises(ValueError, match=r'loaded 0/\d+ keys .*resnet.pth'):
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


def test_head_output_at_first_selected_level():
    head = LRHead(in_channels=[32, 40, 64], in_index=[1, 2, 3], channels=32, num_classes=5,
                  norm_cfg=BN).eval()
    feats = [torch.randn(1, 16, 52, 40), torch.randn(1, 32, 26, 20), torch.randn(1, 40, 13, 10),
             torch.randn(1, 64, 7, 5)]
    assert head(feats).shape == (1, 5, 26, 20)
    assert head.fuse_block1.attn.kv_pooled_sizes == [22, 16, 12, 8]  # q pool 32 by default


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


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize('arch', ['t', 's', 'b', 'l'])
def test_forward_backward_512(arch):
    _forward_backward(build_from_config(f'lrformer-{arch}_ade20k'))


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_forward_backward_xl_backbone_512():
    backbone = LRFormer(arch='xl', drop_path_rate=0.4).train()
    feats = backbone(torch.randn(1, 3, 512, 512))
    assert [f.shape[1:] for f in feats] == [(128, 128, 128), (256, 64, 64), (640, 32, 32),
                                            (768, 16, 16)]
    sum(f.float().square().mean() for f in feats).backward()
    assert all(p.grad is not None for p in backbone.parameters())


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
