"""Helpers shared by several model test modules (layers/, backbones/, decode_heads/ and the
segmentor-level ``test_*_model.py`` files); tests/models/conftest.py puts this folder on
``sys.path`` so that every test module under tests/models can import it by name.

Only what more than one module uses lives here; a helper of a single module stays in it.
"""
from collections import OrderedDict

import torch

BN = dict(type='BN', requires_grad=True)
GN = dict(type='GN', num_groups=32, requires_grad=True)


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def rel_err(out, ref):
    return ((out.double() - ref.double()).abs().max() / ref.double().abs().max()).item()


def max_abs(a, b):
    return (a - b).abs().max().item()


def shapes_of(state_dict):
    return [(k, tuple(v.shape)) for k, v in state_dict.items()]


# ============================================================================================
# LRFormer
# ============================================================================================
# Every code path of the backbone with few channels (heads 2/4/10/16 divide the dims).
TINY_ARCH = dict(embed_dims=[16, 32, 40, 64], depths=[1, 1, 2, 1])
VARIANTS = {  # arch: (head channels, head in_channels, backbone embed_dims, depths)
    't': (256, [96, 240, 384], [48, 96, 240, 384], [2, 2, 6, 3]),
    's': (384, [128, 320, 512], [64, 128, 320, 512], [3, 3, 12, 3]),
    'b': (512, [160, 400, 512], [80, 160, 400, 512], [4, 4, 15, 8]),
    'l': (640, [192, 480, 640], [96, 192, 480, 640], [4, 6, 18, 8]),
}
XL = ([128, 256, 640, 768], [4, 8, 22, 8])  # backbone only: embed_dims, depths


def _random_like(state_dict, seed):
    gen = torch.Generator().manual_seed(seed)
    return OrderedDict((k, torch.randn(v.shape, generator=gen) if v.is_floating_point() else
                        v.clone()) for k, v in state_dict.items())


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


# ============================================================================================
# SegNeXt
# ============================================================================================
# reduced MSCAN-T for fast checks (two blocks per stage keep every code path)
SMALL_ARCH = dict(
    embed_dims=[32, 64, 160, 256],
    depths=[1, 2, 2, 1],
    mlp_ratios=[8, 8, 4, 4])


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


def head_kwargs(rank=16, **ham_kwargs):
    return dict(
        in_channels=[64, 160, 256],
        in_index=[1, 2, 3],
        channels=64,
        ham_channels=64,
        num_classes=19,
        norm_cfg=GN,
        ham_kwargs=dict(MD_R=rank, **ham_kwargs))


def official_keys(state_dict):
    """The official SegNeXt key format: MLP dwconv wrapped in ``dwconv``."""
    return {
        k.replace('.mlp.dwconv.', '.mlp.dwconv.dwconv.'): v.clone()
        for k, v in state_dict.items()
    }
