"""SegMANEncoder: official golden features, checkpoint layout and loading, sizes, options."""
import argparse
import math

import pytest
import torch
import torch.nn as nn
from mmengine.config import ConfigDict
from mmengine.logging import MMLogger
from mmseg.registry import MODELS
from torch.nn.modules.batchnorm import _BatchNorm

import mmseg_segman  # noqa: F401  (registers the plugin's modules)
from mmseg_segman.models.backbones.segman import SegMANEncoder
from mmseg_segman.models.layers import LayerNorm2d

# A 4-stage arch small enough to train in milliseconds: head_dim 8 everywhere (RoPE needs % 4).
TINY = dict(embed_dims=(8, 16, 16, 16), depths=(1, 2, 1, 1), num_heads=(1, 2, 2, 2),
            kernel_sizes=(3, 3, 3, 3), mlp_ratios=(2, 2, 2, 2))


def _tiny(**kwargs):
    return SegMANEncoder(**{**TINY, **kwargs})


def test_matches_official_golden_features(load_golden):
    golden = load_golden('segman-t.pt')
    state = {k[len('backbone.'):]: v for k, v in golden['state_dict'].items()
             if k.startswith('backbone.')}
    model = MODELS.build(dict(type='SegMANEncoder', arch='t')).eval()
    # Same keys in the same order, same shapes (load_state_dict checks shapes under strict).
    assert list(model.state_dict()) == list(state)
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        for x, refs in zip(golden['inputs'], golden['features']):
            outs = model(x)
            assert len(outs) == 4
            for out, ref in zip(outs, refs):
                assert out.shape == ref.shape
                assert (out - ref).abs().max() <= 1e-4 * ref.abs().max()


def test_norm_layers_match_official_eps():
    # Golden outputs cannot see eps (1e-5 vs 1e-6 moves them ~1e-5): official LayerNorm2d uses
    # 1e-6, its BatchNorm2d the PyTorch defaults.
    model = SegMANEncoder('t')
    layer_norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    batch_norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    # 2 per block (10 blocks) + 1 per local mixer (8 blocks in stages 1-3).
    assert len(layer_norms) == 28 and all(isinstance(m, LayerNorm2d) for m in layer_norms)
    assert {m.eps for m in layer_norms} == {1e-6}
    # stem 4 + downsampling 3 + one per local mixer 8
    assert len(batch_norms) == 15
    assert {(m.eps, m.momentum) for m in batch_norms} == {(1e-5, 0.1)}


# Official state-dict key counts (official-segman.md section 7), SS2D dt_rank per local stage
# (section 2) and encoder+ImageNet-classifier parameters in M at 224 (section 5, [computed]).
@pytest.mark.parametrize('arch,num_keys,dt_ranks,params_with_classifier', [
    ('t', 370, (2, 4, 9), 3.51),
    ('s', 624, (4, 9, 18), 25.51),
    ('b', 1164, (6, 10, 23), 45.02),
    ('l', 1554, (6, 12, 27), 80.99),
])
def test_variant_layout_matches_official(arch, num_keys, dt_ranks, params_with_classifier):
    with torch.device('meta'):  # shapes only; no memory or init time for L's 80M parameters
        model = SegMANEncoder(arch)
    state = model.state_dict()
    assert len(state) == num_keys
    embed_dims, depths = model.arch['embed_dims'], model.arch['depths']
    heads = model.arch['num_heads']
    for stage in range(3):
        ssm = f'layers.{2 * stage}.blocks.0.token_mixer.ssm.dt_projs_weight'
        assert state[ssm].shape == (4, embed_dims[stage], dt_ranks[stage])
    assert state['layers.6.blocks.0.token_mixer.rpb.1'].shape == (heads[3], 49, 49)
    assert not any('layers.6' in k and '.ssm.' in k for k in state)
    assert ('layers.0.blocks.0.layer_scale1.weight' in state) == (arch in 'bl')
    assert f'layers.4.blocks.{depths[2] - 1}.mlp.fc2.weight' in state
    # The official ImageNet model adds Conv1x1(C4->1024) + BN(1024) + Conv1x1(1024->1000).
    classifier = embed_dims[3] * 1024 + 1024 + 2 * 1024 + 1024 * 1000 + 1000
    num_params = sum(p.numel() for p in model.parameters())
    assert round((num_params + classifier) / 1e6, 2) == params_with_classifier


