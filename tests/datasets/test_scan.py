"""The dataset pre-flight scan (mmseg_segman/datasets/scan.py, tools/misc/check_dataset.py)
on a small synthetic dataset with one defect per bad file: every bad file is listed with
its cause, the per-class pixel counts equal a count by hand, and the tool exits 1 / 0."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from mmengine.config import Config
from PIL import Image

from mmseg_segman.datasets.scan import check_sample, scan_config
from mmseg_segman.errors import DataCheckError

REPO_ROOT = Path(__file__).resolve().parents[2]
CLASSES = ('background', 'a', 'b', 'c')
SIZE = (16, 20)  # H, W


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _labels(rng, size=SIZE, high=4):
    return rng.integers(0, high, size=size, dtype=np.uint8)


def make_dataset(root: Path, defects: bool) -> dict:
    """6 good pairs in train, 2 in val; with ``defects`` each of these files is bad:

    returns {file name: expected word in its cause}."""
    rng = np.random.default_rng(0)
    img_dir, ann_dir = root / 'images', root / 'annotations'
    for split, n in (('training', 6), ('validation', 2)):
        for i in range(n):
            _png(img_dir / split / f'good{i}.png',
                 rng.integers(0, 256, size=(*SIZE, 3), dtype=np.uint8))
            labels = _labels(rng)
            labels[0, :3] = 255  # ignore index
            _png(ann_dir / split / f'good{i}.png', labels)
    if not defects:
        return {}
    train_img, train_ann = img_dir / 'training', ann_dir / 'training'

    def pair(name, labels=None, image=None):
        _png(train_img / f'{name}.png', rng.integers(0, 256, size=(*SIZE, 3), dtype=np.uint8)
             if image is None else image)
        _png(train_ann / f'{name}.png', _labels(rng) if labels is None else labels)

    bad_label = _labels(rng)
    bad_label[2, 2:5] = 7
    pair('out_of_range', labels=bad_label)  # 3 px of label 7 with 4 classes
    pair('size_mismatch', labels=_labels(rng, size=(SIZE[0] + 2, SIZE[1])))
    pair('empty_image')
    (train_img / 'empty_image.png').write_bytes(b'')
    pair('truncated_ann')
    data = (train_ann / 'truncated_ann.png').read_bytes()
    (train_ann / 'truncated_ann.png').write_bytes(data[:len(data) // 2])
    pair('undecodable_img')
    (train_img / 'undecodable_img.png').write_bytes(b'this is not an image at all' * 10)
    _png(train_img / 'no_ann.png', rng.integers(0, 256, size=(*SIZE, 3), dtype=np.uint8))
    pair('rgb_ann', labels=np.stack([_labels(rng)] * 3, -1))
    return {
        'annotations/training/out_of_range.png': 'label values 7 (3 px) outside [0, 4)',
        'annotations/training/size_mismatch.png': 'is 18x20 (HxW) but its image',
        'images/training/empty_image.png': 'empty (0 bytes)',
        'annotations/training/truncated_ann.png': 'truncated or damaged',
        'images/training/undecodable_img.png': 'cannot be decoded',
        'annotations/training/no_ann.png': 'does not exist',
        'annotations/training/rgb_ann.png': 'single-channel',
    }


def config_dict(root: Path) -> dict:
    def loader(split):
        return dict(dataset=dict(
            type='BaseSegDataset', data_root=str(root), metainfo=dict(classes=CLASSES),
            img_suffix='.png', seg_map_suffix='.png',
            data_prefix=dict(img_path=f'images/{split}', seg_map_path=f'annotations/{split}'),
            pipeline=[dict(type='LoadCheckedImageFromFile'),
                      dict(type='LoadCheckedAnnotations'), dict(type='PackSegInputs')]))

    return dict(default_scope='mmseg', train_dataloader=loader('training'),
                val_dataloader=loader('validation'))


def hand_count(root: Path, split: str, good_only: bool = True):
    counts, ignored = np.zeros(len(CLASSES), np.int64), 0
    for f in sorted((root / 'annotations' / split).glob('*.png')):
        if good_only and not f.name.startswith('good'):
            continue
        labels = np.array(Image.open(f))
        counts += np.array([(labels == c).sum() for c in range(len(CLASSES))])
        ignored += int((labels == 255).sum())
    return counts, ignored


@pytest.mark.parametrize('nproc', [1, 2])
def test_every_bad_file_is_listed_with_its_cause(tmp_path, nproc):
    expected = make_dataset(tmp_path, defects=True)
    report = scan_config(Config(config_dict(tmp_path)), ('train', 'val'), nproc=nproc)
    assert not report.ok
    found = {}
    for problem in report.problems:
        found.setdefault(str(Path(problem.file).relative_to(tmp_path)), []).append(problem)
    assert set(found) == set(expected), found
    for name, words in expected.items():
        assert any(words in p.cause for p in found[name]), (name, found[name])
        assert all(p.split == 'train' for p in found[name])
    train = report.splits['train']
    assert (train.samples, train.bad_samples) == (13, 7)
    assert (report.splits['val'].samples, report.splits['val'].bad_samples) == (2, 0)


def test_pixel_counts_equal_a_hand_count(tmp_path):
    make_dataset(tmp_path, defects=False)
    report = scan_config(Config(config_dict(tmp_path)), ('train', 'val'), nproc=1)
    assert report.ok, report.problems
    for split, folder in (('train', 'training'), ('val', 'validation')):
        counts, ignored = hand_count(tmp_path, folder)
        summary = report.splits[split]
        assert list(summary.class_pixels) == list(CLASSES)
        assert list(summary.class_pixels.values()) == counts.tolist()
        assert summary.ignored_pixels == ignored == 3 * summary.samples
        assert sum(counts) + ignored == summary.samples * SIZE[0] * SIZE[1]


def test_reduce_zero_label_and_label_map_are_applied_as_mmseg_does(tmp_path):
    ann = tmp_path / 'ann.png'
    _png(tmp_path / 'img.png', np.zeros((*SIZE, 3), np.uint8))
    labels = np.zeros(SIZE, np.uint8)
    labels[0, :5] = 1
    labels[1, :7] = 4  # -> 3 after reduce_zero_label: inside [0, 4)
    labels[2, :2] = 5  # -> 4: outside
    _png(ann, labels)
    from mmseg_segman.datasets.scan import SampleTask

    res = check_sample(SampleTask('train', 0, str(tmp_path / 'img.png'), str(ann), 4, 255, True))
    assert res.class_pixels.tolist() == [5, 0, 0, 7]
    assert res.ignored_pixels == SIZE[0] * SIZE[1] - 14
    assert len(res.problems) == 1 and 'label values 4 (2 px)' in res.problems[0][1]
    res = check_sample(SampleTask('train', 0, str(tmp_path / 'img.png'), str(ann), 4, 255, False,
                                  {5: 2, 4: 3}))
    assert res.class_pixels.tolist() == [SIZE[0] * SIZE[1] - 14, 5, 2, 7] and not res.problems


def test_missing_split_is_one_error(tmp_path):
    make_dataset(tmp_path, defects=False)
    with pytest.raises(DataCheckError, match='test_dataloader: the config has no such'):
        scan_config(Config(config_dict(tmp_path)), ('test', ), nproc=1)


def test_missing_image_folder_is_one_error(tmp_path):
    make_dataset(tmp_path, defects=False)
    cfg = config_dict(tmp_path)
    cfg['val_dataloader']['dataset']['data_prefix']['img_path'] = 'images/nowhere'
    with pytest.raises(DataCheckError, match=r'val_dataloader.dataset: image folder '
                       r'.*images/nowhere does not exist'):
        scan_config(Config(cfg), ('train', 'val'), nproc=1)
    report = scan_config(Config(cfg), ('train', ), nproc=1)  # only the splits asked for
    assert report.ok and list(report.splits) == ['train']


def _tool():
    spec = importlib.util.spec_from_file_location(
        'check_dataset', REPO_ROOT / 'tools' / 'misc' / 'check_dataset.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tool_exit_status_and_summary(tmp_path, capsys):
    tool = _tool()
    for defects, status in ((False, 0), (True, 1)):
        root = tmp_path / f'data{int(defects)}'
        expected = make_dataset(root, defects)
        config = tmp_path / f'cfg{int(defects)}.py'
        config.write_text(''.join(f'{k} = {v!r}\n' for k, v in config_dict(root).items()))
        out = tmp_path / f'summary{int(defects)}.json'
        assert tool.main([str(config), '--nproc', '2', '--out', str(out), '--no-progress']) \
            == status
        summary = json.loads(out.read_text())
        assert summary['ok'] is (status == 0)
        assert summary['bad_files'] == len(expected)
        err = capsys.readouterr().err
        for name in expected:  # each bad file printed
            assert str(root / name) in err
        counts, _ = hand_count(root, 'training')
        if not defects:
            assert list(summary['splits']['train']['class_pixels'].values()) == counts.tolist()
    assert tool.main([str(tmp_path / 'missing.py')]) == 1
    assert 'missing.py: no such config file' in capsys.readouterr().err
