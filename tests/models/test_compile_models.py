"""torch.compile on the three families' T models: no graph breaks, compiled equals eager, and
what changes of the input shape cost in recompilations.

Fast tier: ``torch._dynamo.explain`` (traces only) and the ``aot_eager`` backend (dynamo plus
AOTAutograd, forward and backward graphs, no code generation), which check everything the
compiler sees without inductor's minutes of C++ compilation; inductor itself runs in
benchmarks/bench_models.py --compile and in the slow MMEngine ``compile=True`` test.
On a torch without ``torch.library.custom_op`` (< 2.4, e.g. the frozen 2.1.2 stack) SegMAN's
operators stay autograd Functions that dynamo breaks on: these tests skip there.
"""
import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.model import revert_sync_batchnorm
from mmseg.registry import MODELS
from mmseg.utils import register_all_modules

import mmseg_segman  # noqa: F401,I001  (registers the modules)
from mmseg_segman.ops import library

REPO = next(p for p in Path(__file__).resolve().parents if (p / 'mmseg_segman').is_dir())
FAMILIES = ('segman', 'segnext', 'lrformer')

# Tracing whole models takes 10-40 s each on 2 cores: the slow tier (CI runs it).
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not library.AVAILABLE,
    reason='torch.library.custom_op needs torch >= 2.4: SegMAN compiles with graph breaks here')]

register_all_modules()


def _build(family, num_classes=150, deterministic=False, one_block_per_stage=False):
    """The family's T model (random weights, BN), on ADE20K's classes.

    ``one_block_per_stage`` keeps every kind of block and the head but traces 4 blocks
    instead of SegMAN-T's 10: for the tests of shapes and gradients, whose question is the
    same for every block of a stage (the whole T model is traced by the other tests).
    """
    cfg = Config.fromfile(str(REPO / 'configs' / family / f'{family}-t_ade20k.py'))
    cfg.model.backbone.init_cfg = None
    if one_block_per_stage:
        cfg.model.backbone.depths = [1, 1, 1, 1]
    cfg.model.decode_head.num_classes = num_classes
    if deterministic:  # no drop path or dropout: eager and compiled draw different masks
        cfg.model.backbone.drop_path_rate = 0.0
        cfg.model.decode_head.dropout_ratio = 0.0
    torch.manual_seed(0)
    return revert_sync_batchnorm(MODELS.build(cfg.model))


def _logits(model, x):
    return model.decode_head(model.backbone(x))


def _loss(model, x, labels):
    logits = _logits(model, x)
    logits = F.interpolate(logits, size=labels.shape[-2:], mode='bilinear', align_corners=False)
    return F.cross_entropy(logits, labels)


def _rel(out, ref):
    return ((out.double() - ref.double()).abs().max() / ref.double().abs().max()).item()


class _CountingBackend:
    """A dynamo backend that counts the graphs it is given and runs them as traced."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        return gm.forward


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize('family', FAMILIES)
def test_no_graph_breaks_in_training(family):
    """backbone -> decode_head -> loss traces as one graph in train mode, at 64x64 (SegMAN's
    stage-4 map is smaller than its kernel: the padded, key-masked neighbourhood attention)
    and 256x224 (every map at least the kernel; a non-square input). Eval mode runs the same
    operators without dropout: test_compiled_eval_equals_eager compiles it with
    fullgraph=True (which fails on any break) at 96x128 (padded), and SegMAN's dynamic-size
    test below counts one graph at 256x256 and up."""
    model = _build(family).train()
    batch = 2  # BN in train mode needs more than one value per channel after the image pool
    for h, w in ((64, 64), (256, 224)):
        x = torch.randn(batch, 3, h, w)
        labels = torch.randint(0, 150, (batch, h, w))
        report = torch._dynamo.explain(_loss)(model, x, labels)
        reasons = [str(b.reason).split('\n')[0] for b in report.break_reasons]
        assert report.graph_break_count == 0, (family, (h, w), reasons[:5])
        assert report.graph_count == 1
        assert report.op_count > 100  # the whole model was traced, not an empty frame


@pytest.mark.parametrize('family', FAMILIES)
def test_compiled_eval_equals_eager(family):
    """fullgraph=True compiles (no break allowed) and gives eager's logits within 1e-5."""
    model = _build(family).eval()
    x = torch.randn(2, 3, 96, 128)
    compiled = torch.compile(_logits, backend='aot_eager', fullgraph=True)
    with torch.no_grad():
        ref = _logits(model, x)
        out = compiled(model, x)
    assert out.shape == ref.shape == (2, 150, 12, 16)
    assert _rel(out, ref) <= 1e-5


