"""Weights-only checkpoint loading (local, URL, mmengine's loaders inside the plugin's
context), readable-checkpoint errors, and CPU multi-process training (gloo process group,
DDP wrapper, collective timeout, workers that follow their launcher)."""
import gc
import os
import pickle
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from make_toy_dataset import make_toy_dataset
from mmengine.logging import HistoryBuffer, MessageHub

from mmseg_segman.engine.dist import (
    CPU_DIST_TIMEOUT_S,
    destroy_cpu_process_group,
    exit_with_launcher,
    init_cpu_process_group,
)
from mmseg_segman.errors import CheckpointReadError, CheckpointRefusedError
from mmseg_segman.utils.checkpoint_io import load_checkpoint_file, weights_only_checkpoints

REPO_ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------
# weights-only loading
# --------------------------------------------------------------------------------------
def _training_state():
    """What Runner.save_checkpoint writes besides the weights (message hub, meta)."""
    hub = MessageHub(name='compat-test')
    for i, loss in enumerate([1.5, 1.25, np.float64(0.75)]):
        hub.update_scalar('train/loss', loss)
        hub.update_scalar('train/lr', 1e-3 * (i + 1))
    hub.update_info('iter', 3)
    hub.update_info('dataset_meta', dict(classes=('a', 'b'), palette=[[0, 0, 0]]))
    return dict(
        meta=dict(iter=3, seed=np.int64(7), cfg='model = dict()'),
        state_dict={'w': torch.randn(2, 2)},
        message_hub=hub.state_dict())


def test_mmengine_training_state_round_trips_weights_only(tmp_path):
    state = _training_state()
    torch.save(state, tmp_path / 'ckpt.pth')
    loaded = load_checkpoint_file(str(tmp_path / 'ckpt.pth'))
    assert torch.equal(loaded['state_dict']['w'], state['state_dict']['w'])
    assert loaded['meta']['seed'] == 7
    buf = loaded['message_hub']['log_scalars']['train/loss']
    assert isinstance(buf, HistoryBuffer)
    np.testing.assert_array_equal(buf.data[0], [1.5, 1.25, 0.75])
    assert buf.statistics('mean') == pytest.approx((1.5 + 1.25 + 0.75) / 3)
    assert loaded['message_hub']['runtime_info']['iter'] == 3


def test_training_state_needs_the_allow_list(tmp_path):
    """torch alone refuses the same file: the allow-list is what fixes it, and it is
    passed to the plugin's loads only (nothing is registered process-wide)."""
    torch.save(_training_state(), tmp_path / 'ckpt.pth')
    with pytest.raises(pickle.UnpicklingError, match='Unsupported global'):
        torch.load(tmp_path / 'ckpt.pth', weights_only=True)


def test_restricted_unpickler_of_old_torch(tmp_path, monkeypatch):
    """torch < 2.5 has no safe_globals context: the restricted unpickler takes over, with
    the same verdicts (the training state loads, a code-running pickle is refused)."""
    monkeypatch.delattr(torch.serialization, 'safe_globals')
    state = _training_state()
    torch.save(state, tmp_path / 'ckpt.pth')
    loaded = load_checkpoint_file(str(tmp_path / 'ckpt.pth'))
    assert torch.equal(loaded['state_dict']['w'], state['state_dict']['w'])
    assert loaded['message_hub']['log_scalars']['train/loss'].statistics('mean') == \
        pytest.approx((1.5 + 1.25 + 0.75) / 3)
    marker = tmp_path / 'pwned'
    torch.save({'x': _Reduce(os.system, f'touch {marker}')}, tmp_path / 'evil.pth')
    with pytest.raises(CheckpointRefusedError, match='system'):
        load_checkpoint_file(str(tmp_path / 'evil.pth'))
    assert not marker.exists()


