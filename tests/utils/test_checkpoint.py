"""The one checkpoint reader: wrappers, prefixes, classifier keys, strictness, messages."""
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn
from mmengine.logging import MMLogger

from mmseg_segman.models.backbones import SegNeXtMSCAN
from mmseg_segman.utils.checkpoint import (
    CheckpointMismatchError,
    load_backbone_weights,
    read_state_dict,
)


class Tiny(nn.Module):

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 1)
        self.bn = nn.BatchNorm2d(3)


def weights(seed):
    gen = torch.Generator().manual_seed(seed)
    return OrderedDict((k, torch.randn(v.shape, generator=gen) if v.is_floating_point() else v)
                       for k, v in Tiny().state_dict().items())


@pytest.mark.parametrize('layout,expected_source', [
    (lambda w: {'state_dict_ema': w, 'state_dict': weights(9), 'optimizer': {}}, 'state_dict_ema'),
    (lambda w: {'state_dict': w, 'meta': {'epoch': 3}}, 'state_dict'),
    (lambda w: {'model': w}, 'model'),
    (lambda w: w, 'the whole file'),
])
def test_wrappers_in_order_of_preference(tmp_path, layout, expected_source):
    w = weights(0)
    torch.save(layout(w), tmp_path / 'c.pth')
    found = read_state_dict(str(tmp_path / 'c.pth'))
    assert found.source == expected_source
    assert list(found.state_dict) == list(w)
    assert all(torch.equal(found.state_dict[k], w[k]) for k in w)


def test_prefixes(tmp_path):
    w = weights(0)
    seg = {f'module.backbone.{k}': v for k, v in w.items()}
    seg['module.decode_head.conv_seg.weight'] = torch.zeros(1)
    found = read_state_dict({'state_dict': seg}, auto_prefix=('backbone.', ))
    assert found.prefix == 'backbone.' and list(found.state_dict) == list(w)
    found = read_state_dict({'state_dict': seg}, prefix='decode_head.')
    assert list(found.state_dict) == ['conv_seg.weight']
    with pytest.raises(CheckpointMismatchError, match="no key of the given checkpoint .* starts "
                       "with prefix 'neck.' \\(first keys: \\['backbone.conv.weight'"):
        read_state_dict({'state_dict': seg}, prefix='neck.')
    with pytest.raises(CheckpointMismatchError, match='holds a list, not a state dict'):
        read_state_dict([1, 2])
    with pytest.raises(CheckpointMismatchError, match='holds no tensors'):
        read_state_dict({'state_dict': {'epoch': 1}})


def test_load_logs_one_line_and_drops_classifier(tmp_path):
    w = weights(1)
    torch.save({'state_dict_ema': dict(w, **{'head.weight': torch.zeros(10, 3),
                                             'head.bias': torch.zeros(10)})}, tmp_path / 'in1k.pth')
    log_file = tmp_path / 'log.txt'
    MMLogger.get_instance('test_checkpoint_reader', log_file=str(log_file))
    model = Tiny()
    missing = load_backbone_weights(model, str(tmp_path / 'in1k.pth'),
                                    classifier_prefixes=('head.', ))
    assert missing == []
    assert all(torch.equal(model.state_dict()[k], w[k]) for k in w)
    # 6 of Tiny's 7 entries are counted (BN's step counter is not a weight).
    assert (f"Tiny: loaded 6/6 keys from {tmp_path / 'in1k.pth'} (source: state_dict_ema), "
            'ignored 2 classifier keys') in log_file.read_text()


def test_missing_weights_raise_unless_not_strict(tmp_path):
    w = weights(2)
    del w['bn.weight'], w['bn.bias']
    torch.save({'state_dict': w}, tmp_path / 'partial.pth')
    with pytest.raises(CheckpointMismatchError,
                       match=r'partial.pth does not match this Tiny: of its weights, 2 missing '
                       r'from the checkpoint \(bn.weight, bn.bias\).*strict=False'):
        load_backbone_weights(Tiny(), str(tmp_path / 'partial.pth'))
    model = Tiny()
    before = model.bn.weight.clone()
    assert load_backbone_weights(model, str(tmp_path / 'partial.pth'),
                                 strict=False) == ['bn.weight', 'bn.bias']
    assert torch.equal(model.bn.weight, before) and torch.equal(model.conv.weight, w['conv.weight'])


def test_shape_mismatch_names_file_and_key(tmp_path):
    w = weights(3)
    w['conv.weight'] = torch.zeros(4, 2, 1, 1)
    torch.save(w, tmp_path / 'other.pth')
    with pytest.raises(CheckpointMismatchError, match=r'other.pth does not match this Tiny: .*'
                       r'conv.weight: checkpoint \[4, 2, 1, 1\] vs model \[3, 2, 1, 1\]'):
        load_backbone_weights(Tiny(), str(tmp_path / 'other.pth'))


def test_missing_file_names_it_and_the_hint(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Tiny pretrained checkpoint '.*gone.pth' does "
                       r'not exist\. get it from X'):
        load_backbone_weights(Tiny(), str(tmp_path / 'gone.pth'), hint='get it from X')


def test_both_segnext_layouts_load_strictly(tmp_path):
    """Official SegNeXt files store the MLP's depthwise conv as ``mlp.dwconv.dwconv.*``."""
    arch = dict(embed_dims=(8, 16, 24, 32), depths=(1, 1, 1, 1), mlp_ratios=(2, 2, 2, 2))
    source = SegNeXtMSCAN(arch=arch, norm_cfg=dict(type='BN'))
    mmseg_keys = source.state_dict()
    official = OrderedDict((k.replace('mlp.dwconv.', 'mlp.dwconv.dwconv.'), v + 1)
                           for k, v in mmseg_keys.items())
    assert official.keys() != mmseg_keys.keys()
    model = SegNeXtMSCAN(arch=arch, norm_cfg=dict(type='BN'))
    assert load_backbone_weights(model, {'state_dict': official}) == []
    assert torch.equal(model.block1[0].mlp.dwconv.weight,
                       mmseg_keys['block1.0.mlp.dwconv.weight'] + 1)
