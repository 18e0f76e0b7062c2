"""MMEngine's ``compile=True``: the Runner wraps ``model.train_step`` in ``torch.compile``
and the SegMAN-T toy config trains with it.

The test compiles with ``backend='eager'`` (see ``toy_cfg``). One iteration only: with
inductor each takes minutes, because MMEngine's compiled ``train_step`` also
recompiles when a batch's metadata (``img_path``, ``flip``: dynamo guards on those objects) or
the scheduled learning rate (a float in AdamW's ``param_groups``) changes, for any model.

Known problem outside the model (torch 2.13, onedl-mmengine 0.10.12): with a
``paramwise_cfg`` (the toy and ADE20K configs have one) MMEngine builds the optimizer from a
config whose parameter groups become ``ConfigDict``s, and dynamo fails inside
``AdamW.step`` (``InternalTorchDynamoError: 'UserDefinedDictVariable' object has no attribute
'items'``, torch/_dynamo/variables/optimizer.py ``_set_capturable``), for any model. The
configs' ``PlainParamGroupsHook`` (``default_runtime.py``) turns the groups into plain dicts
before training when ``compile`` is set; this test relies on it.

Slow: tracing the whole training step took 95-103 s on one core (2026-12-07).
Run in process through ``Runner.from_cfg``, as ``tools/train.py --cfg-options compile=True``
does after parsing its arguments.
"""
import math
import time
from pathlib import Path

import pytest
import torch
from make_toy_dataset import make_toy_dataset
from mmengine.config import Config
from mmengine.runner import Runner

import mmseg_segman  # noqa: F401,I001  (registers the modules)
from mmseg_segman.ops import library

REPO = next(p for p in Path(__file__).resolve().parents if (p / 'mmseg_segman').is_dir())
TOY_CONFIG = REPO / 'configs' / 'toy' / 'segman-t_toy.py'


def toy_cfg(data_root, work_dir, max_iters, compile_):
    # Unformatted: MMEngine's yapf pass over the logged and dumped config is not tested here.
    cfg = Config.fromfile(str(TOY_CONFIG), format_python_code=False)
    cfg.work_dir = str(work_dir)
    cfg.train_cfg.max_iters = max_iters
    cfg.train_cfg.val_interval = max_iters
    cfg.default_hooks.checkpoint.interval = max_iters
    cfg.default_hooks.logger.interval = 1
    cfg.train_dataloader.batch_size = 2
    cfg.randomness.seed = 0
    cfg.total_batch_size = 2  # BatchSizeCheckHook: the recipe total of this run
    # One block per stage: every block kind of SegMAN-T (neighbourhood attention + SS2D in
    # stages 1-3, global attention in stage 4) and the MMSCopE head, with 4 blocks and their
    # parameter groups instead of 10. Dynamo traces AdamW's step per parameter group, which
    # was 60 % of this test (cProfile, 2026-12-07). The full SegMAN-T is compiled in training
    # by tests/models/test_compile_models.py::test_no_graph_breaks_in_training.
    cfg.model.backbone.depths = [1, 1, 1, 1]
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = str(data_root)
        cfg[loader].num_workers = 0
        cfg[loader].persistent_workers = False
    if compile_:
        # MMEngine's switch with dynamo's graphs run as traced: dynamo traces the whole
        # train_step (data preprocessor, model, loss, the optimizer step, where the
        # ConfigDict groups crash without the hook: checked 2026-12-07) as with
        # compile=True, without inductor's C++ build (tens of minutes on 2 busy cores) or
        # AOT autograd (aot_eager: 139 s against 113 s, 2026-12-07). AOT autograd through the
        # custom ops is tested by test_compile_models.py::
        # test_compiled_training_gradients_equal_eager; inductor's compile time and speed
        # by benchmarks/bench_models.py --compile (docs/benchmarks.md).
        cfg.compile = dict(backend='eager')
    return cfg


class _IterTimes:
    """Wall time of each training iteration (a hook appended to the runner)."""

    priority = 'VERY_LOW'

    def __init__(self):
        self.times, self._start = [], None

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self._start = time.perf_counter()

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.times.append(time.perf_counter() - self._start)


def train_toy(data_root, work_dir, max_iters, compile_):
    """Train; returns (runner, weights before, per-iteration seconds, losses)."""
    from mmengine.hooks import Hook

    runner = Runner.from_cfg(toy_cfg(data_root, work_dir, max_iters, compile_))
    times = type('IterTimes', (_IterTimes, Hook), {})()
    runner.register_hook(times, priority='VERY_LOW')
    before = {k: v.detach().clone() for k, v in runner.model.state_dict().items()}
    runner.train()
    losses = runner.message_hub.get_scalar('train/loss').data[0]
    return runner, before, times.times, losses


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.skipif(not library.AVAILABLE, reason='torch.library.custom_op needs torch >= 2.4')
def test_toy_config_trains_with_compile_true(tmp_path):
    torch._dynamo.reset()
    make_toy_dataset(str(tmp_path / 'toy'), num_train=4, num_val=2, size=64)
    # One iteration: each further one recompiles (the scheduled lr and the batch metadata
    # change) without testing more.
    runner, before, times, losses = train_toy(tmp_path / 'toy', tmp_path / 'work', 1, True)
    # the Runner compiled train_step (dynamo's wrapper keeps the original function)
    assert hasattr(runner.model.train_step, '_torchdynamo_orig_callable')
    assert len(times) == 1 and len(losses) == 1
    assert all(math.isfinite(v) for v in losses)
    changed = sum(not torch.equal(v, runner.model.state_dict()[k])
                  for k, v in before.items() if v.is_floating_point())
    assert changed > 100  # the optimiser stepped every weight group
    assert (tmp_path / 'work' / 'iter_1.pth').is_file()
    print(f'compile=True iteration times (s): {[round(t, 2) for t in times]}')
    torch._dynamo.reset()