class _Reduce:
    """Pickles as ``func(*args)``: the shape of every code-running pickle."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def test_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / 'pwned'
    torch.save({'x': _Reduce(os.system, f'touch {marker}')}, tmp_path / 'evil.pth')
    with pytest.raises(pickle.UnpicklingError, match='system'):
        load_checkpoint_file(str(tmp_path / 'evil.pth'))
    assert not marker.exists()


@pytest.mark.parametrize('owner, name', [
    (HistoryBuffer, '__init__'),         # a function, whose __globals__ reach os
    (HistoryBuffer.mean, '__globals__'),
    (HistoryBuffer, 'register_statistics'),  # would let a pickle register callables
    (np.ndarray, 'tofile'),              # writes files
])
def test_getattr_in_checkpoints_is_narrow(tmp_path, owner, name):
    torch.save({'x': _Reduce(getattr, owner, name)}, tmp_path / 'evil.pth')
    with pytest.raises(pickle.UnpicklingError, match='refused getattr'):
        load_checkpoint_file(str(tmp_path / 'evil.pth'))


def test_getattr_resolves_history_buffer_statistics(tmp_path):
    # The positive control for the refusals above: the one use mmengine makes of it.
    torch.save({'x': _Reduce(getattr, HistoryBuffer, 'mean')}, tmp_path / 'ok.pth')
    assert load_checkpoint_file(str(tmp_path / 'ok.pth'))['x'] is HistoryBuffer.mean


def test_object_arrays_are_not_allow_listed(tmp_path):
    torch.save({'x': np.array([1, 'a'], dtype=object)}, tmp_path / 'obj.pth')
    with pytest.raises(pickle.UnpicklingError):
        load_checkpoint_file(str(tmp_path / 'obj.pth'))


# --------------------------------------------------------------------------------------
# distributed training without CUDA
# --------------------------------------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason='the CPU paths are for no-CUDA')
def test_cpu_ddp_wrapper_drops_device_ids_and_sync_bn(tmp_path):
    from mmengine.registry import MODEL_WRAPPERS

    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/store', rank=0,
                            world_size=1)
    try:
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.SyncBatchNorm(4))
        # As Runner.wrap_model builds it from the config's model_wrapper_cfg.
        with pytest.warns(UserWarning, match='SyncBatchNorm cannot synchronise'):
            ddp = MODEL_WRAPPERS.build(
                dict(type='mmseg.CPUAwareDistributedDataParallel',
                     broadcast_buffers=False),
                default_args=dict(module=model, device_ids=[0]))
        assert ddp.device_ids is None
        assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in ddp.modules())
        x = torch.randn(2, 3, 4, 4)
        out = ddp(x)
        # Training-mode BN output: per-channel zero mean over the batch.
        assert out.mean(dim=(0, 2, 3)).abs().max() < 1e-5
        out.sum().backward()
        # The reducer holds the process group: free it before the group is destroyed
        # (gloo's destructor joins its threads and would wait forever otherwise).
        del ddp, out
        gc.collect()
    finally:
        dist.destroy_process_group()


def _gloo_threads():
    """Names of this process's threads that gloo's process group runs."""
    names = []
    for comm in Path('/proc/self/task').glob('*/comm'):
        try:
            name = comm.read_text().strip()
        except OSError:  # the thread ended meanwhile
            continue
        if 'gloo' in name:
            names.append(name)
    return sorted(names)


@pytest.mark.skipif(torch.cuda.is_available() or not Path('/proc/self/task').is_dir(),
                    reason='the CPU (gloo) set-up; thread names from Linux /proc')
def test_destroying_the_group_stops_gloo_threads_a_finished_runner_still_holds(
        tmp_path):
    """At the end of tools/train.py the finished Runner is in a reference cycle whose DDP
    reducer owns the gloo group: destroy_cpu_process_group frees it, with its threads,
    before the interpreter's own teardown."""
    before = _gloo_threads()
    dist.init_process_group('gloo', init_method=f'file://{tmp_path}/store', rank=0,
                            world_size=1)
    runner = {}
    runner['self'] = runner  # a cycle, as the Runner's own
    runner['model'] = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(3, 2))
    runner['model'](torch.randn(4, 3)).sum().backward()
    del runner
    assert len(_gloo_threads()) > len(before)  # the group's threads run
    assert destroy_cpu_process_group() is True
    assert not dist.is_initialized()
    assert _gloo_threads() == before


# --------------------------------------------------------------------------------------
# checkpoints from http(s) URLs: weights-only, like local files
# --------------------------------------------------------------------------------------
@pytest.fixture
def loopback_server(tmp_path):
    """Serve ``tmp_path/served`` on 127.0.0.1 for one test; yields (base URL, folder)."""
    import functools
    import http.server
    import threading

    served = tmp_path / 'served'
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f'http://127.0.0.1:{server.server_address[1]}', served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """torch's download cache (TORCH_HOME) inside the test's folder."""
    cache = tmp_path / 'torch_home'
    monkeypatch.setenv('TORCH_HOME', str(cache))
    monkeypatch.setattr(torch.hub, '_hub_dir', None)
    return cache


