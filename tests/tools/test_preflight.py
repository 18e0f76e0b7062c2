"""The one-line errors of tools/train.py and tools/test.py, before any config dump.

In-process: ``preflight`` is what the tools run before handing over to MMSeg's scripts.
"""
from pathlib import Path

import pytest
import torch
from _mmseg_tool import preflight
from make_toy_dataset import make_toy_dataset

REPO_ROOT = Path(__file__).resolve().parents[2]
TOY = str(REPO_ROOT / 'configs' / 'toy' / 'fcn-r18-narrow_toy.py')
SEGMAN_T = str(REPO_ROOT / 'configs' / 'segman' / 'segman-t_ade20k.py')


@pytest.fixture(scope='module')
def toy_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('toy')
    make_toy_dataset(str(root), num_train=2, num_val=1, size=32)
    return root


def _error(name, argv):
    with pytest.raises(SystemExit) as info:
        preflight(name, argv)
    message = str(info.value.code)
    assert message.startswith('error: ') and '\n' not in message, message
    return message


def _data(root, splits=('train', 'val', 'test')):
    return [f'{s}_dataloader.dataset.data_root={root}' for s in splits]


def test_missing_config_file(tmp_path):
    message = _error('train', [str(tmp_path / 'nope.py')])
    assert message.startswith(f'error: {tmp_path / "nope.py"}: no such config file')


def test_missing_checkpoint(toy_root, tmp_path):
    message = _error('test', [TOY, str(tmp_path / 'iter_1.pth'), '--cfg-options',
                              *_data(toy_root)])
    assert f'{tmp_path / "iter_1.pth"}: no such checkpoint file' in message


def test_unknown_registry_type_suggests_the_closest(toy_root):
    message = _error('train', [SEGMAN_T, '--cfg-options', 'model.backbone.type=SegMANEncodr',
                               'model.backbone.init_cfg=None', *_data(toy_root)])
    assert "model.backbone.type: unknown type 'SegMANEncodr'" in message
    assert 'did you mean SegMANEncoder' in message


def test_unknown_transform_type(toy_root):
    message = _error('train', [TOY, '--cfg-options',
                               'train_dataloader.dataset.pipeline.0.type=LoadImageFromFil',
                               *_data(toy_root)])
    assert 'train_dataloader.dataset.pipeline.0.type' in message
    assert 'LoadImageFromFile' in message


@pytest.mark.skipif(torch.cuda.is_available(), reason='the no-GPU message')
def test_amp_without_a_gpu(toy_root):
    message = _error('train', [TOY, '--amp', '--cfg-options', *_data(toy_root)])
    assert message.startswith('error: --amp:') and 'CUDA GPU' in message


def test_tta_without_a_tta_pipeline(toy_root, tmp_path):
    from mmengine.config import Config

    # A user's own config without the test-time augmentation keys.
    body = Config.fromfile(TOY).to_dict()
    body.pop('tta_pipeline', None)
    body.pop('tta_model', None)
    Config(body).dump(str(tmp_path / 'no_tta.py'))
    ckpt = tmp_path / 'x.pth'
    torch.save({'state_dict': {}}, ckpt)
    message = _error('test', [str(tmp_path / 'no_tta.py'), str(ckpt), '--tta',
                              '--cfg-options', *_data(toy_root)])
    assert '--tta needs tta_pipeline and tta_model' in message


def test_missing_dataset_folder_points_at_the_docs(tmp_path):
    message = _error('train', [TOY, '--cfg-options', *_data(tmp_path / 'absent')])
    assert 'image folder' in message and 'does not exist' in message
    assert 'docs/datasets.md' in message


def test_empty_dataset_folder_lists_what_is_there(tmp_path, toy_root):
    empty = tmp_path / 'toy'
    (empty / 'images' / 'training').mkdir(parents=True)
    (empty / 'images' / 'training' / 'readme.txt').write_text('x')
    message = _error('train', [TOY, '--cfg-options', *_data(empty, ('train', ))])
    assert 'no *.png image in' in message and 'readme.txt' in message


def test_missing_pretrained_file_names_the_key(toy_root, tmp_path):
    message = _error('train', [SEGMAN_T, '--cfg-options',
                               f'model.backbone.init_cfg.checkpoint={tmp_path / "w.pth"}',
                               *_data(toy_root)])
    assert 'model.backbone.init_cfg' in message and str(tmp_path / 'w.pth') in message


def test_a_good_run_passes(toy_root):
    cfg, args = preflight('train', [TOY, '--cfg-options', *_data(toy_root)])
    assert cfg.model.decode_head.num_classes == 4 and args.launcher == 'none'
