"""All 12 variants (3 families x T/S/B/L, as their ADE20K configs build them) run forward
and backward at a small size: logits of the input's size, finite gradients reaching every
parameter. Part of the smoke tier that CI runs on the frozen OpenMMLab stack too."""
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmseg.registry import MODELS

CONFIGS = Path(__file__).resolve().parents[2] / 'configs'
VARIANTS = [(family, variant) for family in ('segman', 'segnext', 'lrformer')
            for variant in 'tsbl']

pytestmark = [pytest.mark.usefixtures('mmseg_registry'), pytest.mark.smoke, pytest.mark.slow]


@pytest.mark.parametrize('family,variant', VARIANTS, ids='-'.join)
def test_variant_forward_backward(family, variant):
    cfg = Config.fromfile(str(CONFIGS / family / f'{family}-{variant}_ade20k.py'))
    cfg.model.backbone.init_cfg = None
    cfg.model.pop('pretrained', None)
    torch.manual_seed(0)
    model = revert_sync_batchnorm(MODELS.build(cfg.model)).train()
    inputs = torch.randn(2, 3, 64, 64)
    logits = model(inputs, mode='tensor')
    num_classes = cfg.model.decode_head.num_classes
    assert logits.shape[:2] == (2, num_classes)
    assert torch.isfinite(logits).all()
    logits.float().square().mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad, f'no gradient reaches {no_grad[:5]}'
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
