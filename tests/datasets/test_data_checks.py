"""Bad data fails with the file named: the checked loaders and the dataset checks.

Every case starts from the toy dataset (``tools/make_toy_dataset.py``) in ``tmp_path`` and
damages one file the way the issue describes, then loads it through the toy config's own
train and test pipelines.
"""
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS, TRANSFORMS

from mmseg_segman.datasets import (
    DataCheckError,
    LoadCheckedAnnotations,
    bind_num_classes,
    check_dataset_folders,
    check_label_values,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
TOY_CONFIG = REPO_ROOT / 'configs' / 'toy' / 'fcn-r18-narrow_toy.py'
from make_toy_dataset import make_toy_dataset  # noqa: E402


@pytest.fixture
def toy(tmp_path):
    root = tmp_path / 'toy'
    make_toy_dataset(str(root), num_train=2, num_val=2, size=32)
    return root


def dataset(root, split='train', **overrides):
    cfg = Config.fromfile(str(TOY_CONFIG))
    ds_cfg = cfg[f'{split}_dataloader'].dataset
    ds_cfg.data_root = str(root)
    ds_cfg.update(overrides)
    init_default_scope('mmseg')
    built = DATASETS.build(ds_cfg)
    bind_num_classes(built)  # what DataCheckHook does for every run
    return built


def folders(root, split='train', **overrides):
    """The pre-flight check of the tools on the toy config with ``root`` as data."""
    cfg = Config.fromfile(str(TOY_CONFIG))
    cfg[f'{split}_dataloader'].dataset.data_root = str(root)
    cfg[f'{split}_dataloader'].dataset.update(overrides)
    check_dataset_folders({f'{split}_dataloader': cfg[f'{split}_dataloader']})


def first_files(root, split='training'):
    img = sorted((root / 'images' / split).glob('*.png'))[0]
    return img, root / 'annotations' / split / img.name


@pytest.mark.parametrize('split', ['train', 'val'])
def test_annotation_smaller_than_image(toy, split):
    folder = 'training' if split == 'train' else 'validation'
    img, ann = first_files(toy, folder)
    label = cv2.imread(str(ann), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(ann), label[:24, :20])
    ds = dataset(toy, split)
    with pytest.raises(DataCheckError) as info:
        ds[0]
    message = str(info.value)
    assert f'annotation {ann} is 24x20' in message and f'image {img} is 32x32' in message
    ds[1]  # the untouched pair loads


@pytest.mark.parametrize('split', ['train', 'val'])
def test_label_outside_the_classes(toy, split):
    folder = 'training' if split == 'train' else 'validation'
    _, ann = first_files(toy, folder)
    label = cv2.imread(str(ann), cv2.IMREAD_UNCHANGED)
    label[:3, :3] = 7          # 9 pixels of a class the toy data (4 classes) lacks
    label[-2:, -2:] = 255      # the ignore index is allowed
    cv2.imwrite(str(ann), label)
    with pytest.raises(DataCheckError, match=rf'annotation {ann} has label values 7 \(9 px\) '
                       r'outside \[0, 4\) that are not the ignore index 255'):
        dataset(toy, split)[0]


def test_ignore_index_and_valid_labels_pass(toy):
    _, ann = first_files(toy)
    label = cv2.imread(str(ann), cv2.IMREAD_UNCHANGED)
    label[:4, :4] = 255
    cv2.imwrite(str(ann), label)
    sample = dataset(toy, 'val', data_prefix=dict(img_path='images/training',
                                                  seg_map_path='annotations/training'))[0]
    seg = sample['data_samples'].gt_sem_seg.data.numpy()
    # Loaded unchanged: the same labels as reading the file directly.
    np.testing.assert_array_equal(seg[0], label)


def test_label_check_against_brute_force():
    rng = np.random.default_rng(0)
    seg = rng.integers(0, 12, size=(40, 50)).astype(np.uint8)
    seg[0, 0] = 255
    num_classes = 9
    bad = sorted({int(v) for v in seg.ravel() if v >= num_classes and v != 255})
    with pytest.raises(DataCheckError) as info:
        check_label_values(seg, num_classes, 255, 'a.png')
    for v in bad:
        assert f'{v} ({int((seg == v).sum())} px)' in str(info.value)
    check_label_values(np.minimum(seg, 8), num_classes, 255, 'a.png')  # no error
    # reduce_zero_label is said, since the file's values were shifted.
    with pytest.raises(DataCheckError, match='after reduce_zero_label'):
        check_label_values(seg, num_classes, 255, 'a.png', reduce_zero_label=True)


def test_zero_byte_image(toy):
    img, _ = first_files(toy)
    img.write_bytes(b'')
    with pytest.raises(DataCheckError, match=rf'image {img} cannot be loaded: the file is '
                       r'empty \(0 bytes\)'):
        dataset(toy)[0]


def test_truncated_annotation(toy):
    _, ann = first_files(toy)
    data = ann.read_bytes()
    ann.write_bytes(data[:len(data) // 2])
    with pytest.raises(DataCheckError) as info:
        dataset(toy)[0]
    assert f'annotation {ann} cannot be loaded' in str(info.value)
    assert 'truncated' in str(info.value)


def test_truncated_image(toy):
    img, _ = first_files(toy)
    data = img.read_bytes()
    img.write_bytes(data[:len(data) // 2])
    with pytest.raises(DataCheckError, match=rf'image {img} cannot be loaded: .*truncated'):
        dataset(toy)[0]


def test_missing_annotation_is_named(toy):
    _, ann = first_files(toy)
    ann.unlink()
    with pytest.raises(DataCheckError, match=rf'annotation {ann} cannot be loaded: the file '
                       'does not exist'):
        dataset(toy)[0]


def test_empty_dataset_folder(toy):
    for p in (toy / 'images' / 'training').iterdir():
        p.unlink()
    with pytest.raises(DataCheckError) as info:
        folders(toy)
    message = str(info.value)
    assert f'no *.png image in {toy}/images/training' in message
    assert 'it is empty' in message
    assert f'{toy}/annotations/training/<name>.png' in message  # the expected layout
    assert 'docs/datasets.md' in message
    folders(toy, 'val')  # the untouched split passes


def test_wrong_suffix_lists_what_is_there(toy):
    with pytest.raises(DataCheckError, match=r'no \*\.jpg image in .*it holds '
                       r'training_00000\.png'):
        folders(toy, img_suffix='.jpg')


def test_missing_dataset_folder(tmp_path):
    with pytest.raises(DataCheckError, match=rf'image folder {tmp_path}/nowhere/images/'
                       r'training does not exist'):
        folders(tmp_path / 'nowhere')


def test_nan_pixel_in_a_float_image(toy, tmp_path):
    img, ann = first_files(toy)
    image = cv2.imread(str(img)).astype(np.float32)
    image[5, 7, 1] = np.nan
    tiff = tmp_path / 'float.tiff'
    assert cv2.imwrite(str(tiff), image)
    init_default_scope('mmseg')
    results = dict(img_path=str(tiff), seg_map_path=str(ann), reduce_zero_label=False,
                   seg_fields=[], label_map=None)
    plain = TRANSFORMS.build(dict(type='LoadImageFromFile', color_type='unchanged'))
    assert np.isnan(plain(dict(results))['img']).sum() == 1  # the reader keeps the NaN
    checked = TRANSFORMS.build(dict(type='LoadCheckedImageFromFile', color_type='unchanged'))
    with pytest.raises(DataCheckError, match=rf'image {tiff} has 1 NaN or infinite'):
        checked(dict(results))


def test_inference_pipeline_without_annotations():
    """mmseg's inference drops only 'LoadAnnotations' by name: ours must pass through."""
    transform = LoadCheckedAnnotations()
    results = dict(img=np.zeros((8, 8, 3), np.uint8), img_path='x.png')
    assert transform(results) is results


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_train_and_test_tools_name_the_bad_file(toy, tmp_path):
    _, ann = first_files(toy)
    label = cv2.imread(str(ann), cv2.IMREAD_UNCHANGED)
    label[0, 0] = 7
    cv2.imwrite(str(ann), label)
    # Validation shares the bad file, so tools/test.py sees it too; two dataloader
    # workers: the error crosses a process boundary and still reads as one line.
    opts = ['train_cfg.max_iters=2', 'train_dataloader.batch_size=2']
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        opts += [f'{loader}.dataset.data_root={toy}', f'{loader}.num_workers=2',
                 f'{loader}.dataset.data_prefix.img_path=images/training',
                 f'{loader}.dataset.data_prefix.seg_map_path=annotations/training']
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    for cmd in (['train.py', str(TOY_CONFIG)],
                ['test.py', str(TOY_CONFIG), str(tmp_path / 'none.pth')]):
        if cmd[0] == 'test.py':
            # Any checkpoint of the model will do: the data fails before the metric.
            import torch
            from mmseg.registry import MODELS

            init_default_scope('mmseg')
            model = MODELS.build(Config.fromfile(str(TOY_CONFIG)).model)
            torch.save({'meta': {}, 'state_dict': model.state_dict()}, cmd[2])
        result = subprocess.run(
            [sys.executable, str(REPO_ROOT / 'tools' / cmd[0]), *cmd[1:], '--work-dir',
             str(tmp_path / 'work'), '--cfg-options', *opts],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 1, result.stderr[-3000:]
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith(f'error: annotation {ann} has label values 7 (1 px)'), \
            result.stderr[-3000:]