def _evil_checkpoint(path, marker):
    torch.save({'state_dict': {'w': torch.ones(2)},
                'x': _Reduce(os.system, f'touch {marker}')}, path)


def test_url_checkpoint_runs_no_code(loopback_server, hub_cache, tmp_path):
    from mmengine.runner.checkpoint import CheckpointLoader, _load_checkpoint

    base, served = loopback_server
    marker = tmp_path / 'pwned'
    _evil_checkpoint(served / 'evil.pth', marker)
    schemes = dict(CheckpointLoader._schemes)
    for load in (_load_checkpoint, CheckpointLoader.load_checkpoint):
        with weights_only_checkpoints(), pytest.raises(CheckpointRefusedError) as info:
            load(f'{base}/evil.pth', map_location='cpu')
        assert not marker.exists()
        message = str(info.value)
        assert f'{base}/evil.pth' in message and 'posix.system' in message
        assert 're-save its tensors' in message  # how to proceed if trusted
    # The context restores mmengine's own loaders exactly.
    assert CheckpointLoader._schemes == schemes
    # It was downloaded to torch's cache, once (the second load read the cached file).
    assert (hub_cache / 'hub' / 'checkpoints' / 'evil.pth').is_file()

    # The positive control: a plain checkpoint at a URL loads.
    weights = {'w': torch.arange(4.)}
    torch.save({'state_dict': weights}, served / 'good.pth')
    with weights_only_checkpoints():
        loaded = _load_checkpoint(f'{base}/good.pth', map_location='cpu')
    assert torch.equal(loaded['state_dict']['w'], weights['w'])


def test_torchvision_scheme_is_refused_in_the_context(loopback_server, hub_cache, tmp_path,
                                                     monkeypatch):
    import mmengine.runner.checkpoint as ckpt_module

    base, served = loopback_server
    marker = tmp_path / 'pwned'
    _evil_checkpoint(served / 'resnet.pth', marker)
    monkeypatch.setattr(ckpt_module, 'get_torchvision_models',
                        lambda: {'resnet': f'{base}/resnet.pth'})
    # mmengine downloads torchvision:// with weights_only=False: refused, with the way out.
    with weights_only_checkpoints(), pytest.raises(CheckpointRefusedError,
                                                   match='torchvision://resnet.*local path'):
        ckpt_module._load_checkpoint('torchvision://resnet', map_location='cpu')
    assert not marker.exists()


@pytest.mark.parametrize('backbone', [
    dict(type='SegMANEncoder', arch='t'),
    dict(type='SegNeXtMSCAN', arch='t'),
    dict(type='LRFormer', arch='t'),
])
def test_backbone_pretrained_url_runs_no_code(loopback_server, hub_cache, tmp_path,
                                              backbone):
    from mmseg.registry import MODELS

    base, served = loopback_server
    marker = tmp_path / 'pwned'
    _evil_checkpoint(served / 'pretrained.pth', marker)
    model = MODELS.build(dict(backbone, init_cfg=dict(type='Pretrained',
                                                      checkpoint=f'{base}/pretrained.pth')))
    with pytest.raises(CheckpointRefusedError, match='pretrained.pth'):
        model.init_weights()
    assert not marker.exists()


def test_tools_test_with_url_checkpoint_refuses_in_one_message(loopback_server, tmp_path):
    base, served = loopback_server
    marker = tmp_path / 'pwned'
    _evil_checkpoint(served / 'evil.pth', marker)
    make_toy_dataset(str(tmp_path / 'toy'), num_train=1, num_val=1, size=32)
    options = [f'{k}.dataset.data_root={tmp_path / "toy"}' for k in ('test_dataloader', )]
    options += ['test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False']
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / 'tools' / 'test.py'),
         str(REPO_ROOT / 'configs' / 'toy' / 'fcn-r18-narrow_toy.py'), f'{base}/evil.pth',
         '--work-dir', str(tmp_path / 'work'), '--cfg-options', *options],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, 'TORCH_HOME': str(tmp_path / 'th')})
    assert result.returncode == 1, result.stderr[-3000:]
    assert not marker.exists()
    assert 'Traceback' not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f'error: checkpoint {base}/evil.pth') and 'refused' in last


