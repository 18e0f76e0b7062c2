"""End-to-end runs of tools/train.py, tools/test.py, tools/dist_train.sh on the toy data.

Every run is a subprocess, exactly as a user would start it, with a tiny schedule and
tiny images. Weights-only loading is forced on (``TORCH_FORCE_WEIGHTS_ONLY_LOAD``), so a
resume or test that only worked by disabling it would fail here.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import mmseg
import pytest
import torch
from make_toy_dataset import make_toy_dataset

from mmseg_segman.utils.checkpoint_io import load_checkpoint_file

REPO_ROOT = Path(__file__).resolve().parents[2]
# torch's own switch, where torch can be told the extra types per load (>= 2.5); older
# torch cannot, and the plugin's restricted unpickler is the weights-only load there.
FORCE_WEIGHTS_ONLY = ({'TORCH_FORCE_WEIGHTS_ONLY_LOAD': '1'}
                      if hasattr(torch.serialization, 'safe_globals') else {})
TOY_CONFIG = REPO_ROOT / 'configs' / 'toy' / 'fcn-r18-narrow_toy.py'
MMSEG_TOOLS = Path(mmseg.__file__).parent / '.mim' / 'tools'
MIOU = re.compile(r'mIoU: (\d+\.\d+)')



@pytest.fixture(scope='module')
def toy_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('toy')
    make_toy_dataset(str(root), num_train=4, num_val=2, size=32)
    return root


def cfg_options(data_root, max_iters, interval, **extra):
    """--cfg-options for a tiny, worker-free run on ``data_root``."""
    opts = {
        'train_cfg.max_iters': max_iters,
        'train_cfg.val_interval': interval,
        'default_hooks.checkpoint.interval': interval,
        'default_hooks.logger.interval': 1,
        'train_dataloader.batch_size': 2,
        'randomness.seed': 0,
    }
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        opts[f'{loader}.dataset.data_root'] = str(data_root)
        opts[f'{loader}.num_workers'] = 0
        opts[f'{loader}.persistent_workers'] = False
    opts.update(extra)
    return ['--cfg-options'] + [f'{k}={v}' for k, v in opts.items()]


def run(cmd, cwd, timeout=600, **env):
    env = {**os.environ, **FORCE_WEIGHTS_ONLY, 'PYTHON': sys.executable, **env}
    env.pop('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', None)
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, timeout=timeout,
                            capture_output=True, text=True)
    assert result.returncode == 0, (
        f'{cmd} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}')
    return result.stdout + result.stderr


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.smoke
def test_train_checkpoint_resume_with_stock_entry_then_test(toy_root, tmp_path):
    work_dir = tmp_path / 'work'
    log = run([sys.executable, REPO_ROOT / 'tools' / 'train.py', TOY_CONFIG,
               '--work-dir', work_dir, *cfg_options(toy_root, 4, 2)], tmp_path)
    assert len(MIOU.findall(log)) == 2  # validated at iterations 2 and 4
    assert (work_dir / 'iter_4.pth').is_file()

    # Resume through MMSeg's own, unmodified tools/train.py: the plugin arrives
    # through the config's custom_imports alone.
    log = run([sys.executable, MMSEG_TOOLS / 'train.py', TOY_CONFIG, '--work-dir',
               work_dir, '--resume', *cfg_options(toy_root, 6, 2)], tmp_path)
    assert re.search(r'resumed epoch: \d+, iter: 4', log), log[-3000:]
    assert 'Iter(train) [5/6]' in log and 'Iter(train) [1/6]' not in log
    ckpt = load_checkpoint_file(str(work_dir / 'iter_6.pth'))
    assert ckpt['meta']['iter'] == 6
    # The logged loss history continued across the resume instead of restarting.
    loss_history = ckpt['message_hub']['log_scalars']['train/loss'].data[0]
    assert len(loss_history) == 6

    show_dir = tmp_path / 'vis'
    log = run([sys.executable, REPO_ROOT / 'tools' / 'test.py', TOY_CONFIG,
               work_dir / 'iter_6.pth', '--work-dir', tmp_path / 'test',
               '--show-dir', show_dir, *cfg_options(toy_root, 6, 2)], tmp_path)
    miou = float(MIOU.findall(log)[-1])
    assert 0.0 <= miou <= 100.0
    pngs = list(show_dir.rglob('*.png'))
    assert len(pngs) == 2  # one overlay per validation image


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(torch.cuda.is_available(), reason='exercises the no-CUDA path')
@pytest.mark.torchrun_alone
def test_dist_train_two_cpu_processes(toy_root, tmp_path, free_port):
    work_dir = tmp_path / 'work'
    log = run(['bash', REPO_ROOT / 'tools' / 'dist_train.sh', TOY_CONFIG, 2,
               '--work-dir', work_dir, *cfg_options(toy_root, 2, 2)], tmp_path,
              PORT=str(free_port()), OMP_NUM_THREADS='1')
    assert 'Distributed training: True' in log and 'GPU number: 2' in log
    assert "using the 'gloo' distributed backend" in log
    # The 2 validation images are split between the processes: one each.
    assert 'Iter(val) [1/1]' in log
    assert 'SyncBatchNorm cannot synchronise across CPU processes' in log
    assert MIOU.search(log)
    ckpt = load_checkpoint_file(str(work_dir / 'iter_2.pth'))
    assert ckpt['meta']['iter'] == 2
    # BN replaced SyncBN: the saved model has ordinary BN buffers.
    assert any(k.endswith('running_mean') for k in ckpt['state_dict'])

    # Testing in 2 processes gathers both halves: the same mIoU as in one process.
    options = cfg_options(toy_root, 2, 2)
    single = run([sys.executable, REPO_ROOT / 'tools' / 'test.py', TOY_CONFIG,
                  work_dir / 'iter_2.pth', '--work-dir', tmp_path / 't1', *options],
                 tmp_path)
    double = run(['bash', REPO_ROOT / 'tools' / 'dist_test.sh', TOY_CONFIG,
                  work_dir / 'iter_2.pth', 2, '--work-dir', tmp_path / 't2', *options],
                 tmp_path, PORT=str(free_port()), OMP_NUM_THREADS='1')
    assert 'GPU number: 2' in double
    assert MIOU.findall(single)[-1] == MIOU.findall(double)[-1]


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(torch.cuda.is_available(), reason='exercises the no-CUDA path')
@pytest.mark.torchrun_alone
def test_two_nodes_equal_one_node_with_two_processes(toy_root, tmp_path, free_port):
    """tools/dist_train.sh as 2 "nodes" x 1 process over loopback (NNODES, NODE_RANK,
    MASTER_ADDR, PORT) trains to exactly the weights of 1 node x 2 processes: the same
    world size, ranks and data shards."""
    options = cfg_options(toy_root, 4, 4)
    port = free_port()
    env = {**os.environ, **FORCE_WEIGHTS_ONLY, 'OMP_NUM_THREADS': '1',
           'PYTHON': sys.executable, 'MASTER_ADDR': '127.0.0.1', 'PORT': str(port)}
    nodes = [subprocess.Popen(
        ['bash', str(REPO_ROOT / 'tools' / 'dist_train.sh'), str(TOY_CONFIG), '1',
         '--work-dir', str(tmp_path / 'nodes'), *options], cwd=tmp_path,
        env={**env, 'NNODES': '2', 'NODE_RANK': str(rank)}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    logs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    assert 'GPU number: 2' in logs[0]
    run(['bash', REPO_ROOT / 'tools' / 'dist_train.sh', TOY_CONFIG, 2, '--work-dir',
         tmp_path / 'one', *options], tmp_path, PORT=str(free_port()), OMP_NUM_THREADS='1')
    two = load_checkpoint_file(str(tmp_path / 'nodes' / 'iter_4.pth'))
    one = load_checkpoint_file(str(tmp_path / 'one' / 'iter_4.pth'))
    assert two['meta']['iter'] == one['meta']['iter'] == 4
    two_nodes, one_node = two['state_dict'], one['state_dict']
    assert two_nodes.keys() == one_node.keys()
    for key, value in one_node.items():
        assert torch.equal(two_nodes[key], value), key


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_toy_model_learns_the_toy_task(tmp_path):
    data = tmp_path / 'toy'
    make_toy_dataset(str(data), num_train=48, num_val=8, size=128)
    log = run([sys.executable, REPO_ROOT / 'tools' / 'train.py', TOY_CONFIG,
               '--work-dir', tmp_path / 'work',
               *cfg_options(data, 150, 50, **{'train_dataloader.batch_size': 8})],
              tmp_path)
    first, *_, last = [float(v) for v in MIOU.findall(log)]
    losses = [float(v) for v in re.findall(r'\bloss: (\d+\.\d+)', log)]
    # Four classes: chance-level mIoU is far below these figures.
    assert last > first + 5.0 and last > 40.0, (first, last)
    assert sum(losses[-10:]) < 0.6 * sum(losses[:10])