def test_any_input_size_gives_ceil_strided_maps():
    # With T's kernels 11, 9, 9, 7 a 70x45 input gives stage maps (18,12), (9,6), (5,3), (3,2):
    # smaller than the kernel on some axis from stage 2 on.
    model = _tiny(kernel_sizes=(11, 9, 9, 7)).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 70, 45))
    expected = [(8, 18, 12), (16, 9, 6), (16, 5, 3), (16, 3, 2)]
    assert [tuple(o.shape[1:]) for o in outs] == expected
    assert all(torch.isfinite(o).all() for o in outs)


def test_global_bias_sized_by_pretrain_img_size_and_resized():
    model = _tiny(pretrain_img_size=(256, 320)).eval()
    mixer = model.layers[6].blocks[0].token_mixer
    assert mixer.rpb[1].shape == (2, 80, 80)
    with torch.no_grad():
        mixer.rpb[1].normal_()
        assert torch.equal(mixer.global_bias(80), mixer.rpb[1])
        resized = mixer.global_bias(6)
        ref = nn.functional.interpolate(mixer.rpb[1][None], size=(6, 6), mode='bicubic',
                                        align_corners=False)[0]
        torch.testing.assert_close(resized, ref)
        # A 96x64 input has a 3x2 stage-4 map, so the bias is resized, and it matters.
        x = torch.randn(1, 3, 96, 64)
        out = model(x)[3]
        mixer.rpb[1].zero_()
        assert not torch.allclose(model(x)[3], out)


