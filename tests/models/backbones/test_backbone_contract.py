"""One contract for the three backbones (SegBackbone): the same arguments behave the same way.

Each case is a regression test of a defect of the three-contracts era: list ``init_cfg``,
non-``Pretrained`` ``init_cfg`` skipping the official init, ``model.pretrained``, MMSeg's own
SegNeXt config with ``type='SegNeXtMSCAN'``, frozen stages, gradient checkpointing.
"""
import ast
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config, ConfigDict
from mmseg.models.backbones.mscan import MSCAN
from mmseg.registry import MODELS
from torch.nn.modules.batchnorm import _BatchNorm

from mmseg_segman.models.backbones import LRFormer, SegMANEncoder, SegNeXtMSCAN

REPO = Path(__file__).resolve().parents[3]
BN = dict(type='BN', requires_grad=True)
# Small variants of each family (one block per stage) to keep the tests fast.
TINY = {
    'SegMANEncoder': dict(arch=dict(embed_dims=(16, 32, 48, 64), depths=(1, 1, 1, 1),
                                    num_heads=(1, 2, 3, 4), kernel_sizes=(5, 5, 3, 3),
                                    mlp_ratios=(2, 2, 2, 2), layer_scale=True)),
    'SegNeXtMSCAN': dict(arch=dict(embed_dims=(16, 32, 48, 64), depths=(1, 1, 1, 1),
                                   mlp_ratios=(2, 2, 2, 2)), norm_cfg=BN),
    'LRFormer': dict(arch=dict(embed_dims=(16, 32, 40, 64), depths=(1, 1, 1, 1))),
}
FAMILIES = sorted(TINY)


def build(name, **kwargs):
    return MODELS.build(dict(type=name, **TINY[name], **kwargs))


def random_checkpoint(model, path, seed=0, wrapper='state_dict', prefix=''):
    """Save ``model``'s keys with random values; returns the saved tensors (unprefixed)."""
    gen = torch.Generator().manual_seed(seed)
    weights = {k: torch.randn(v.shape, generator=gen) if v.is_floating_point() else v.clone()
               for k, v in model.state_dict().items()}
    torch.save({wrapper: {prefix + k: v for k, v in weights.items()}}, path)
    return weights


@pytest.mark.parametrize('name', FAMILIES)
def test_list_init_cfg_applies_official_init_then_entries_then_pretrained(name, tmp_path):
    """Official init, then a non-Pretrained entry, then the pretrained file, in that order."""
    reference = build(name)
    weights = random_checkpoint(reference, tmp_path / 'w.pth')
    init_cfg = [dict(type='Constant', val=0.5, layer='Conv2d'),
                dict(type='Pretrained', checkpoint=str(tmp_path / 'w.pth'))]
    model = build(name, init_cfg=init_cfg)
    model.init_weights()
    for key, value in model.state_dict().items():
        assert torch.equal(value, weights[key]), key  # pretrained came last

    # Without the file: the Constant entry overrides the official init of convs only.
    torch.manual_seed(0)
    model = build(name, init_cfg=init_cfg[:1])
    model.init_weights()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(torch.all(m.weight == 0.5) for m in convs)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if linears:  # SegMAN and LRFormer: official trunc_normal(std=0.02), not PyTorch's default
        std = torch.cat([m.weight.flatten() for m in linears]).std().item()
        assert std == pytest.approx(0.02, rel=0.2)
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    assert norms and all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in norms)


