"""One bfloat16-autocast training step of each family's T model on CPU, against float64.

Every bf16 gradient must be finite, and the whole gradient's bf16 error must stay within
``MULTIPLE`` times the float32 error scaled by 2**16, the ratio of float32's to bfloat16's
unit roundoff (2**-24 / 2**-8). Errors are ``||g - g64|| / ||g64||`` over all parameter
gradients, against the same step in float64 (same weights, same batch, no dropout). A
network that amplifies rounding (SegMAN-T at random initialisation amplifies a bf16 input
rounding into a ~40 % gradient change, even in float64 arithmetic) amplifies float32's
rounding likewise, so the scaled float32 error is the yardstick of what bf16 may cost;
an op that lost more precision than bf16 rounding would exceed it. Measured (64x64, batch
2, 4 classes; float32 error / bf16 error / bf16 error in units of float32 error x 2**16):

- SegNeXt-T: 6.9e-7 / 0.034 / 0.75 (its NMF runs in float32 even in the float64 model)
- LRFormer-T: 1.6e-6 / 0.048 / 0.47
- SegMAN-T: 1.4e-4 / 0.999 / 0.11

The operator-level bounds that catch a real precision defect (the selective scan's state
in bf16) are in ``tests/ops/test_bf16_ops.py``; this whole-model check is too coarse for
that (SegMAN-T's bf16 gradient is already decorrelated from float64's by its conditioning).
"""
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

REPO_ROOT = Path(__file__).resolve().parents[2]
MULTIPLE = 4  # bf16 error <= MULTIPLE * float32 error * 2**16


def _step(model, inputs, data_samples, bf16):
    model.zero_grad()
    torch.manual_seed(1)  # the same random NMF bases (SegNeXt) in every precision
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
        losses = model(inputs, data_samples, mode='loss')
        loss = sum(v for k, v in losses.items() if 'loss' in k)
    loss.backward()
    grads = {n: p.grad.double().clone() for n, p in model.named_parameters()
             if p.grad is not None}
    return loss.double().item(), grads


def _gradient_error(grads, grads64):
    diff = torch.sqrt(sum(((grads[n] - g) ** 2).sum() for n, g in grads64.items()))
    return float(diff / torch.sqrt(sum((g ** 2).sum() for g in grads64.values())))


@pytest.mark.parametrize('family', [
    'segnext', 'segman',
    pytest.param('lrformer', marks=pytest.mark.slow),  # ~8 s: bf16 matmuls are slow on CPU
])
def test_bf16_autocast_training_step(family):
    cfg = Config.fromfile(str(REPO_ROOT / 'configs' / family / f'{family}-t_ade20k.py'))
    cfg.model.backbone.init_cfg = None  # random weights: no pretrained file needed
    cfg.model.decode_head.num_classes = 4
    cfg.model.data_preprocessor.size = (64, 64)
    init_default_scope('mmseg')
    torch.manual_seed(0)
    model = revert_sync_batchnorm(MODELS.build(cfg.model)).train()
    for module in model.modules():  # no dropout / drop path: float64's draws would differ
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.p = 0.0
        if hasattr(module, 'drop_prob'):
            module.drop_prob = 0.0
    samples = []
    for _ in range(2):
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=torch.randint(0, 4, (1, 64, 64)))
        sample.set_metainfo(dict(img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64)))
        samples.append(sample)
    images = [torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8) for _ in range(2)]
    data = model.data_preprocessor(dict(inputs=images, data_samples=samples), True)

    loss32, grads32 = _step(model, data['inputs'], data['data_samples'], bf16=False)
    loss16, grads16 = _step(model, data['inputs'], data['data_samples'], bf16=True)
    loss64, grads64 = _step(model.double(), data['inputs'].double(), data['data_samples'],
                            bf16=False)
    assert grads16.keys() == grads32.keys() == grads64.keys() and len(grads16) > 100
    not_finite = [n for n, g in grads16.items() if not torch.isfinite(g).all()]
    assert not not_finite, f'non-finite bf16 gradients: {not_finite[:5]}'
    assert abs(loss16 - loss64) <= 2**-8 * abs(loss64), (loss16, loss64)
    err32, err16 = _gradient_error(grads32, grads64), _gradient_error(grads16, grads64)
    assert 0 < err32 < 2**-10  # float32 agrees with float64 (a broken reference would not)
    assert err16 <= MULTIPLE * err32 * 2**16, (
        f'{family}-T bf16 gradient error {err16:.3g} exceeds {MULTIPLE} x float32 error '
        f'{err32:.3g} x 2**16 = {MULTIPLE * err32 * 2**16:.3g}')


def test_neighborhood_attention_backward_under_autocast_mixes_dtypes():
    """Under autocast the softmax weights are float32 and the values bfloat16; the backward
    (run without autocast) used to fail with "expected m1 and m2 to have the same dtype"."""
    from mmseg_segman.ops import na2d_av, na2d_qk
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 9, 10, 8, generator=gen, requires_grad=True) for _ in range(3))
    grads = []
    for bf16 in (False, True):
        for t in (q, k, v):
            t.grad = None
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
            qq, kk, vv = (t.to(torch.bfloat16) if bf16 else t for t in (q, k, v))
            attn = na2d_qk(qq, kk, 5).float().softmax(-1)  # float32, as autocast's softmax
            out = na2d_av(attn, vv, 5)
        out.float().square().sum().backward()
        grads.append([t.grad.clone() for t in (q, k, v)])
    for g32, g16 in zip(*grads):
        assert torch.isfinite(g16).all()
        assert (g16 - g32).norm() <= 0.05 * g32.norm()
