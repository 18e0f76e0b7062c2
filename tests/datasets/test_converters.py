"""Dataset preparation: MMSeg's converters on tiny synthetic trees, then the plugin's dataset
configs (configs/_base_/datasets/*.py) on their output.

The expected label maps are built here from MMSeg's own class lists (CityscapesDataset,
COCOStuffDataset), not from the converters' tables. Each converter runs as a user runs it,
as a script in a fresh interpreter.
"""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import mmseg
import numpy as np
import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.datasets import CityscapesDataset, COCOStuffDataset
from mmseg.registry import DATASETS
from PIL import Image

from mmseg_segman.datasets import bind_num_classes

REPO_ROOT = Path(__file__).resolve().parents[2]
DATASET_CONFIGS = REPO_ROOT / 'configs' / '_base_' / 'datasets'
CONVERTERS = Path(mmseg.__file__).parent / '.mim' / 'tools' / 'dataset_converters'


def run(args, cwd):
    result = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, f'{result.stdout[-2000:]}\n{result.stderr[-4000:]}'
    return result.stdout


def build_dataset(config, loader, data_root, **overrides):
    """The ``loader`` dataset of a plugin dataset config, with ``data_root`` replaced."""
    cfg = Config.fromfile(DATASET_CONFIGS / config)
    init_default_scope('mmseg')
    dataset_cfg = cfg[loader].dataset.copy()
    dataset_cfg.update(data_root=str(data_root), **overrides)
    dataset = DATASETS.build(dataset_cfg)
    bind_num_classes(dataset)  # what DataCheckHook does in a run
    return dataset


def labels_of(dataset):
    """{image file name: ground-truth label map} through the config's pipeline."""
    out = {}
    for i in range(len(dataset)):
        sample = dataset[i]['data_samples']
        out[Path(sample.img_path).name] = sample.gt_sem_seg.data[0].numpy()
    return out


def save_image(path, rng, shape):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(path)


# ------------------------------------------------------------------------------ Cityscapes
# Rectangles drawn in this order (later ones cover earlier ones): (label, x0, y0, x1, y1),
# corners included. 'persongroup' is drawn as person; 'license plate' (id -1) is not
# drawn; 'ego vehicle' is a void class (ignored, 255).
CITYSCAPES_OBJECTS = [('road', 0, 16, 31, 23), ('sky', 0, 0, 31, 5),
                      ('car', 4, 12, 11, 19), ('persongroup', 20, 8, 23, 15),
                      ('license plate', 6, 14, 9, 15), ('ego vehicle', 28, 20, 31, 23)]
CITYSCAPES_SIZE = (24, 32)  # H, W


def cityscapes_expected():
    classes = CityscapesDataset.METAINFO['classes']
    expected = np.full(CITYSCAPES_SIZE, 255, np.uint8)
    for label, x0, y0, x1, y1 in CITYSCAPES_OBJECTS:
        name = label[:-len('group')] if label.endswith('group') else label
        if name == 'license plate':
            continue
        expected[y0:y1 + 1, x0:x1 + 1] = classes.index(name) if name in classes else 255
    return expected