@pytest.mark.parametrize('name', FAMILIES)
def test_pretrained_is_mmseg_alias_of_init_cfg(name, tmp_path):
    """EncoderDecoder passes ``model.pretrained`` to the backbone: it loads like init_cfg."""
    weights = random_checkpoint(build(name), tmp_path / 'w.pth', seed=3)
    model = MODELS.build(ConfigDict(type='EncoderDecoder', pretrained=str(tmp_path / 'w.pth'),
                                    backbone=dict(type=name, **TINY[name]),
                                    decode_head=dict(type='FCNHead', in_channels=64, in_index=3,
                                                     channels=8, num_convs=1, num_classes=2)))
    assert model.backbone.init_cfg == dict(type='Pretrained', checkpoint=str(tmp_path / 'w.pth'))
    model.init_weights()
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, weights[key]), key
    with pytest.raises(ValueError, match='either pretrained or init_cfg'):
        build(name, pretrained='a.pth', init_cfg=dict(type='Pretrained', checkpoint='b.pth'))


@pytest.mark.parametrize('name', FAMILIES)
def test_pretrained_init_cfg_errors_name_the_problem(name, tmp_path):
    with pytest.raises(ValueError, match="has no 'checkpoint'.*init_cfg=None"):
        build(name, init_cfg=dict(type='Pretrained')).init_weights()
    missing = tmp_path / 'nope.pth'
    with pytest.raises(FileNotFoundError,
                       match=r"nope.pth' does not exist\. Download .*init_cfg=None"):
        build(name, init_cfg=dict(type='Pretrained', checkpoint=str(missing))).init_weights()


def test_a_checkpoint_of_another_family_is_refused(tmp_path):
    """A SegNeXt file as SegMAN's pretrained weights used to train on from random init."""
    random_checkpoint(build('SegNeXtMSCAN'), tmp_path / 'mscan.pth')
    model = build('SegMANEncoder', init_cfg=dict(type='Pretrained',
                                                 checkpoint=str(tmp_path / 'mscan.pth')))
    with pytest.raises(ValueError, match=r'mscan.pth does not match this SegMANEncoder: .*'
                       r'missing from the checkpoint \(patch_embed\.0\.weight'):
        model.init_weights()
    # The explicit opt-out loads what matches (nothing here) and keeps the official init.
    model = build('SegMANEncoder', init_cfg=dict(type='Pretrained', strict=False,
                                                 checkpoint=str(tmp_path / 'mscan.pth')))
    model.init_weights()


@pytest.mark.parametrize('name', FAMILIES)
def test_segmentor_checkpoint_loads_backbone_part(name, tmp_path):
    """A whole segmentor checkpoint (``backbone.`` + ``decode_head.`` keys, DDP ``module.``)."""
    model = build(name)
    weights = random_checkpoint(model, tmp_path / 'seg.pth', prefix='module.backbone.')
    ckpt = torch.load(tmp_path / 'seg.pth')
    ckpt['state_dict']['module.decode_head.conv_seg.weight'] = torch.zeros(2, 8, 1, 1)
    torch.save(ckpt, tmp_path / 'seg.pth')
    model = build(name, init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'seg.pth')))
    model.init_weights()
    for key, value in model.state_dict().items():
        assert torch.equal(value, weights[key]), key


@pytest.mark.parametrize('name', FAMILIES)
def test_out_indices_and_input_checks(name):
    model = build(name, out_indices=(1, 3)).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[-1] for o in outs] == [8, 2]
    with pytest.raises(ValueError, match='out_indices'):
        build(name, out_indices=(0, 4))
    with pytest.raises(ValueError, match=r'expects images of shape \(B, 3, H, W\), got '
                       r'\(3, 64, 64\)'):
        model(torch.randn(3, 64, 64))  # no batch dimension