def test_unreadable_checkpoints_are_named(tmp_path):
    from mmengine.runner.checkpoint import _load_checkpoint

    torch.save({'state_dict': {'w': torch.ones(100)}}, tmp_path / 'good.pth')
    data = (tmp_path / 'good.pth').read_bytes()
    (tmp_path / 'truncated.pth').write_bytes(data[:len(data) // 2])
    (tmp_path / 'empty.pth').write_bytes(b'')
    (tmp_path / 'text.pth').write_text('not a checkpoint')
    for name, reason in (('truncated.pth', 'truncated'), ('empty.pth', 'empty'),
                         ('text.pth', 'not a file written by torch.save')):
        with weights_only_checkpoints(), pytest.raises(CheckpointReadError) as info:
            _load_checkpoint(str(tmp_path / name), map_location='cpu')
        assert str(tmp_path / name) in str(info.value) and reason in str(info.value)


# --------------------------------------------------------------------------------------
# distributed faults: collective timeout, workers that follow their launcher
# --------------------------------------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason='the CPU (gloo) set-up')
def test_cpu_process_group_backend_and_timeout(monkeypatch):
    import datetime

    seen = {}
    monkeypatch.setattr(dist, 'init_process_group', lambda **kw: seen.update(kw))
    monkeypatch.setattr(dist, 'is_initialized', lambda: False)
    monkeypatch.setenv('RANK', '0')
    with pytest.warns(UserWarning, match="'gloo' distributed backend instead of 'nccl'"):
        assert init_cpu_process_group('nccl') is True
    assert seen == dict(backend='gloo',
                        timeout=datetime.timedelta(seconds=CPU_DIST_TIMEOUT_S))
    assert CPU_DIST_TIMEOUT_S <= 600  # far below torch's 30 minutes
    init_cpu_process_group('gloo', timeout_s=7)  # env_cfg.dist_cfg.timeout, in seconds
    assert seen['timeout'] == datetime.timedelta(seconds=7)
    # Outside torchrun (no RANK) nothing happens.
    monkeypatch.delenv('RANK')
    seen.clear()
    assert init_cpu_process_group('gloo') is False and not seen


def test_exit_with_launcher_is_inert_outside_torchrun(monkeypatch):
    monkeypatch.delenv('TORCHELASTIC_RUN_ID', raising=False)
    assert exit_with_launcher() is False


def _tagged_processes(tag):
    """Live (non-zombie) pids whose environment holds ``MMSEG_TEST_TAG=tag``."""
    found = {}
    for entry in Path('/proc').iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / 'environ').read_bytes().split(b'\0')
            state = (entry / 'stat').read_text().rsplit(')', 1)[1].split()[0]
        except OSError:
            continue
        if f'MMSEG_TEST_TAG={tag}'.encode() in environ and state != 'Z':
            env = dict(e.decode(errors='replace').split('=', 1) for e in environ if b'=' in e)
            found[int(entry.name)] = env
    return found


class _DistRun:
    """bash tools/dist_train.sh on the toy data for a long schedule, in 2 CPU processes."""

    def __init__(self, tmp_path, port, *options):
        data = tmp_path / 'toy'
        make_toy_dataset(str(data), num_train=4, num_val=1, size=32)
        opts = ['train_cfg.max_iters=100000', 'train_cfg.val_interval=100000',
                'default_hooks.checkpoint.interval=100000', 'default_hooks.logger.interval=1',
                'train_dataloader.batch_size=2', *options]
        for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
            opts += [f'{loader}.dataset.data_root={data}', f'{loader}.num_workers=0',
                     f'{loader}.persistent_workers=False']
        self.tag = f'{os.getpid()}-{tmp_path.name}'
        self.log = tmp_path / 'log.txt'
        env = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHON': sys.executable,
               'PORT': str(port), 'MMSEG_TEST_TAG': self.tag}
        with open(self.log, 'w') as log:
            self.proc = subprocess.Popen(
                ['bash', str(REPO_ROOT / 'tools' / 'dist_train.sh'),
                 str(REPO_ROOT / 'configs' / 'toy' / 'fcn-r18-narrow_toy.py'), '2',
                 '--work-dir', str(tmp_path / 'work'), '--cfg-options', *opts],
                cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)

    def wait_training(self, timeout=240):
        import time

        deadline = time.time() + timeout
        while time.time() < deadline and self.proc.poll() is None:
            if self.log.read_text(errors='replace').count('Iter(train) [') >= 3:
                return
            time.sleep(0.5)
        raise AssertionError('training did not start:\n' + self.log.read_text()[-3000:])

    def workers(self):
        return {pid: env for pid, env in _tagged_processes(self.tag).items()
                if 'LOCAL_RANK' in env and pid != self.proc.pid}

    def close(self):
        # Only the processes this test started (tagged), by pid.
        alive = [self.proc.pid] if self.proc.poll() is None else []
        for pid in dict.fromkeys(alive + list(_tagged_processes(self.tag))):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=30)


