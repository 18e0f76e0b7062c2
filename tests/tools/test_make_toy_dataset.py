"""tools/make_toy_dataset.py: layout, determinism, label content, argument checks."""
import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from mmengine import Config

REPO_ROOT = Path(__file__).resolve().parents[2]
from make_toy_dataset import CLASSES, PALETTE, make_toy_dataset  # noqa: E402


def digest(root):
    h = hashlib.sha256()
    for path in sorted(Path(root).rglob('*.png')):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_layout_and_labels(tmp_path):
    make_toy_dataset(str(tmp_path), num_train=6, num_val=3, size=48)
    for split, num in (('training', 6), ('validation', 3)):
        images = sorted((tmp_path / 'images' / split).glob('*.png'))
        labels = sorted((tmp_path / 'annotations' / split).glob('*.png'))
        assert [p.name for p in images] == [p.name for p in labels]
        assert len(images) == num
    seen = set()
    for path in (tmp_path / 'annotations').rglob('*.png'):
        label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert label.shape == (48, 48) and label.dtype == np.uint8
        assert label.max() < len(CLASSES)
        seen |= set(np.unique(label).tolist())
        image = cv2.imread(str(tmp_path / 'images' / path.parent.name / path.name))
        assert image.shape == (48, 48, 3)
    assert seen == set(range(len(CLASSES)))  # every class occurs


def test_shapes_are_textured_not_flat(tmp_path):
    """Inside a shape the pixels alternate between two colours (the texture)."""
    make_toy_dataset(str(tmp_path), num_train=4, num_val=1, size=64)
    for path in (tmp_path / 'annotations' / 'training').glob('*.png'):
        label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        image = cv2.imread(str(tmp_path / 'images' / 'training' / path.name))
        for cls in set(np.unique(label).tolist()) - {0}:
            pixels = image[label == cls].astype(np.float32)
            if len(pixels) > 50:
                assert pixels.std(axis=0).max() > 20, (path.name, cls)


def test_same_arguments_same_bytes_and_splits_differ(tmp_path):
    make_toy_dataset(str(tmp_path / 'a'), num_train=3, num_val=3, size=32, seed=5)
    make_toy_dataset(str(tmp_path / 'b'), num_train=3, num_val=3, size=32, seed=5)
    make_toy_dataset(str(tmp_path / 'c'), num_train=3, num_val=3, size=32, seed=6)
    assert digest(tmp_path / 'a') == digest(tmp_path / 'b')
    assert digest(tmp_path / 'a') != digest(tmp_path / 'c')
    train = cv2.imread(str(tmp_path / 'a/images/training/training_00000.png'))
    val = cv2.imread(str(tmp_path / 'a/images/validation/validation_00000.png'))
    assert not np.array_equal(train, val)


def test_config_metainfo_matches_generator():
    cfg = Config.fromfile(str(REPO_ROOT / 'configs' / '_base_' / 'datasets' / 'toy.py'))
    assert tuple(cfg.metainfo['classes']) == CLASSES
    assert [list(c) for c in cfg.metainfo['palette']] == PALETTE


@pytest.mark.parametrize('kwargs, match', [
    (dict(num_train=0), 'num_train must be a positive integer'),
    (dict(num_val=-1), 'num_val must be a positive integer'),
    (dict(size=8), 'size must be an integer >= 16'),
])
def test_bad_arguments_are_named(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_toy_dataset(str(tmp_path), **kwargs)
