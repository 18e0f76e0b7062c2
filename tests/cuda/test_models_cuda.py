"""CUDA tier, models: forward + backward of all 12 variants at 512 x 512, an AMP training step
(MMEngine's AmpOptimWrapper, as ``tools/train.py --amp`` sets it) for one variant of each
family, and the golden outputs of the authors' code reproduced on CUDA."""
import importlib.util
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import mmseg_segman  # noqa: F401  (registers the plugin's modules)

REPO = Path(__file__).resolve().parents[2]
# tools/analysis/benchmark.py builds models without pretrained weights and makes batches.
_spec = importlib.util.spec_from_file_location('segman_benchmark_tool',
                                               REPO / 'tools' / 'analysis' / 'benchmark.py')
benchmark_helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(benchmark_helpers)
VARIANTS = [f'{family}-{size}' for family in ('segman', 'segnext', 'lrformer')
            for size in 'tsbl']


def _config(name):
    family = name.split('-')[0]
    return Config.fromfile(str(REPO / 'configs' / family / f'{name}_ade20k.py'))


def _build(cfg, size=512):
    init_default_scope('mmseg')
    return benchmark_helpers.build_model(cfg, (size, size), device='cuda')


def _batch(batch, size, cfg, seed=0):
    return benchmark_helpers.random_batch(batch, (size, size), cfg.model.decode_head.num_classes,
                                          seed, with_labels=True)


@pytest.mark.parametrize('name', VARIANTS)
def test_forward_backward_512(name):
    """Loss forward and backward (float32, batch 2): finite loss, every parameter gets a
    finite gradient."""
    torch.manual_seed(0)
    cfg = _config(name)
    model = _build(cfg).train()
    data = model.data_preprocessor(_batch(2, 512, cfg), True)
    losses = model(**data, mode='loss')
    loss, _ = model.parse_losses(losses)
    loss.backward()
    assert torch.isfinite(loss)
    bad = [n for n, p in model.named_parameters()
           if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]
    assert not bad, bad[:5]


@pytest.mark.parametrize('name', ['segman-t', 'segnext-t', 'lrformer-t'])
@pytest.mark.parametrize('amp_dtype', ['float16', 'bfloat16'])
def test_amp_training_steps(name, amp_dtype):
    """Three AMP training steps (batch 2, 512 x 512) as ``--amp`` configures them: finite
    losses, and the weights move."""
    torch.manual_seed(0)
    cfg = _config(name)
    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    cfg.optim_wrapper.loss_scale = 'dynamic'
    cfg.optim_wrapper.dtype = amp_dtype
    model = _build(cfg)
    model.train()
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    before = [p.detach().clone() for p in model.parameters()]
    for step in range(3):
        out = model.train_step(_batch(2, 512, cfg, seed=step), wrapper)
        assert all(torch.isfinite(v).all() for v in out.values()), out
    moved = sum(not torch.equal(b, p.detach()) for b, p in zip(before, model.parameters()))
    assert moved > 0.9 * len(before)


@pytest.mark.parametrize('golden_name,config', [('segman-t.pt', 'segman-t'),
                                                ('lrformer-t.pt', 'lrformer-t')])
def test_golden_outputs_on_cuda(load_golden, golden_name, config):
    """The authors' outputs (CPU float32) from the plugin's model on CUDA, TF32 off."""
    golden = load_golden(golden_name)
    cfg = _config(config)
    init_default_scope('mmseg')
    model = revert_sync_batchnorm(MODELS.build(cfg.model)).eval()
    model.load_state_dict(golden['state_dict'], strict=True)
    model.cuda()
    with torch.no_grad():
        for x, feats_ref, logits_ref in zip(golden['inputs'], golden['features'],
                                            golden['logits']):
            feats = model.backbone(x.cuda())
            outs = [*feats, model.decode_head(feats)]
            for out, ref in zip(outs, [*feats_ref, logits_ref]):
                assert out.shape == ref.shape
                err = (out.double().cpu() - ref.double()).abs().max() / ref.abs().max()
                assert err <= 1e-4, err