def _wait_until(condition, timeout):
    import time

    start = time.time()
    while time.time() - start < timeout:
        if condition():
            return time.time() - start
        time.sleep(0.25)
    return None


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='PR_SET_PDEATHSIG')
def test_workers_exit_when_the_launcher_is_killed(tmp_path, free_port):
    run = _DistRun(tmp_path, free_port())
    try:
        run.wait_training()
        workers = run.workers()
        assert sorted(env['RANK'] for env in workers.values()) == ['0', '1']
        os.kill(run.proc.pid, signal.SIGKILL)  # the script exec'd torchrun: same pid
        run.proc.wait(timeout=30)
        gone = _wait_until(lambda: not (set(workers) & set(run.workers())), timeout=30)
        assert gone is not None, f'orphaned workers still running: {run.workers()}'
    finally:
        run.close()


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.skipif(torch.cuda.is_available(), reason='the CPU (gloo) timeout')
def test_stopped_worker_fails_the_run_within_the_timeout(tmp_path, free_port):
    timeout_s = 10
    run = _DistRun(tmp_path, free_port(), f'env_cfg.dist_cfg.timeout={timeout_s}')
    try:
        run.wait_training()
        ranks = {env['RANK']: pid for pid, env in run.workers().items()}
        assert sorted(ranks) == ['0', '1']
        os.kill(ranks['1'], signal.SIGSTOP)
        # Rank 0 times out after timeout_s (without the timeout: 30 minutes) and exits. gloo
        # words it 'Timed out waiting 10000ms' or 'Application timeout caused pair closure',
        # depending on where rank 0 was waiting.
        failed = _wait_until(lambda: ranks['0'] not in run.workers(), timeout=timeout_s + 60)
        log = run.log.read_text(errors='replace')
        assert failed is not None, 'rank 0 did not time out:\n' + log[-3000:]
        assert re.search(r'[Tt]ime(d out|out)', log), log[-3000:]
        # torchrun then stops the group with SIGTERM, which a stopped process only takes once
        # continued (else torchrun waits 30 s and SIGKILLs it): continue it, as a process
        # that was only slow would be.
        os.kill(ranks['1'], signal.SIGCONT)
        ended = _wait_until(lambda: run.proc.poll() is not None, timeout=60)
        assert ended is not None, 'the run did not end'
        assert run.proc.returncode != 0
        assert _wait_until(lambda: not run.workers(), timeout=30) is not None
    finally:
        run.close()


def test_onnx_exporter_reports_a_refused_checkpoint_in_one_line(tmp_path, capsys):
    import importlib.util

    tool_path = REPO_ROOT / 'tools' / 'deployment' / 'pytorch2onnx.py'
    spec = importlib.util.spec_from_file_location('pytorch2onnx_tool', tool_path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    marker = tmp_path / 'pwned'
    _evil_checkpoint(tmp_path / 'evil.pth', marker)
    status = tool.main([str(REPO_ROOT / 'configs' / 'toy' / 'fcn-r18-narrow_toy.py'),
                        str(tmp_path / 'evil.pth'), '--shape', '32', '32', '--output',
                        str(tmp_path / 'x.onnx')])
    err = capsys.readouterr().err
    assert status == 2 and not marker.exists() and not (tmp_path / 'x.onnx').exists()
    assert err.startswith(f'error: checkpoint {tmp_path / "evil.pth"} was refused')
    assert 'Traceback' not in err


def test_codecs_encode_in_checkpoints_is_narrow(tmp_path, monkeypatch):
    """numpy 1.x writes array bytes as _codecs.encode(text, 'latin1'): that loads, and in
    the restricted unpickler of old torch any other use of _codecs.encode is refused."""
    import codecs

    torch.save({'x': _Reduce(codecs.encode, 'a\xff', 'latin1')}, tmp_path / 'ok.pth')
    assert load_checkpoint_file(str(tmp_path / 'ok.pth'))['x'] == b'a\xff'
    monkeypatch.delattr(torch.serialization, 'safe_globals', raising=False)
    assert load_checkpoint_file(str(tmp_path / 'ok.pth'))['x'] == b'a\xff'
    torch.save({'x': _Reduce(codecs.encode, 'abc', 'rot13')}, tmp_path / 'odd.pth')
    with pytest.raises(CheckpointRefusedError, match='latin1'):
        load_checkpoint_file(str(tmp_path / 'odd.pth'))