def write_cityscapes(root, rng):
    """leftImg8bit/<split>/<city>/*_leftImg8bit.png and gtFine/.../*_gtFine_polygons.json."""
    height, width = CITYSCAPES_SIZE
    objects = [dict(label=label, polygon=[[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
               for label, x0, y0, x1, y1 in CITYSCAPES_OBJECTS]
    stems = {'train': ['aachen_000000_000019', 'bremen_000001_000019'],
             'val': ['frankfurt_000000_000294'], 'test': []}
    for split, names in stems.items():
        (root / 'gtFine' / split).mkdir(parents=True)
        for stem in names:
            city = stem.split('_')[0]
            save_image(root / 'leftImg8bit' / split / city / f'{stem}_leftImg8bit.png', rng,
                       CITYSCAPES_SIZE)
            poly = root / 'gtFine' / split / city / f'{stem}_gtFine_polygons.json'
            poly.parent.mkdir(parents=True, exist_ok=True)
            poly.write_text(json.dumps(dict(imgHeight=height, imgWidth=width,
                                            objects=objects)))
    return stems


def test_cityscapes_converter_then_the_plugin_config(tmp_path):
    pytest.importorskip(
        'cityscapesscripts',
        reason='MMSeg\'s Cityscapes converter needs cityscapesscripts: '
               'pip install -r requirements/datasets.txt')
    root = tmp_path / 'cityscapes'
    stems = write_cityscapes(root, np.random.default_rng(0))
    run([CONVERTERS / 'cityscapes.py', root, '--nproc', '1'], tmp_path)

    expected = cityscapes_expected()
    for split, names in stems.items():
        assert sorted((root / f'{split}.txt').read_text().split()) == sorted(
            f'{n.split("_")[0]}/{n}' for n in names)
        for stem in names:
            city = stem.split('_')[0]
            written = np.array(Image.open(
                root / 'gtFine' / split / city / f'{stem}_gtFine_labelTrainIds.png'))
            np.testing.assert_array_equal(written, expected)

    train = build_dataset('cityscapes_1024x1024.py', 'train_dataloader', root)
    assert len(train) == 2 and len(train.metainfo['classes']) == 19
    val = build_dataset('cityscapes_1024x1024.py', 'val_dataloader', root)
    gts = labels_of(val)
    assert list(gts) == ['frankfurt_000000_000294_leftImg8bit.png']
    np.testing.assert_array_equal(gts['frankfurt_000000_000294_leftImg8bit.png'], expected)
    assert set(np.unique(expected)) == {0, 10, 11, 13, 255}  # the test covers them all


# --------------------------------------------------------------------------- COCO-Stuff 164k
# COCO-Stuff's 182 ids (0 = person ... 181 = wood) of which 11 thing ids were never used;
# the remaining 171 become train ids 0..170 in id order. 255 is unlabelled.
COCO_UNUSED = {11, 25, 28, 29, 44, 65, 67, 68, 70, 82, 90}
COCO_USED = [i for i in range(182) if i not in COCO_UNUSED]


def test_coco_stuff164k_converter_then_the_plugin_config(tmp_path):
    assert len(COCO_USED) == len(COCOStuffDataset.METAINFO['classes']) == 171
    root, rng = tmp_path / 'coco_stuff164k', np.random.default_rng(1)
    values = np.array(COCO_USED + [255], np.uint8)
    masks = {}
    for split, names in (('train2017', ['000000000009', '000000000025']),
                         ('val2017', ['000000000139'])):
        for name in names:
            save_image(root / 'images' / split / f'{name}.jpg', rng, (20, 28))
            mask = rng.choice(values, size=(20, 28))
            mask.flat[:len(values)] = values  # every id appears at least once
            (root / 'annotations' / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(root / 'annotations' / split / f'{name}.png')
            masks[split, name] = mask
    # The converter asserts the full dataset's mask count (COCO_LEN = 123,287); lower it
    # to this tree's and run its main() as the script would.
    script = CONVERTERS / 'coco_stuff164k.py'
    code = (f'import importlib.util, sys\n'
            f"spec = importlib.util.spec_from_file_location('coco_stuff164k', {str(script)!r})\n"
            'module = importlib.util.module_from_spec(spec)\n'
            'spec.loader.exec_module(module)\n'
            f'module.COCO_LEN = {len(masks)}\n'
            f"sys.argv = ['coco_stuff164k.py', {str(root)!r}, '--nproc', '1']\n"
            'module.main()\n')
    assert 'Done!' in run(['-c', code], tmp_path)

    to_train_id = np.full(256, 255, np.uint8)
    to_train_id[COCO_USED] = np.arange(171)
    for (split, name), mask in masks.items():
        written = np.array(Image.open(root / 'annotations' / split /
                                      f'{name}_labelTrainIds.png'))
        np.testing.assert_array_equal(written, to_train_id[mask])

    train = build_dataset('coco-stuff164k.py', 'train_dataloader', root)
    assert len(train) == 2 and len(train.metainfo['classes']) == 171
    gts = labels_of(build_dataset('coco-stuff164k.py', 'val_dataloader', root))
    assert list(gts) == ['000000000139.jpg']
    np.testing.assert_array_equal(gts['000000000139.jpg'],
                                  to_train_id[masks['val2017', '000000000139']])


# -------------------------------------------------------------------------------- ADE20K
def test_ade20k_layout_loads_with_reduce_zero_label(tmp_path):
    """ADEChallengeData2016.zip needs no conversion: 0 (other) is ignored, 1..150 -> 0..149."""
    root, rng = tmp_path / 'ADEChallengeData2016', np.random.default_rng(2)
    masks = {}
    for split, count in (('training', 2), ('validation', 1)):
        for i in range(count):
            name = f'ADE_{split}_{i + 1:08d}'
            save_image(root / 'images' / split / f'{name}.jpg', rng, (18, 30))
            mask = rng.integers(0, 151, (18, 30), dtype=np.uint8)
            mask[0, :2] = [0, 150]
            (root / 'annotations' / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(root / 'annotations' / split / f'{name}.png')
            masks[split, name] = mask
    assert len(build_dataset('ade20k.py', 'train_dataloader', root)) == 2
    gts = labels_of(build_dataset('ade20k.py', 'val_dataloader', root))
    (name, gt), = gts.items()
    mask = masks['validation', Path(name).stem].astype(np.int64)
    np.testing.assert_array_equal(gt, np.where(mask == 0, 255, mask - 1))


# ----------------------------------------------------------------------- your own dataset
def write_custom(root, rng, values, names=('a', 'b')):
    for split in ('train', 'val'):
        for name in names:
            save_image(root / 'images' / split / f'{split}_{name}.jpg', rng, (16, 20))
            mask = rng.choice(np.array(values, np.uint8), size=(16, 20))
            (root / 'annotations' / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(root / 'annotations' / split / f'{split}_{name}.png')


def test_custom_dataset_template_loads_a_folder_pair(tmp_path):
    root, rng = tmp_path / 'my_dataset', np.random.default_rng(3)
    write_custom(root, rng, [0, 1, 255])
    assert len(build_dataset('custom_dataset.py', 'train_dataloader', root)) == 2
    val = build_dataset('custom_dataset.py', 'val_dataloader', root)
    assert val.metainfo['classes'] == ('background', 'object')
    for name, gt in labels_of(val).items():
        mask = np.array(Image.open(root / 'annotations' / 'val' / name.replace('.jpg', '.png')))
        np.testing.assert_array_equal(gt, mask)
    # reduce_zero_label: value 0 is unlabelled, 1 and 2 are the two classes.
    write_custom(root, rng, [0, 1, 2], names=('c', ))
    val = build_dataset('custom_dataset.py', 'val_dataloader', root, reduce_zero_label=True)
    gt = labels_of(val)['val_c.jpg']
    mask = np.array(Image.open(root / 'annotations' / 'val' / 'val_c.png')).astype(int)
    np.testing.assert_array_equal(gt, np.where(mask == 0, 255, mask - 1))


def test_custom_dataset_label_out_of_range_names_the_file(tmp_path):
    root = tmp_path / 'my_dataset'
    write_custom(root, np.random.default_rng(4), [0, 1, 7])  # 7 >= num_classes (2)
    val = build_dataset('custom_dataset.py', 'val_dataloader', root)
    with pytest.raises(Exception, match=r'val_a\.png.*7'):
        val[0]


def test_datasets_requirements_name_cityscapesscripts():
    lines = (REPO_ROOT / 'requirements' / 'datasets.txt').read_text().splitlines()
    pins = [ln.split('#')[0].strip() for ln in lines if ln.split('#')[0].strip()]
    assert any(p.startswith('cityscapesscripts==') for p in pins), pins
    assert importlib.util.find_spec('cityscapesscripts') is not None or not os.environ.get(
        'CI'), 'requirements/datasets.txt is not installed (tools/install.sh --tests does)'
