"""Evaluation refuses checkpoints whose keys or shapes do not match the model.

Checkpoints are made from the toy FCN config's own model with another ``num_classes``
and from another family's model (SegMAN-T), so the expected differences are known
independently: the classifier's shape, and the key sets of two different models.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

from mmseg_segman.utils.checkpoint import (
    CheckpointMismatchError,
    check_state_dict_matches,
    state_dict_mismatch,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
FCN_TOY = REPO_ROOT / 'configs' / 'toy' / 'fcn-r18-narrow_toy.py'
SEGMAN_TOY = REPO_ROOT / 'configs' / 'toy' / 'segman-t_toy.py'
from make_toy_dataset import make_toy_dataset  # noqa: E402


def build(config, **decode_head):
    cfg = Config.fromfile(str(config))
    cfg.model.decode_head.update(decode_head)
    init_default_scope('mmseg')
    return MODELS.build(cfg.model)


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory):
    """Checkpoints of: the FCN toy model, the same with 5 classes, SegMAN-T (toy)."""
    root = tmp_path_factory.mktemp('ckpts')
    torch.manual_seed(0)
    paths = {}
    for name, config, head in (('same', FCN_TOY, {}), ('classes5', FCN_TOY,
                                                        dict(num_classes=5)),
                               ('segman', SEGMAN_TOY, {})):
        model = build(config, **head)
        paths[name] = root / f'{name}.pth'
        torch.save({'meta': {}, 'state_dict': model.state_dict()}, paths[name])
    return paths


def test_mismatch_agrees_with_torch(checkpoints):
    model = build(FCN_TOY)
    other = torch.load(checkpoints['segman'], weights_only=True)['state_dict']
    mismatch = state_dict_mismatch(model, other)
    # torch's own bookkeeping of the same comparison (shapes aside) as the reference.
    common = {k: v for k, v in other.items()
              if k not in model.state_dict() or v.shape == model.state_dict()[k].shape}
    reference = model.load_state_dict(common, strict=False)
    assert sorted(mismatch.unexpected) == sorted(reference.unexpected_keys)
    assert sorted(mismatch.missing) == sorted(
        k for k in reference.missing_keys if k not in dict.fromkeys(
            k for k, _, _ in mismatch.shapes))
    assert mismatch.missing and mismatch.unexpected

    five = torch.load(checkpoints['classes5'], weights_only=True)['state_dict']
    mismatch = state_dict_mismatch(model, five)
    assert not mismatch.missing and not mismatch.unexpected
    assert [k for k, _, _ in mismatch.shapes] == ['decode_head.conv_seg.weight',
                                                  'decode_head.conv_seg.bias']
    with pytest.raises(CheckpointMismatchError,
                       match=r'x\.pth does not match the model: of its weights, 2 with '
                       r'another shape \(decode_head\.conv_seg\.weight: checkpoint '
                       r'\[5, 64, 1, 1\] vs model \[4, 64, 1, 1\]'):
        check_state_dict_matches(model, five, 'x.pth')
    check_state_dict_matches(model, model.state_dict(), 'same')  # exact: no error


def test_old_bn_checkpoints_without_num_batches_tracked_pass():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    state = {k: v for k, v in model.state_dict().items() if 'num_batches_tracked' not in k}
    check_state_dict_matches(model, state, 'old.pth')


def _test_runner(tmp_path, checkpoint, **options):
    from mmengine.runner import Runner

    data = tmp_path / 'toy'
    if not data.exists():
        make_toy_dataset(str(data), num_train=1, num_val=1, size=32)
    # Unformatted: MMEngine's yapf pass over the config text, 0.3-0.5 s each time the
    # Runner logs or dumps it, is not what these tests check.
    cfg = Config.fromfile(str(FCN_TOY), format_python_code=False)
    cfg.work_dir = str(tmp_path / 'work')
    cfg.load_from = str(checkpoint)
    cfg.test_dataloader.dataset.data_root = str(data)
    cfg.test_dataloader.num_workers = 0
    cfg.test_dataloader.persistent_workers = False
    cfg.merge_from_dict(options)
    return Runner.from_cfg(cfg)


def test_runner_test_refuses_other_num_classes(checkpoints, tmp_path):
    runner = _test_runner(tmp_path, checkpoints['classes5'])
    with pytest.raises(CheckpointMismatchError) as info:
        runner.test()
    message = str(info.value)
    assert str(checkpoints['classes5']) in message
    assert 'decode_head.conv_seg.weight: checkpoint [5, 64, 1, 1] vs model [4, 64, 1, 1]' \
        in message
    assert '--cfg-options strict_load=False' in message


def test_runner_test_opt_out_and_exact_checkpoint(checkpoints, tmp_path):
    metrics = _test_runner(tmp_path, checkpoints['classes5'], strict_load=False).test()
    assert 0.0 <= metrics['mIoU'] <= 100.0
    metrics = _test_runner(tmp_path, checkpoints['same']).test()
    assert 0.0 <= metrics['mIoU'] <= 100.0


def test_training_load_from_stays_non_strict(checkpoints, tmp_path):
    """Fine-tuning from another class count is intended: no error while training."""
    from mmengine.runner import Runner

    data = tmp_path / 'toy'
    make_toy_dataset(str(data), num_train=2, num_val=1, size=32)
    cfg = Config.fromfile(str(FCN_TOY), format_python_code=False)  # as in _test_runner
    cfg.work_dir = str(tmp_path / 'work')
    cfg.load_from = str(checkpoints['classes5'])
    cfg.train_cfg.max_iters = 1
    cfg.train_cfg.val_interval = 100
    cfg.default_hooks.checkpoint.interval = 100
    cfg.train_dataloader.batch_size = 2
    for loader in ('train_dataloader', 'val_dataloader'):
        cfg[loader].dataset.data_root = str(data)
        cfg[loader].num_workers = 0
        cfg[loader].persistent_workers = False
    runner = Runner.from_cfg(cfg)
    runner.train()
    loaded = torch.load(checkpoints['classes5'], weights_only=True)['state_dict']
    # The matching weights were loaded (before one step changed them slightly).
    key = 'backbone.stem.0.weight'
    assert torch.allclose(runner.model.state_dict()[key], loaded[key], atol=0.05)


def test_init_model_is_strict(checkpoints):
    from mmseg_segman.apis import init_model

    with pytest.raises(CheckpointMismatchError, match=r'segman\.pth does not match.*'
                       r'missing from the checkpoint.*not in the model'):
        init_model(str(FCN_TOY), str(checkpoints['segman']), device='cpu')
    model = init_model(str(FCN_TOY), str(checkpoints['segman']), device='cpu',
                       cfg_options={'strict_load': False})
    assert model.decode_head.num_classes == 4
    same = torch.load(checkpoints['same'], weights_only=True)['state_dict']
    model = init_model(str(FCN_TOY), str(checkpoints['same']), device='cpu')
    assert all(torch.equal(v, same[k]) for k, v in model.state_dict().items())


def test_mmseg_init_model_is_left_as_mmseg_wrote_it(checkpoints):
    """The plugin changes nothing of MMSeg: its own init_model still loads non-strictly."""
    from mmseg.apis import init_model

    model = init_model(str(FCN_TOY), str(checkpoints['segman']), device='cpu')
    assert model.decode_head.num_classes == 4


def test_onnx_builder_is_strict(checkpoints):
    from mmseg_segman.deploy import build_segmentor

    with pytest.raises(CheckpointMismatchError, match=r'classes5\.pth.*conv_seg\.weight'):
        build_segmentor(str(FCN_TOY), str(checkpoints['classes5']))
    with pytest.warns(UserWarning, match='2 with another shape'):
        model, _ = build_segmentor(str(FCN_TOY), str(checkpoints['classes5']),
                                   cfg_options={'strict_load': False})
    five = torch.load(checkpoints['classes5'], weights_only=True)['state_dict']
    assert torch.equal(model.state_dict()['backbone.stem.0.weight'],
                       five['backbone.stem.0.weight'])


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_tools_test_prints_one_message(checkpoints, tmp_path):
    data = tmp_path / 'toy'
    make_toy_dataset(str(data), num_train=1, num_val=1, size=32)
    options = ['--cfg-options', f'test_dataloader.dataset.data_root={data}',
               'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False']

    def run(checkpoint, *extra):
        return subprocess.run(
            [sys.executable, str(REPO_ROOT / 'tools' / 'test.py'), str(FCN_TOY),
             str(checkpoint), '--work-dir', str(tmp_path / 'work'), *options, *extra],
            cwd=tmp_path, capture_output=True, text=True, timeout=300,
            env=os.environ)

    refused = run(checkpoints['segman'])
    assert refused.returncode == 1
    assert 'Traceback' not in refused.stderr
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: checkpoint {checkpoints['segman']} does not match")
    assert 'strict_load=False' in last
    accepted = run(checkpoints['segman'], 'strict_load=False')
    assert accepted.returncode == 0, accepted.stderr[-2000:]
    assert re.search(r'mIoU: \d+\.\d+', accepted.stdout + accepted.stderr)