def test_out_indices():
    outs = _tiny(out_indices=(1, 3))(torch.randn(2, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(2, 16, 8, 8), (2, 16, 2, 2)]


def test_drop_path_schedule_is_linear_over_all_blocks():
    model = _tiny(drop_path_rate=0.3)
    probs = [block.drop_path.drop_prob for i in range(0, 8, 2) for block in model.layers[i].blocks]
    assert probs == pytest.approx(torch.linspace(0, 0.3, 5).tolist())


def test_frozen_stages():
    model = _tiny(frozen_stages=2)
    model.train()
    frozen = [model.patch_embed, model.layers[0], model.layers[1], model.layers[2]]
    frozen_params = {id(p) for m in frozen for p in m.parameters()}
    for name, param in model.named_parameters():
        assert param.requires_grad == (id(param) not in frozen_params), name
    frozen_norms = {id(n) for m in frozen for n in m.modules() if isinstance(n, _BatchNorm)}
    # stem 4, stage-1 dwconv 1, downsampling into stage 2, stage-2 dwconvs 2
    assert len(frozen_norms) == 4 + 1 + 1 + 2
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            assert m.training == (id(m) not in frozen_norms)
    stem_mean = model.patch_embed[1].running_mean.clone()
    free_mean = model.layers[3][1].running_mean.clone()  # downsampling BN into stage 3
    sum(o.sum() for o in model(torch.randn(2, 3, 32, 32))).backward()
    assert torch.equal(model.patch_embed[1].running_mean, stem_mean)
    assert not torch.equal(model.layers[3][1].running_mean, free_mean)
    assert all(p.grad is None for m in frozen for p in m.parameters())
    assert model.layers[4].blocks[0].token_mixer.qkv.weight.grad is not None


def test_with_cp_same_outputs_and_grads():
    reference = _tiny(drop_path_rate=0.3, layer_scale=True)
    checkpointed = _tiny(drop_path_rate=0.3, layer_scale=True, with_cp=True)
    checkpointed.load_state_dict(reference.state_dict())
    block = checkpointed.layers[2].blocks[0]
    calls = []
    block.register_forward_pre_hook(lambda *args: calls.append(1))
    x = torch.randn(2, 3, 32, 32)
    results = []
    for model in (reference, checkpointed):
        model.train()
        torch.manual_seed(0)  # same drop-path masks
        outs = model(x.clone().requires_grad_())
        sum((o * o).mean() for o in outs).backward()
        results.append((outs, {n: p.grad for n, p in model.named_parameters()}))
    assert len(calls) == 2  # recomputed in the backward pass: checkpointing really ran
    for out, ref in zip(results[1][0], results[0][0]):
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    for name, grad in results[0][1].items():
        torch.testing.assert_close(results[1][1][name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_with_cp_recomputes_blocks_behind_a_frozen_stem():
    model = _tiny(with_cp=True, frozen_stages=0).train()
    calls = []
    model.layers[0].blocks[0].register_forward_pre_hook(lambda *args: calls.append(1))
    model(torch.randn(1, 3, 64, 64))[0].sum().backward()
    assert len(calls) == 2
    assert model.layers[0].blocks[0].cpe1.weight.grad is not None


def _imagenet_checkpoint(path, ema_model, plain_model, num_classes=10):
    """A checkpoint laid out as the released SegMAN_Encoder_*.pth.tar (timm train.py)."""
    c4 = ema_model.arch['embed_dims'][3]
    classifier = {
        'classifier.0.weight': torch.randn(32, c4, 1, 1), 'classifier.0.bias': torch.randn(32),
        'classifier.1.weight': torch.randn(32), 'classifier.1.bias': torch.randn(32),
        'classifier.1.running_mean': torch.randn(32), 'classifier.1.running_var': torch.rand(32),
        'classifier.1.num_batches_tracked': torch.tensor(5),
        'classifier.4.weight': torch.randn(num_classes, 32, 1, 1),
        'classifier.4.bias': torch.randn(num_classes),
    }
    ckpt = {'epoch': 299, 'arch': 'SegMANEncoder_t',
            'args': argparse.Namespace(model='SegMANEncoder_t', lr=1e-3, drop_path=0.0),
            'state_dict': {**plain_model.state_dict(), **classifier},
            'state_dict_ema': {**ema_model.state_dict(), **classifier}}
    torch.save(ckpt, path)
    return sorted(classifier)


def _randomised(model, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.state_dict().values():
            if p.is_floating_point():
                p.normal_()
    return model


def test_imagenet_checkpoint_loads_ema_weights_and_reports_classifier(tmp_path):
    ema, plain = _randomised(_tiny(), 1), _randomised(_tiny(), 2)
    path = tmp_path / 'SegMAN_Encoder_tiny.pth.tar'
    classifier_keys = _imagenet_checkpoint(path, ema, plain)
    log_file = tmp_path / 'init.log'
    MMLogger.get_instance('test_segman_encoder_init', log_file=str(log_file))

    model = _tiny(init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    for name, value in model.state_dict().items():
        assert torch.equal(value, ema.state_dict()[name]), name
    assert not torch.equal(model.patch_embed[0].weight, plain.patch_embed[0].weight)
    log = log_file.read_text()
    assert 'source: state_dict_ema' in log
    n_keys = sum(not k.endswith('num_batches_tracked') for k in model.state_dict())
    assert (f'loaded {n_keys}/{n_keys} keys from {path} (source: state_dict_ema), '
            f'ignored {len(classifier_keys)} classifier keys') in log
    assert 'not in the file' not in log and 'not used' not in log


def test_checkpoint_without_ema_uses_state_dict_and_prefix_selects_backbone(tmp_path):
    source = _randomised(_tiny(), 3)
    torch.save({'state_dict': source.state_dict()}, tmp_path / 'plain.pth')
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in source.state_dict().items()}
                | {'decode_head.conv_seg.weight': torch.zeros(1)}}, tmp_path / 'seg.pth')
    for name, prefix in (('plain.pth', None), ('seg.pth', 'backbone.')):
        # In a list, Pretrained is applied last (as mmengine does), over the other entries.
        model = _tiny(init_cfg=[
            dict(type='Pretrained', checkpoint=str(tmp_path / name), prefix=prefix),
            dict(type='Constant', layer='Conv2d', val=0.5, bias=0.)])
        model.init_weights()
        for key, value in model.state_dict().items():
            assert torch.equal(value, source.state_dict()[key]), (name, key)


def test_segmentor_level_pretrained_is_loaded_through_init_weights(tmp_path):
    ema, plain = _randomised(_tiny(), 4), _randomised(_tiny(), 5)
    path = tmp_path / 'SegMAN_Encoder_tiny.pth.tar'
    _imagenet_checkpoint(path, ema, plain)
    segmentor = MODELS.build(ConfigDict(
        type='EncoderDecoder', pretrained=str(path),
        backbone=dict(type='SegMANEncoder', **TINY),
        decode_head=dict(type='FCNHead', in_channels=16, in_index=3, channels=8, num_convs=1,
                         num_classes=3)))
    segmentor.init_weights()
    for name, value in segmentor.backbone.state_dict().items():
        assert torch.equal(value, ema.state_dict()[name]), name


def test_checkpoint_of_another_arch_is_rejected(tmp_path):
    torch.save({'state_dict': _tiny(embed_dims=(8, 16, 16, 32)).state_dict()},
               tmp_path / 'other.pth')
    model = _tiny(init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'other.pth')))
    with pytest.raises(ValueError, match=r'with another shape \(layers.5.0.weight'):
        model.init_weights()