def test_compiled_training_gradients_equal_eager():
    """SegMAN-T forward + loss compiled with fullgraph=True (AOTAutograd traces the backward
    through the custom ops' backward ops): loss within 1e-5 of eager's and the gradients
    within 1e-4 (measured 2026-12-07 on the whole T model: 4.8e-6 of the largest gradient
    entry, 1.0e-5 per parameter). One block per stage: 173 of its 196 gradients are large
    enough to compare on their own scale."""
    eager = _build('segman', num_classes=19, deterministic=True,
                   one_block_per_stage=True).train()
    comp = copy.deepcopy(eager)
    x = torch.randn(2, 3, 96, 96)
    labels = torch.randint(0, 19, (2, 96, 96))
    loss_ref = _loss(eager, x, labels)
    loss_ref.backward()
    loss = torch.compile(_loss, backend='aot_eager', fullgraph=True)(comp, x, labels)
    loss.backward()
    assert abs(loss.item() - loss_ref.item()) <= 1e-5 * abs(loss_ref.item())
    pairs = [(name, p.grad, q.grad) for (name, p), q in zip(eager.named_parameters(),
                                                             comp.parameters())]
    assert all((g is None) == (h is None) for _, g, h in pairs)
    pairs = [(name, g, h) for name, g, h in pairs if g is not None]
    top = max(g.abs().max().item() for _, g, _ in pairs)
    # Every gradient within 1e-4 of the largest gradient entry of the model, and each one that
    # is not rounding noise (conv biases before BN have exact gradient 0) within 1e-4 of its
    # own largest entry.
    assert max((h - g).abs().max().item() for _, g, h in pairs) <= 1e-4 * top
    checked = 0
    for name, g, h in pairs:
        scale = g.abs().max().item()
        if scale > 1e-3 * top:
            assert (h - g).abs().max().item() <= 1e-4 * scale, name
            checked += 1
    assert checked > 100
    grads = {n for n, p in comp.named_parameters() if p.grad is not None}
    assert any('A_logs' in n for n in grads) and any('rpb' in n for n in grads)


def test_batch_change_does_not_recompile():
    """With the batch marked dynamic the first time, batches 2, 3 and 5 run one graph. (Batch 1
    is specialised by torch's 0/1 rule and gets a graph of its own.)"""
    model = _build('segman', one_block_per_stage=True).eval()
    backend = _CountingBackend()
    compiled = torch.compile(_logits, backend=backend)
    with torch.no_grad():
        for batch in (2, 3, 5):
            x = torch.randn(batch, 3, 64, 96)
            if batch == 2:
                torch._dynamo.mark_dynamic(x, 0)
            out = compiled(model, x)
            assert torch.equal(out, _logits(model, x))
        assert backend.graphs == 1
        compiled(model, torch.randn(1, 3, 64, 96))
        assert backend.graphs == 2


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_dynamic_height_and_width_share_one_graph_above_the_kernel():
    """H and W marked dynamic: whole-image inference at 256x256 and 288x352 runs one
    graph, with eager's outputs. (Below that, maps smaller than the kernel take the padded
    path and torch's conv backend choice guards on sizes: each such regime is a graph.)"""
    model = _build('segman', one_block_per_stage=True).eval()
    backend = _CountingBackend()
    compiled = torch.compile(_logits, backend=backend)
    with torch.no_grad():
        for i, (h, w) in enumerate(((256, 256), (288, 352))):
            x = torch.randn(1, 3, h, w)
            if i == 0:
                torch._dynamo.mark_dynamic(x, 2)
                torch._dynamo.mark_dynamic(x, 3)
            out = compiled(model, x)
            assert out.shape[-2:] == (h // 8, w // 8)
            assert _rel(out, _logits(model, x)) <= 1e-5
    assert backend.graphs == 1
