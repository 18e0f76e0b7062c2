"""tools/train_cls.py and tools/test_cls.py: mmpretrain's scripts with the plugin, run as a
user runs them (subprocesses), on a tiny image folder."""
import os
import re
import subprocess
import sys

import pytest
import torch
from conftest import CONFIG_DIR, REPO_ROOT, write_image_folder

pytestmark = pytest.mark.slow


def run_tool(name, *args, timeout=600):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(REPO_ROOT)] + ([os.environ['PYTHONPATH']] if os.environ.get('PYTHONPATH') else [])))
    return subprocess.run([sys.executable, str(REPO_ROOT / 'tools' / f'{name}_cls.py'), *args],
                          env=env, cwd=str(REPO_ROOT), capture_output=True, text=True,
                          timeout=timeout)


def data_options(root, splits=('val', )):
    """--cfg-options for a 2-class image folder ``root/<split>/<class>`` read at 64x64."""
    options = ['model.head.num_classes=2', 'model.data_preprocessor.num_classes=2',
               'test_evaluator.topk=1', 'val_evaluator.topk=1']
    for split in splits:
        for loader in (['train_dataloader'] if split == 'train' else
                       ['val_dataloader', 'test_dataloader']):
            options += [f'{loader}.dataset.data_root={root}', f'{loader}.dataset.split={split}',
                        f'{loader}.dataset.classes=[dark,light]', f'{loader}.num_workers=0',
                        f'{loader}.persistent_workers=False', f'{loader}.batch_size=4']
    return options


def official_segman_t_file(path, bias):
    """An authors'-layout SegMAN-T file for 2 classes whose class projection is zero with the
    given bias: every image gets the scores ``bias``."""
    from mmengine import Config
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    from mmseg_segman.classification import to_official_state_dict

    cfg = Config.fromfile(str(CONFIG_DIR / 'segman-t_in1k.py'))
    cfg.model.head.num_classes = 2
    init_default_scope('mmpretrain')
    state = to_official_state_dict(MODELS.build(cfg.model))
    state['classifier.4.weight'].zero_()
    state['classifier.4.bias'].copy_(torch.tensor(bias))
    torch.save({'state_dict_ema': state, 'epoch': 300}, path)
    return state


def test_test_cls_evaluates_an_authors_file(tmp_path):
    # 5 dark and 3 light images; scores (0, 1) for every image: all predicted 'light' (class
    # 1 of the sorted folders), so top-1 = 3 / 8.
    root = tmp_path / 'data'
    write_image_folder(root / 'val', {'dark': 5, 'light': 3}, size=64)
    checkpoint = tmp_path / 'SegMAN_Encoder_t.pth.tar'
    official_segman_t_file(checkpoint, [0., 1.])
    work = tmp_path / 'work'
    out = run_tool('test', str(CONFIG_DIR / 'segman-t_in1k.py'), str(checkpoint),
                   '--work-dir', str(work), '--cfg-options', *data_options(root))
    assert out.returncode == 0, out.stderr[-4000:]
    log = out.stdout + out.stderr
    assert "authors' layout (state_dict_ema), loaded strictly" in log
    top1 = re.findall(r'accuracy/top1: ([0-9.]+)', log)
    assert top1 and float(top1[-1]) == pytest.approx(100 * 3 / 8)
    assert (work / 'SegMAN_Encoder_t_mmpretrain.pth').is_file()


def test_test_cls_refuses_another_variant_in_one_line(tmp_path):
    root = tmp_path / 'data'
    write_image_folder(root / 'val', {'dark': 1, 'light': 1}, size=64)
    checkpoint = tmp_path / 'wrong.pth.tar'
    official_segman_t_file(checkpoint, [0., 1.])
    out = run_tool('test', str(CONFIG_DIR / 'segman-s_in1k.py'), str(checkpoint),
                   '--work-dir', str(tmp_path / 'work'), '--cfg-options', *data_options(root))
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith('error: ') and str(checkpoint) in last
    assert 'another variant or num_classes' in last
    assert 'Traceback' not in out.stderr


def test_train_cls_trains_and_its_checkpoint_evaluates(tmp_path):
    root = tmp_path / 'data'
    write_image_folder(root / 'train', {'dark': 4, 'light': 4}, size=64)
    write_image_folder(root / 'val', {'dark': 2, 'light': 2}, size=64, seed=1)
    work = tmp_path / 'work'
    config = str(CONFIG_DIR / 'segnext-t_in1k.py')
    out = run_tool('train', config, '--work-dir', str(work), '--cfg-options',
                   *data_options(root, ('train', 'val')), 'train_cfg.max_epochs=1',
                   'train_cfg.val_interval=2', 'default_hooks.logger.interval=1',
                   'model.train_cfg=None')
    assert out.returncode == 0, out.stderr[-4000:]
    checkpoint = work / 'epoch_1.pth'
    state = torch.load(checkpoint, map_location='cpu', weights_only=False)['state_dict']
    assert {k.split('.')[0] for k in state} == {'backbone', 'head'}
    assert state['head.weight'].shape == (2, 256)
    losses = re.findall(r'loss: ([0-9.]+)', out.stdout + out.stderr)
    assert len(losses) >= 2 and all(float(v) > 0 for v in losses)
    out = run_tool('test', config, str(checkpoint), '--work-dir', str(work), '--cfg-options',
                   *data_options(root))
    assert out.returncode == 0, out.stderr[-4000:]
    top1 = float(re.findall(r'accuracy/top1: ([0-9.]+)', out.stdout + out.stderr)[-1])
    assert top1 in (0.0, 25.0, 50.0, 75.0, 100.0)  # 4 images