@pytest.mark.parametrize('name', FAMILIES)
@pytest.mark.parametrize('frozen', [0, 2])
def test_frozen_stages_freeze_the_stem_and_stages(name, frozen):
    model = build(name, frozen_stages=frozen)
    model.train()
    frozen_ids = {id(p) for m in model.frozen_modules() for p in m.parameters()}
    assert frozen_ids
    for p in model.parameters():
        assert p.requires_grad == (id(p) not in frozen_ids)
    for m in model.frozen_modules():
        assert all(not n.training for n in m.modules() if isinstance(n, _BatchNorm))
    # The stem is always frozen; with 2 stages, stage 2's blocks too but not stage 3's.
    stage_params = {
        'SegMANEncoder': lambda m, i: m.layers[2 * i].parameters(),
        'SegNeXtMSCAN': lambda m, i: getattr(m, f'block{i + 1}').parameters(),
        'LRFormer': lambda m, i: getattr(m, f'block{i + 1}').parameters(),
    }[name]
    assert all(id(p) in frozen_ids for p in stage_params(model, 1)) == (frozen == 2)
    assert not any(id(p) in frozen_ids for p in stage_params(model, 2))
    x = torch.randn(1, 3, 64, 64)
    sum(o.sum() for o in model(x)).backward()
    assert all(p.grad is None for m in model.frozen_modules() for p in m.parameters())


@pytest.mark.parametrize('name', FAMILIES)
def test_with_cp_gives_the_same_outputs_and_gradients(name):
    torch.manual_seed(0)
    plain = build(name, drop_path_rate=0.0).train()
    checkpointed = build(name, drop_path_rate=0.0, with_cp=True).train()
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 64)
    grads = []
    for model in (plain, checkpointed):
        loss = sum((o**2).mean() for o in model(x))
        loss.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_layer_scale_argument_means_the_same_in_every_family():
    """``layer_scale`` switches the per-channel scale off (SegNeXt, LRFormer) or on (SegMAN)."""
    assert not any('layer_scale' in k for k in build('SegNeXtMSCAN', layer_scale=False)
                   .state_dict())
    assert not any('layer_scale' in k for k in build('LRFormer', layer_scale=False)
                   .state_dict())
    assert not any('layer_scale' in k for k in MODELS.build(dict(
        type='SegMANEncoder', arch='t')).state_dict())
    model = build('LRFormer', layer_scale=True, layer_scale_init_value=0.25)
    assert torch.all(model.block3[0].layer_scale_1 == 0.25)
    with pytest.warns(DeprecationWarning, match='use_layer_scale'):
        legacy = build('LRFormer', use_layer_scale=False)
    assert not any('layer_scale' in k for k in legacy.state_dict())


def test_segnext_drops_into_mmseg_own_config():
    """MMSeg's SegNeXt-T config with ``type='SegNeXtMSCAN'`` builds and equals MMSeg's MSCAN."""
    import mmseg
    path = Path(mmseg.__file__).parent / '.mim' / 'configs' / 'segnext' / \
        'segnext_mscan-t_1xb16-adamw-160k_ade20k-512x512.py'
    backbone_cfg = Config.fromfile(path).model.backbone
    backbone_cfg.pop('init_cfg')
    assert backbone_cfg.pop('type') == 'MSCAN'
    ours = SegNeXtMSCAN(**backbone_cfg).eval()
    theirs = MSCAN(**backbone_cfg).eval()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        for a, b in zip(ours(x), theirs(x)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match='num_stages=3 but the arch has 4 stages'):
        SegNeXtMSCAN(**dict(backbone_cfg, num_stages=3))


@pytest.mark.parametrize('name,cls', [('SegMANEncoder', SegMANEncoder),
                                      ('SegNeXtMSCAN', SegNeXtMSCAN), ('LRFormer', LRFormer)])
def test_arch_errors_name_the_class_and_the_choices(name, cls):
    with pytest.raises(ValueError, match=rf"{name}: arch 'xxl' is not one of \['b', 'l', 's', "
                       r"'t'"):
        cls(arch='xxl')
    with pytest.raises(ValueError, match=rf'{name}: arch dict has unknown keys \[.typo.\]'):
        cls(arch=dict(TINY[name]['arch'], typo=1))


def test_decode_heads_import_layers_never_a_backbone():
    """Shared blocks live in models/layers: no head imports a backbone module."""
    for path in (REPO / 'mmseg_segman' / 'models' / 'decode_heads').glob('*.py'):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert 'backbones' not in (node.module or ''), f'{path.name} imports a backbone'
