"""Exact resume (RandomStateHook), atomic checkpoint writes, resume fallback.

The end-to-end tests run ``tools/train.py`` in subprocesses on the toy data: an
uninterrupted 20-iteration run against one that is SIGKILLed after its iteration-10
checkpoint and resumed with ``--resume``. Dropout (the FCN head's) and the toy pipeline's
whole augmentation (random resize, crop, flip, photometric distortion) are on, and
validation runs right after the checkpoint; the resumed weights, optimizer state and
every logged loss must equal the uninterrupted run's bit for bit.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config

from mmseg_segman.engine.hooks.random_state import capture_random_state, restore_random_state
from mmseg_segman.errors import CheckpointReadError
from mmseg_segman.utils.checkpoint_io import (
    ATOMIC_BACKEND,
    checkpoint_is_readable,
    find_latest_loadable_checkpoint,
    load_checkpoint_file,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
# torch's own switch, where torch can be told the extra types per load (>= 2.5); older
# torch cannot, and the plugin's restricted unpickler is the weights-only load there.
FORCE_WEIGHTS_ONLY = ({'TORCH_FORCE_WEIGHTS_ONLY_LOAD': '1'}
                      if hasattr(torch.serialization, 'safe_globals') else {})
TOY_CONFIG = REPO_ROOT / 'configs' / 'toy' / 'fcn-r18-narrow_toy.py'
from make_toy_dataset import make_toy_dataset  # noqa: E402

# A hook that, at one iteration, says so in a file and then waits to be killed.
PAUSE_HOOK = '''
import os, time
from mmengine.hooks import Hook
from mmseg.registry import HOOKS

@HOOKS.register_module()
class PauseForKillHook(Hook):
    priority = 'LOWEST'  # after CheckpointHook has written the checkpoint

    def __init__(self, at_iter, marker):
        self.at_iter, self.marker = at_iter, marker

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if runner.iter + 1 == self.at_iter:
            open(self.marker, 'w').close()
            time.sleep(120)
'''


def draw_everything():
    return (np.random.rand(3).tolist(), __import__('random').random(),
            torch.rand(3).tolist())


def test_random_state_round_trips_weights_only(tmp_path):
    state = capture_random_state()
    expected = draw_everything()
    torch.save({'random_state': state}, tmp_path / 's.pth')
    draw_everything()  # move every generator on
    # Plain tensors, numbers, strings and tuples: readable with torch's default allow-list
    # alone (the plugin registers no safe globals).
    loaded = torch.load(tmp_path / 's.pth', weights_only=True)['random_state']
    assert sorted(loaded) == ['cuda', 'numpy', 'python', 'torch']
    restore_random_state(torch.load(tmp_path / 's.pth', weights_only=True)['random_state'])
    assert draw_everything() == expected


def test_default_runtime_enables_the_hook():
    cfg = Config.fromfile(str(REPO_ROOT / 'configs' / '_base_' / 'default_runtime.py'))
    assert 'RandomStateHook' in [h['type'] for h in cfg.custom_hooks]


# --------------------------------------------------------------------------------------
# atomic writes and the resume fallback (in-process)
# --------------------------------------------------------------------------------------
class _FailsHalfway:
    """Pickling this raises after the tensors before it were written."""

    def __reduce__(self):
        raise RuntimeError('interrupted')


def test_interrupted_checkpoint_write_leaves_the_old_file(tmp_path):
    from mmengine.fileio import get_file_backend
    from mmengine.runner.checkpoint import save_checkpoint

    atomic = dict(backend=ATOMIC_BACKEND)
    target = tmp_path / 'iter_20.pth'
    save_checkpoint({'w': torch.ones(3)}, str(target), backend_args=atomic)
    before = target.read_bytes()
    # mmengine serialises into memory, then hands the bytes to the backend's `put`: a kill
    # during the write is a partial `put`, which the backend makes invisible.
    backend = get_file_backend(str(target), backend_args=atomic)

    class Interrupted(Exception):
        pass

    real_fsync = os.fsync

    def fsync_then_die(fd):
        real_fsync(fd)
        raise Interrupted

    os.fsync = fsync_then_die
    try:
        with pytest.raises(Interrupted):
            backend.put(b'x' * 1000, str(target))
    finally:
        os.fsync = real_fsync
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['iter_20.pth']  # no temp file
    # The config selects the backend for the checkpoint hook of every shipped schedule.
    cfg = Config.fromfile(str(TOY_CONFIG))
    assert cfg.default_hooks.checkpoint.backend_args == atomic


def _write_ckpt(path, iteration):
    weights = {'w': torch.full((64, ), float(iteration))}
    torch.save({'meta': {'iter': iteration}, 'state_dict': weights}, path)


def test_resume_falls_back_to_the_newest_checkpoint_that_loads(tmp_path):
    warnings = []

    for i in (10, 20, 30):
        _write_ckpt(tmp_path / f'iter_{i}.pth', i)
    whole = (tmp_path / 'iter_30.pth').read_bytes()
    (tmp_path / 'iter_30.pth').write_bytes(whole[:len(whole) // 2])  # killed mid-write
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_30.pth'))
    found = find_latest_loadable_checkpoint(str(tmp_path), warn=warnings.append)
    assert found == str(tmp_path / 'iter_20.pth')
    assert 'iter_30.pth cannot be used' in warnings[0]
    assert torch.load(found)['meta']['iter'] == 20

    # A damaged byte inside (same size) is found by the CRC check too.
    data = bytearray((tmp_path / 'iter_20.pth').read_bytes())
    offset = data.find(torch.full((64, ), 20.).numpy().tobytes())
    assert offset > 0
    data[offset] ^= 0xFF
    (tmp_path / 'iter_20.pth').write_bytes(bytes(data))
    assert checkpoint_is_readable(str(tmp_path / 'iter_20.pth')) is not None
    assert find_latest_loadable_checkpoint(str(tmp_path)) == str(tmp_path / 'iter_10.pth')


def test_resume_with_no_usable_checkpoint_names_them(tmp_path):
    (tmp_path / 'iter_10.pth').write_bytes(b'')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_10.pth'))
    with pytest.raises(CheckpointReadError, match=r'iter_10\.pth.*empty'):
        find_latest_loadable_checkpoint(str(tmp_path))
    # Nothing saved yet: a fresh start, as in mmengine.
    empty = tmp_path / 'fresh'
    empty.mkdir()
    assert find_latest_loadable_checkpoint(str(empty)) is None


# --------------------------------------------------------------------------------------
# end to end: uninterrupted vs SIGKILL + --resume
# --------------------------------------------------------------------------------------
def _options(data_root, workers, seed):
    opts = {
        'train_cfg.max_iters': 20, 'train_cfg.val_interval': 10,
        'default_hooks.checkpoint.interval': 10, 'default_hooks.logger.interval': 1,
        'train_dataloader.batch_size': 2, 'randomness.seed': seed,
    }
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        opts[f'{loader}.dataset.data_root'] = str(data_root)
        opts[f'{loader}.num_workers'] = 0
        opts[f'{loader}.persistent_workers'] = False
    opts['train_dataloader.num_workers'] = workers
    opts['train_dataloader.persistent_workers'] = workers > 0
    return ['--cfg-options'] + [f'{k}={v}' for k, v in opts.items()]


def _config(tmp_path, name, extra_hooks=''):
    # The list is spelled out so the hooks under test (and only they) run.
    path = tmp_path / f'{name}.py'
    path.write_text(
        f'_base_ = [{str(TOY_CONFIG)!r}]\n'
        "custom_imports = dict(imports=['mmseg_segman', 'pause_hook'], "
        'allow_failed_imports=False)\n'
        "custom_hooks = [dict(type='CheckpointGuardHook'), dict(type='RandomStateHook')" +
        extra_hooks + ']\n')
    return path


def _env(tmp_path):
    path = [str(tmp_path)] + ([os.environ['PYTHONPATH']] if os.environ.get('PYTHONPATH') else [])
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(path), 'OMP_NUM_THREADS': '1',
           'PYTHON': sys.executable, **FORCE_WEIGHTS_ONLY}
    env.pop('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', None)
    return env


def _train(tmp_path, config, work_dir, options, *extra):
    cmd = [sys.executable, str(REPO_ROOT / 'tools' / 'train.py'), str(config),
           '--work-dir', str(work_dir), *extra, *options]
    result = subprocess.run(cmd, cwd=tmp_path, env=_env(tmp_path), capture_output=True,
                            text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def _assert_same_run(a, b):
    a, b = load_checkpoint_file(str(a)), load_checkpoint_file(str(b))
    assert a['meta']['iter'] == b['meta']['iter'] == 20
    assert a['state_dict'].keys() == b['state_dict'].keys()
    for k in a['state_dict']:
        assert torch.equal(a['state_dict'][k], b['state_dict'][k]), k
    for pa, pb in zip(a['optimizer']['state'].values(), b['optimizer']['state'].values()):
        assert all(torch.equal(pa[k], pb[k]) for k in pa)
    losses = [c['message_hub']['log_scalars']['train/loss'].data[0] for c in (a, b)]
    assert len(losses[0]) == len(losses[1]) == 20
    np.testing.assert_array_equal(losses[0], losses[1])  # every iteration, exactly
    for key in ('torch', 'numpy', 'python'):
        sa, sb = a['random_state']['ranks'][0][key], b['random_state']['ranks'][0][key]
        assert str(sa) == str(sb)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.smoke
def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path):
    """Two persistent dataloader workers: their replay must land where they were."""
    data = tmp_path / 'toy'
    make_toy_dataset(str(data), num_train=4, num_val=2, size=32)
    (tmp_path / 'pause_hook.py').write_text(PAUSE_HOOK)
    options = _options(data, workers=2, seed=0)
    plain = _config(tmp_path, 'plain')
    _train(tmp_path, plain, tmp_path / 'straight', options)

    marker = tmp_path / 'at_iter_12'
    pausing = _config(tmp_path, 'pausing', ", dict(type='PauseForKillHook', at_iter=12, "
                      f'marker={str(marker)!r})')
    work = tmp_path / 'killed'
    proc = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / 'tools' / 'train.py'), str(pausing), '--work-dir',
         str(work), *options], cwd=tmp_path, env=_env(tmp_path),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not marker.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert marker.exists(), 'the run did not reach iteration 12'
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert (work / 'iter_10.pth').is_file() and not (work / 'iter_20.pth').exists()

    log = _train(tmp_path, plain, work, options, '--resume')
    assert 'resumed epoch: 0, iter: 10' in log
    _assert_same_run(tmp_path / 'straight' / 'iter_20.pth', work / 'iter_20.pth')


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_resume_after_a_truncated_checkpoint_unseeded(tmp_path):
    """A truncated newest checkpoint, and a resumed run that draws another seed."""
    data = tmp_path / 'toy'
    make_toy_dataset(str(data), num_train=4, num_val=2, size=32)
    (tmp_path / 'pause_hook.py').write_text('')
    # randomness.seed=None: every run draws its own seed, so only a copy of this run's
    # files can be resumed into the same run.
    options = _options(data, workers=0, seed='None')
    plain = _config(tmp_path, 'plain')
    _train(tmp_path, plain, tmp_path / 'straight', options)
    reference = (tmp_path / 'straight' / 'iter_20.pth').read_bytes()

    # What a kill during a non-atomic write of iter_20 leaves, with last_checkpoint
    # already pointing at it.
    work = tmp_path / 'damaged'
    work.mkdir()
    (work / 'iter_10.pth').write_bytes((tmp_path / 'straight' / 'iter_10.pth').read_bytes())
    (work / 'iter_20.pth').write_bytes(reference[:len(reference) // 3])
    (work / 'last_checkpoint').write_text(str(work / 'iter_20.pth'))
    # The run must restart from 10, not from the damaged 20, and end as the original.
    log = _train(tmp_path, plain, work, options, '--resume')
    assert 'cannot be used' in log and 'newest checkpoint that loads' in log
    assert 'resumed epoch: 0, iter: 10' in log
    assert 'rebuilding it with' in log  # the dataloader follows the checkpoint's seed
    _assert_same_run(tmp_path / 'straight' / 'iter_20.pth', work / 'iter_20.pth')


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(torch.cuda.is_available(), reason='two CPU (gloo) processes')
@pytest.mark.torchrun_alone
def test_two_process_resume_equals_uninterrupted_run(tmp_path, free_port):
    """Every rank's random state is gathered into the checkpoint and given back."""
    data = tmp_path / 'toy'
    make_toy_dataset(str(data), num_train=4, num_val=2, size=32)
    (tmp_path / 'pause_hook.py').write_text('')
    options = _options(data, workers=0, seed=0)
    plain = _config(tmp_path, 'plain')

    def dist_train(work_dir, *extra):
        env = {**_env(tmp_path), 'PORT': str(free_port())}
        result = subprocess.run(
            ['bash', str(REPO_ROOT / 'tools' / 'dist_train.sh'), str(plain), '2',
             '--work-dir', str(work_dir), *extra, *options],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result.stdout + result.stderr

    dist_train(tmp_path / 'straight')
    saved = load_checkpoint_file(str(tmp_path / 'straight' / 'iter_10.pth'))
    assert saved['random_state']['world_size'] == 2
    assert len(saved['random_state']['ranks']) == 2
    work = tmp_path / 'resumed'
    work.mkdir()
    (work / 'iter_10.pth').write_bytes((tmp_path / 'straight' / 'iter_10.pth').read_bytes())
    (work / 'last_checkpoint').write_text(str(work / 'iter_10.pth'))
    log = dist_train(work, '--resume')
    assert 'resumed epoch: 0, iter: 10' in log and 'RandomStateHook:' not in log
    _assert_same_run(tmp_path / 'straight' / 'iter_20.pth', work / 'iter_20.pth')