def test_random_init_is_official():
    model = SegMANEncoder('t', layer_scale=True)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(3.0)
    model.init_weights()
    qkv = model.layers[4].blocks[0].token_mixer.qkv
    assert abs(qkv.weight.std().item() - 0.02) < 0.002  # trunc_normal(std=.02), 144*432 values
    assert torch.equal(qkv.bias, torch.zeros_like(qkv.bias))
    assert torch.equal(model.patch_embed[1].weight, torch.ones(16))
    assert torch.equal(model.layers[0].blocks[0].norm1.weight, torch.ones(32))
    # Parameters the official init leaves alone keep their construction values, so the 3.0
    # written above survives there (the official code sets them once, at construction).
    assert torch.equal(model.layers[0].blocks[0].layer_scale1.weight,
                       torch.full((32, 1, 1, 1), 3.0))


def test_other_init_cfg_applies_after_official_init():
    model = _tiny(init_cfg=dict(type='Constant', layer='Conv2d', val=0.5, bias=0.))
    model.init_weights()
    assert torch.equal(model.layers[0].blocks[0].token_mixer.qkv.weight,
                       torch.full((24, 8, 1, 1), 0.5))
    assert torch.equal(model.layers[0].blocks[0].norm1.weight, torch.ones(8))


def test_arch_overrides_and_norm_cfg():
    model = SegMANEncoder('s', depths=(1, 1, 1, 1), norm_cfg=dict(type='SyncBN'))
    assert model.arch['embed_dims'] == (64, 144, 288, 512)
    assert [len(model.layers[i].blocks) for i in (0, 2, 4, 6)] == [1, 1, 1, 1]
    assert isinstance(model.patch_embed[1], nn.SyncBatchNorm)
    assert isinstance(model.layers[0].blocks[0].token_mixer.dwconv[1], nn.SyncBatchNorm)
    assert model.layers[4].blocks[0].mlp.fc1.out_channels == math.floor(288 * 3.4)


@pytest.mark.parametrize('kwargs,match', [
    (dict(arch='xl'), r"arch 'xl' is not one of \['b', 'l', 's', 't'\]"),
    (dict(num_heads=(1, 2, 4, 5)), r'stage 4: embed_dims \(192\) must split into num_heads'),
    (dict(num_heads=(1, 2, 8, 8)), r'stage 3: .* divisible by 4'),
    (dict(kernel_sizes=(11, 8, 9, 7)), 'stage 2: kernel_sizes must be odd'),
    (dict(depths=(2, 2, 4)), r'depths needs one value per stage \(4\)'),
    (dict(out_indices=(0, 4)), 'out_indices'),
    (dict(frozen_stages=5), 'frozen_stages'),
    (dict(drop_path_rate=1.0), 'drop_path_rate'),
])
def test_bad_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SegMANEncoder(**kwargs)


def test_bad_input_raises():
    with pytest.raises(ValueError,
                       match=r'expects images of shape \(B, 3, H, W\), got \(1, 4, 32, 32\)'):
        _tiny()(torch.randn(1, 4, 32, 32))
