"""BatchSizeCheckHook: a warning at training start when the total batch is not the recipe's."""
import itertools
import logging
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import DataLoader

import mmseg_segman  # noqa: F401  (registers the hook)
from mmseg_segman.engine.hooks import BatchSizeCheckHook


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


_LOGGER_IDS = itertools.count()


@pytest.fixture
def warnings_of_current_logger():
    """Messages the plugin logs to MMEngine's current logger during the test."""
    # A new name each time: MMLogger's "current" instance is the most recently created one,
    # so a name made by an earlier test would not be current after a Runner made its own.
    logger = MMLogger.get_instance(f'batch_size_check_test_{next(_LOGGER_IDS)}')
    handler = Records()
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)


def fake_runner(world_size, batch_size, accumulative_counts=None):
    optim = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.1))
    if accumulative_counts is not None:
        optim['accumulative_counts'] = accumulative_counts
    return SimpleNamespace(world_size=world_size, cfg=Config(dict(optim_wrapper=optim)),
                           train_dataloader=DataLoader(list(range(64)), batch_size=batch_size))


@pytest.mark.parametrize('world_size, batch_size, accum, warns', [
    (4, 4, None, False),   # the SegMAN recipe: 4 GPUs x 4
    (8, 2, None, False),   # another launch with the same total
    (2, 4, 2, False),      # gradient accumulation makes up the total
    (1, 4, None, True),    # SegMAN #38: one GPU, per-GPU batch kept
    (2, 4, None, True),
    (8, 4, None, True),    # too large
    (4, 4, 2, True),
])
def test_hook_warns_exactly_when_the_total_differs(world_size, batch_size, accum, warns,
                                                   warnings_of_current_logger):
    hook = BatchSizeCheckHook(total_batch_size=16)
    hook.before_train(fake_runner(world_size, batch_size, accum))
    if not warns:
        assert warnings_of_current_logger == []
        return
    [msg] = warnings_of_current_logger
    actual = world_size * batch_size * (accum or 1)
    assert f'total batch of {actual}' in msg and 'total batch of 16' in msg
    assert f'train_dataloader.batch_size={batch_size}' in msg
    # the fix names the key and the value that gives the recipe's total on this launch
    if 16 % (world_size * (accum or 1)) == 0:
        assert f'set train_dataloader.batch_size={16 // (world_size * (accum or 1))}' in msg


def test_hook_says_when_the_total_cannot_be_split(warnings_of_current_logger):
    BatchSizeCheckHook(total_batch_size=16).before_train(fake_runner(3, 4))
    [msg] = warnings_of_current_logger
    assert 'cannot be split evenly over 3' in msg and 'train_dataloader.batch_size' in msg


def test_hook_off_without_a_total(warnings_of_current_logger):
    BatchSizeCheckHook(total_batch_size=None).before_train(fake_runner(1, 3))
    assert warnings_of_current_logger == []


def test_hook_reads_the_total_from_the_config(warnings_of_current_logger):
    """Leaf configs state ``total_batch_size`` at top level (the hook has no argument)."""
    runner = fake_runner(1, 4)
    runner.cfg.total_batch_size = 16
    BatchSizeCheckHook().before_train(runner)
    [msg] = warnings_of_current_logger
    assert 'total batch of 4' in msg and 'total batch of 16' in msg
    runner.cfg.total_batch_size = 4
    BatchSizeCheckHook().before_train(runner)
    assert len(warnings_of_current_logger) == 1
    runner.cfg.total_batch_size = '16'
    with pytest.raises(ValueError, match='set the config key total_batch_size'):
        BatchSizeCheckHook().before_train(runner)


@pytest.mark.parametrize('bad', [0, -4, 2.5, '16', True])
def test_hook_rejects_a_bad_total(bad):
    with pytest.raises(ValueError, match='total_batch_size must be a positive integer'):
        BatchSizeCheckHook(total_batch_size=bad)


class TinyModel(BaseModel):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(1, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.linear(torch.stack(inputs).float()[:, None])
        return dict(loss=out.pow(2).mean()) if mode == 'loss' else out


@pytest.mark.parametrize('total, warns', [(2, False), (8, True)])
def test_runner_warns_at_training_start(total, warns, tmp_path):
    """Through MMEngine's Runner, the hook built from ``custom_hooks`` as the configs do."""
    runner = Runner(
        model=TinyModel(), work_dir=str(tmp_path),
        train_dataloader=dict(dataset=[dict(inputs=torch.tensor(float(i))) for i in range(8)],
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              batch_size=2, num_workers=0,
                              collate_fn=dict(type='pseudo_collate')),
        train_cfg=dict(by_epoch=False, max_iters=1),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        custom_hooks=[dict(type='BatchSizeCheckHook', total_batch_size=total)],
        default_hooks=dict(checkpoint=None), default_scope='mmengine',
        experiment_name=f'batch_size_check_{total}')
    handler = Records()
    runner.logger.addHandler(handler)
    try:
        runner.train()
    finally:
        runner.logger.removeHandler(handler)
    hits = [m for m in handler.messages if 'BatchSize' in m or 'total batch' in m]
    if warns:
        assert len(hits) == 1
        assert 'total batch of 2 (1 process(es) x train_dataloader.batch_size=2)' in hits[0]
        assert 'total batch of 8' in hits[0]
        assert 'set train_dataloader.batch_size=8' in hits[0]
    else:
        assert hits == []
