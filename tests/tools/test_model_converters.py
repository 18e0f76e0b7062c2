"""tools/model_converters: the authors' released layouts to MMSeg 1.x / plugin layouts.

Official key lists come from the golden files (the authors' SegMAN-T and LRFormer-T modules)
and, for SegNeXt, from MMSeg's own MSCAN with the official ``dwconv.dwconv`` rename applied.
"""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmseg.models.backbones.mscan import MSCAN

from mmseg_segman.converters import convert_checkpoint
from mmseg_segman.models.backbones import LRFormer, SegMANEncoder, SegNeXtMSCAN
from mmseg_segman.utils.checkpoint import CheckpointMismatchError

REPO = Path(__file__).resolve().parents[2]


def backbone_part(state_dict):
    return {k[len('backbone.'):]: v for k, v in state_dict.items() if k.startswith('backbone.')}


def plus(state_dict, value):
    return {k: v + value if v.is_floating_point() else v for k, v in state_dict.items()}


@pytest.mark.slow  # a fresh interpreter imports the whole stack
def test_segman_imagenet_file_becomes_a_strict_backbone_state_dict(load_golden, tmp_path):
    official = backbone_part(load_golden('segman-t.pt')['state_dict'])
    classifier = {'classifier.0.weight': torch.ones(192), 'classifier.0.bias': torch.zeros(192),
                  'classifier.1.weight': torch.ones(1000, 192),
                  'classifier.1.bias': torch.zeros(1000),
                  'classifier.4.weight': torch.ones(1000, 1000),
                  'classifier.4.bias': torch.zeros(1000)}
    src = tmp_path / 'SegMAN_Encoder_t.pth.tar'
    torch.save({'state_dict_ema': dict(official, **classifier),
                'state_dict': plus(dict(official, **classifier), 1.0), 'epoch': 299}, src)
    dst = tmp_path / 'segman_t_in1k.pth'
    result = subprocess.run(
        [sys.executable, str(REPO / 'tools/model_converters/segman2mmseg.py'), str(src),
         str(dst)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (f'{src}: segman-t (state_dict_ema), {len(official)} tensors kept, 0 renamed, '
            '6 dropped') in result.stdout
    assert 'dropped classifier.4.weight' in result.stdout
    converted = torch.load(dst, weights_only=True)['state_dict']
    encoder = SegMANEncoder(arch='t')
    encoder.load_state_dict(converted, strict=True)  # every key, nothing more
    assert all(torch.equal(encoder.state_dict()[k], official[k]) for k in official)


def test_lrformer_imagenet_file_becomes_a_strict_backbone_state_dict(load_golden, tmp_path):
    official = backbone_part(load_golden('lrformer-t.pt')['state_dict'])
    src = tmp_path / 'lrformer_t.pth'
    torch.save({'model': dict(official, **{'head.weight': torch.ones(1000, 384),
                                           'head.bias': torch.zeros(1000)})}, src)
    report = convert_checkpoint('lrformer', str(src))
    assert report.arch == 't' and report.source == 'model'
    assert report.dropped == ['head.weight', 'head.bias'] and report.renamed == []
    LRFormer(arch='t').load_state_dict(report.state_dict, strict=True)


def _official_mscan_t(seed=0):
    """An MSCAN-T state dict in the official SegNeXt layout (``mlp.dwconv.dwconv.*``)."""
    torch.manual_seed(seed)
    mmseg_layout = SegNeXtMSCAN(arch='t', norm_cfg=dict(type='BN')).state_dict()
    official = {k.replace('.mlp.dwconv.', '.mlp.dwconv.dwconv.'): v
                for k, v in mmseg_layout.items()}
    return mmseg_layout, official


def _mmseg_mscan_t():
    settings = SegNeXtMSCAN.arch_settings['t']
    return MSCAN(embed_dims=settings['embed_dims'], depths=settings['depths'],
                 mlp_ratios=settings['mlp_ratios'], norm_cfg=dict(type='BN'))


def test_segnext_official_imagenet_file_loads_strictly_into_mmseg_mscan(tmp_path):
    mmseg_layout, official = _official_mscan_t()
    src = tmp_path / 'mscan_t.pth'
    torch.save({'state_dict': dict(official, **{'head.weight': torch.ones(1000, 256),
                                                'head.bias': torch.zeros(1000)})}, src)
    report = convert_checkpoint('segnext', str(src))
    assert report.arch == 't'
    assert len(report.renamed) == 2 * sum(SegNeXtMSCAN.arch_settings['t']['depths'])
    assert ('block1.0.mlp.dwconv.dwconv.weight', 'block1.0.mlp.dwconv.weight') in report.renamed
    mmseg_mscan = _mmseg_mscan_t()
    mmseg_mscan.load_state_dict(report.state_dict, strict=True)  # MMSeg's own class, strictly
    assert all(torch.equal(mmseg_mscan.state_dict()[k], v) for k, v in mmseg_layout.items())


def test_segnext_official_segmentation_file_keeps_its_head(tmp_path):
    _, official = _official_mscan_t(seed=1)
    head = {'decode_head.conv_seg.weight': torch.ones(150, 256, 1, 1)}
    src = tmp_path / 'segnext_t_ade.pth'
    torch.save({'state_dict': dict({f'backbone.{k}': v for k, v in official.items()}, **head),
                'meta': {}}, src)
    report = convert_checkpoint('segnext', str(src), arch='t')
    assert report.dropped == []
    assert torch.equal(report.state_dict['decode_head.conv_seg.weight'],
                       head['decode_head.conv_seg.weight'])
    _mmseg_mscan_t().load_state_dict(backbone_part(report.state_dict), strict=True)


def test_a_file_of_another_architecture_is_refused(load_golden, tmp_path):
    _, official = _official_mscan_t()
    src = tmp_path / 'mscan_t.pth'
    torch.save(official, src)
    with pytest.raises(CheckpointMismatchError,
                       match=r'mscan_t.pth is not a segman checkpoint of variant any of '
                       r't/s/b/l: \d+ differences to segman-.*first: missing patch_embed'):
        convert_checkpoint('segman', str(src))
    seg = tmp_path / 'segman_t.pth'
    torch.save(load_golden('segman-t.pt')['state_dict'], seg)
    with pytest.raises(CheckpointMismatchError, match=r'not a segman checkpoint of variant s: '
                       r'\d+ differences to segman-s, first: patch_embed.0.weight: file '
                       r'\(16, 3, 3, 3\) vs \(32, 3, 3, 3\)'):
        convert_checkpoint('segman', str(seg), arch='s')
