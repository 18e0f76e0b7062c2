"""Multi-scale + flip test (``--tta``): every config's ``tta_pipeline`` gives the official
branch sizes, and ``tools/test.py --tta`` runs on the configs users copy.

The expected size of each branch is computed here, with plain arithmetic, from the
official repositories' test-time protocol:

* SegMAN and SegNeXt (MMSeg 0.x ``MultiScaleFlipAug`` with the ratios and flip of their
  ``tools/test.py --aug-test``): ratio ``r`` rescales the image to fit inside
  ``(int(L * r), int(S * r))``, as ``mmcv.imrescale`` does (factor ``min(long target /
  long edge, short target / short edge)``, each side ``int(side * factor + 0.5)``), with
  ``(L, S) = (2048, 512)`` on ADE20K and COCO-Stuff, then each side rounded up to a
  multiple of 32 (SegMAN's ``AlignedResize``, SegNeXt's ``ResizeToMultiple``);
  ``(2048, 1024)`` and no alignment on Cityscapes. SegMAN's COCO-Stuff pipeline rescales
  twice (``Resize`` then ``AlignedResize``), which the rule below repeats literally.
* LRFormer (its MMSeg 1.x ``Resize(scale_factor=r, keep_ratio=True)``): the target is the
  original size times ``r`` rounded, and the image is rescaled to fit inside it.
* The toy and custom-dataset configs: the SegMAN/SegNeXt rule at their own test scale
  ((128, 128) and (2048, 512)) without alignment, as their single-scale test.

Each image goes through the dataset of the config (files written to ``tmp_path`` with the
dataset's folders and suffixes), as ``tools/test.py --tta`` would load it.
"""
import functools
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from config_helpers import strip_pretrained
from mmengine import Config
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO_ROOT / 'configs'
FAMILIES = ('segman', 'segnext', 'lrformer')
PAPER_CONFIGS = sorted(p for f in FAMILIES for p in (CONFIG_DIR / f).glob('*.py'))
TOY_CONFIGS = sorted((CONFIG_DIR / 'toy').glob('*.py'))
CUSTOM_CONFIG = CONFIG_DIR / 'custom' / 'segman-t_custom.py'
CONFIGS = PAPER_CONFIGS + TOY_CONFIGS + [CUSTOM_CONFIG]
RATIOS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
# (height, width): landscape and portrait ADE20K-like, a large one, a tiny one.
SIZES = ((250, 333), (333, 250), (768, 1024), (48, 64))

from make_toy_dataset import make_toy_dataset  # noqa: E402


def config_id(path):
    return str(path.relative_to(CONFIG_DIR))


@functools.lru_cache(maxsize=None)
def load(config):
    """The parsed config, shared by the tests below (which do not modify it)."""
    return Config.fromfile(str(config))


def dataset_of(path):
    for name in ('ade20k', 'cityscapes', 'coco-stuff164k', 'toy', 'custom'):
        if path.stem.endswith(name):
            return name
    raise ValueError(path)


# ---- the official rule, independent of MMCV -------------------------------------------

def _round(x):
    return int(x + 0.5)  # mmcv's _scale_size


def fit_inside(h, w, target):
    """(h, w) rescaled to fit inside ``target`` = two edges, the longer for the longer side."""
    factor = min(max(target) / max(h, w), min(target) / min(h, w))
    return _round(h * factor), _round(w * factor)


def up_to_32(h, w):
    return math.ceil(h / 32) * 32, math.ceil(w / 32) * 32


def official_sizes(config, h, w):
    """The (h, w) of each ratio's branch under the config family's official protocol."""
    family, dataset = config.parent.name, dataset_of(config)
    sizes = []
    for r in RATIOS:
        if family == 'lrformer':
            size = fit_inside(h, w, (_round(w * r), _round(h * r)))
        elif dataset in ('ade20k', 'coco-stuff164k'):
            target = (int(2048 * r), int(512 * r))
            size = fit_inside(h, w, target)
            if family == 'segman' and dataset == 'coco-stuff164k':
                size = fit_inside(*size, target)  # Resize, then AlignedResize's rescale
            size = up_to_32(*size)
        elif dataset == 'cityscapes':
            size = fit_inside(h, w, (int(2048 * r), int(1024 * r)))
        elif dataset == 'toy':
            size = fit_inside(h, w, (int(128 * r), int(128 * r)))
        else:  # custom: the template's scale (2048, 512), no alignment
            size = fit_inside(h, w, (int(2048 * r), int(512 * r)))
        sizes.append(size)
    return sizes


def test_rule_matches_the_issue_example():
    # The issue's 333x250 image: ratio 1.0 is 682x512 (rescaled to fit 2048x512), then
    # aligned to 704x512 for SegMAN/SegNeXt on ADE20K; LRFormer keeps 333x250.
    assert fit_inside(250, 333, (2048, 512)) == (512, 682)
    assert official_sizes(CONFIG_DIR / 'segman' / 'segman-t_ade20k.py', 250, 333)[2] == \
        (512, 704)
    # LRFormer: 333x250 times r, rounded, then fitted inside that: at 1.25 the target is
    # 416x313 and the fit 416x312 (factor 416 / 333), as MMCV's Resize computes it.
    assert official_sizes(CONFIG_DIR / 'lrformer' / 'lrformer-t_ade20k.py', 250, 333) == [
        (125, 167), (188, 250), (250, 333), (312, 416), (375, 500), (438, 583)]
    assert official_sizes(CONFIG_DIR / 'segman' / 'segman-t_cityscapes.py', 1024, 2048) == [
        (int(1024 * r), int(2048 * r)) for r in RATIOS]


def test_every_config_is_covered():
    assert len(PAPER_CONFIGS) == 36
    assert {config_id(p) for p in TOY_CONFIGS} == {'toy/fcn-r18-narrow_toy.py',
                                                    'toy/segman-t_toy.py'}


# ---- running the configs' pipelines -----------------------------------------------------

@pytest.fixture(autouse=True, scope='module')
def mmseg_scope():
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=False)
    init_default_scope('mmseg')


def write_dataset(root, dataset_cfg):
    """Write one image/annotation pair per size where ``dataset_cfg`` looks for them."""
    probe = DATASETS.build(dict(dataset_cfg, data_root=str(root), lazy_init=True))
    prefix = dataset_cfg.data_prefix
    img_dir, seg_dir = root / prefix['img_path'], root / prefix['seg_map_path']
    img_dir.mkdir(parents=True)
    seg_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(SIZES):
        cv2.imwrite(str(img_dir / f'{i}{probe.img_suffix}'),
                    rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        # Label 1 is a valid class everywhere (ADE20K: class 0 after reduce_zero_label).
        cv2.imwrite(str(seg_dir / f'{i}{probe.seg_map_suffix}'), np.ones((h, w), np.uint8))


_RESULTS = {}


def tta_branches(config, tmp_path_factory):
    """For each image size (h, w), the [((h, w), flip, image)] of the config's TTA branches.

    Configs with the same dataset and ``tta_pipeline`` give the same output, so each
    such pair is run once.
    """
    cfg = load(config)
    dataset_cfg = cfg.test_dataloader.dataset
    key = json.dumps([dataset_cfg.type, dataset_cfg.data_prefix, cfg.tta_pipeline],
                     sort_keys=True, default=str)
    if key not in _RESULTS:
        root = tmp_path_factory.mktemp('data')
        write_dataset(root, dataset_cfg)
        dataset = DATASETS.build(dict(dataset_cfg, data_root=str(root),
                                      pipeline=cfg.tta_pipeline))
        assert len(dataset) == len(SIZES)
        by_size = {}
        for i in range(len(dataset)):
            out = dataset[i]
            shape = tuple(out['data_samples'][0].ori_shape)
            by_size[shape] = [
                (tuple(sample.img_shape), sample.flip, inputs)
                for inputs, sample in zip(out['inputs'], out['data_samples'])]
            for inputs, sample in zip(out['inputs'], out['data_samples']):
                assert tuple(inputs.shape[1:]) == tuple(sample.img_shape)
                assert sample.gt_sem_seg.data.shape[1:] == shape  # scored at full size
            # each flipped branch is its unflipped twin mirrored (checked once per pipeline)
            for size in {s for s, _, _ in by_size[shape]}:
                plain = [x for s, flip, x in by_size[shape] if s == size and not flip]
                mirrored = [x for s, flip, x in by_size[shape] if s == size and flip]
                assert plain and len(plain) == len(mirrored), (config, shape, size)
                assert all(torch.equal(a.flip(-1), b) for a, b in zip(plain, mirrored))
        _RESULTS[key] = by_size
    return _RESULTS[key]


@pytest.mark.parametrize('config', CONFIGS, ids=config_id)
def test_tta_branches_follow_the_official_rule(config, tmp_path_factory):
    branches = tta_branches(config, tmp_path_factory)
    assert set(branches) == set(SIZES)
    for (h, w), outputs in branches.items():
        expected = official_sizes(config, h, w)
        # One unflipped and one flipped branch per ratio, nothing else.
        assert sorted((shape, flip) for shape, flip, _ in outputs) == sorted(
            (size, flip) for size in expected for flip in (False, True)), (h, w)


@pytest.mark.parametrize(
    'config', [c for c in CONFIGS if c.parent.name != 'lrformer'], ids=config_id)
def test_ratio_one_is_the_single_scale_test(config, tmp_path_factory):
    """Outside LRFormer, ratio 1.0 is the single-scale test (the issue's complaint)."""
    branches = tta_branches(config, tmp_path_factory)
    single = single_scale_shapes(config, tmp_path_factory)
    assert set(single) == set(SIZES)
    for ori_shape, img_shape in single.items():
        ratio_one = official_sizes(config, *ori_shape)[RATIOS.index(1.0)]
        assert img_shape == ratio_one
        assert (ratio_one, False) in [(s, f) for s, f, _ in branches[ori_shape]]


_SINGLE = {}


def single_scale_shapes(config, tmp_path_factory):
    """{original (h, w): image (h, w)} of the config's single-scale test pipeline, run once
    per distinct dataset and pipeline (variants of a family share them)."""
    cfg = load(config)
    dataset_cfg = cfg.test_dataloader.dataset
    key = json.dumps([dataset_cfg.type, dataset_cfg.data_prefix, dataset_cfg.pipeline],
                     sort_keys=True, default=str)
    if key not in _SINGLE:
        root = tmp_path_factory.mktemp('data')
        write_dataset(root, dataset_cfg)
        dataset = DATASETS.build(dict(dataset_cfg, data_root=str(root)))
        samples = [dataset[i]['data_samples'] for i in range(len(dataset))]
        _SINGLE[key] = {tuple(s.ori_shape): tuple(s.img_shape) for s in samples}
    return _SINGLE[key]


@pytest.mark.parametrize('config', CONFIGS, ids=config_id)
def test_tta_model_wraps_the_config_model(config, meta_model_of):
    """``--tta``'s model swap works on every config: SegTTAModel around the segmentor (the
    segmentor built once per session, tests/configs/conftest.py)."""
    from mmseg.models import SegTTAModel
    from mmseg.registry import MODELS

    cfg = load(config)
    model = MODELS.build(dict(cfg.tta_model, module=meta_model_of(config)))
    assert isinstance(model, SegTTAModel)
    assert type(model.module).__name__ == cfg.model.type


# ---- tools/test.py --tta ------------------------------------------------------------------

def background_checkpoint(cfg, path):
    """A checkpoint of ``cfg.model`` whose classifier predicts class 0 everywhere.

    Its last layer has zero weights and a bias of 10 for class 0, so the expected metrics
    follow from the label files alone (see ``expected_metrics``).
    """
    from mmseg.registry import MODELS

    torch.manual_seed(0)
    model = MODELS.build(strip_pretrained(cfg.model.to_dict()))
    with torch.no_grad():
        model.decode_head.conv_seg.weight.zero_()
        model.decode_head.conv_seg.bias.zero_()
        model.decode_head.conv_seg.bias[0] = 10.0
    torch.save({'meta': {}, 'state_dict': model.state_dict()}, path)
    return path


def expected_metrics(label_files):
    """aAcc and mIoU (in %) of predicting class 0 everywhere, from the label counts.

    Class 0 has IoU = its pixels / all pixels; every other class present has IoU 0;
    classes absent from the labels (and never predicted) have no IoU and are skipped,
    as MMSeg's IoUMetric does. Totals are summed over the images before dividing.
    """
    counts = sum(np.bincount(cv2.imread(str(f), cv2.IMREAD_UNCHANGED).ravel(),
                             minlength=256) for f in label_files)
    counts = counts[:255]  # 255: not labelled, left out of every count
    background = counts[0] / counts.sum()
    present = np.count_nonzero(counts)
    return 100 * background, 100 * background / present


def tools_test_tta(cfg, checkpoint, data_root, work_dir):
    """Run ``tools/test.py CONFIG CHECKPOINT --tta`` in-process: the config changes of
    MMSeg's script, then ``Runner.test()``. Returns (metrics, branch shapes per call of
    the wrapped segmentor)."""
    from mmengine.runner import Runner

    cfg.work_dir = str(work_dir)
    cfg.load_from = str(checkpoint)
    cfg.test_dataloader.dataset.data_root = str(data_root)
    cfg.test_dataloader.num_workers = 0
    cfg.test_dataloader.persistent_workers = False
    # tools/test.py, `if args.tta:`
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    cfg.tta_model.module = cfg.model
    cfg.model = cfg.tta_model
    runner = Runner.from_cfg(cfg)
    segmentor = runner.model.module
    calls = []
    test_step = segmentor.test_step

    def counting_test_step(data):
        calls.append([tuple(x.shape[1:]) for x in data['inputs']])
        return test_step(data)

    segmentor.test_step = counting_test_step
    metrics = runner.test()
    return metrics, calls


def check_tta_run(metrics, calls, sizes, label_files):
    """One call per image, ratio and flip, at the sizes of the official rule, and the
    metrics of the all-background checkpoint."""
    assert sorted(calls) == sorted([size] for size in sizes for _ in range(2))
    a_acc, miou = expected_metrics(label_files)
    assert 0 < miou < a_acc < 100  # the labels have background and other classes
    assert metrics['aAcc'] == pytest.approx(a_acc, abs=0.006)
    assert metrics['mIoU'] == pytest.approx(miou, abs=0.006)


@pytest.mark.slow
@pytest.mark.parametrize('config', TOY_CONFIGS, ids=config_id)
def test_tools_test_tta_on_toy_configs(config, tmp_path):
    data = tmp_path / 'toy'
    make_toy_dataset(str(data), num_train=1, num_val=2, size=32)
    # Unformatted: MMEngine's yapf pass, each time the Runner logs or dumps the config, is
    # not what this test checks.
    cfg = Config.fromfile(str(config), format_python_code=False)
    checkpoint = background_checkpoint(cfg, tmp_path / 'model.pth')
    metrics, calls = tools_test_tta(cfg, checkpoint, data, tmp_path / 'work')
    sizes = official_sizes(config, 32, 32) * 2  # two 32x32 validation images
    assert sizes[:6] == [(64, 64), (96, 96), (128, 128), (160, 160), (192, 192), (224, 224)]
    check_tta_run(metrics, calls, sizes,
                  sorted((data / 'annotations' / 'validation').glob('*.png')))


@pytest.mark.slow
def test_tools_test_tta_on_the_custom_template(tmp_path):
    """The template as docs/datasets.md says to use it: copy the dataset base, edit its
    first block (here: the data root and a small test scale, for speed), keep the leaf."""
    configs = tmp_path / 'configs'
    (configs / '_base_' / 'datasets').mkdir(parents=True)
    for name in ('models', 'schedules', 'default_runtime.py'):
        (configs / '_base_' / name).symlink_to(CONFIG_DIR / '_base_' / name)
    base = (CONFIG_DIR / '_base_' / 'datasets' / 'custom_dataset.py').read_text()
    edited = base.replace("data_root = 'data/my_dataset'", f"data_root = '{tmp_path}/data'")
    edited = edited.replace('scale = (2048, 512)', 'scale = (128, 64)')
    assert edited.count(str(tmp_path)) == 1 and 'scale = (128, 64)' in edited
    (configs / '_base_' / 'datasets' / 'custom_dataset.py').write_text(edited)
    (configs / 'custom').mkdir()
    leaf = configs / 'custom' / CUSTOM_CONFIG.name
    leaf.write_text(CUSTOM_CONFIG.read_text())

    rng = np.random.default_rng(0)
    images, labels = tmp_path / 'data' / 'images' / 'val', tmp_path / 'data' / 'annotations' / 'val'
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    for i in range(2):
        cv2.imwrite(str(images / f'{i}.jpg'), rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
        label = np.zeros((48, 64), np.uint8)
        label[10:30, 20:50 - 10 * i] = 1
        label[0, :] = 255  # not labelled: counted nowhere
        cv2.imwrite(str(labels / f'{i}.png'), label)

    cfg = Config.fromfile(str(leaf), format_python_code=False)  # as above
    checkpoint = background_checkpoint(cfg, tmp_path / 'model.pth')
    metrics, calls = tools_test_tta(cfg, checkpoint, tmp_path / 'data', tmp_path / 'work')
    # The template's rule at the edited scale: fit inside (128r, 64r), no alignment.
    sizes = [fit_inside(48, 64, (int(128 * r), int(64 * r))) for r in RATIOS]
    assert sizes[2] == (64, 85)  # ratio 1.0: 64x48 enlarged by min(128/64, 64/48)
    check_tta_run(metrics, calls, sizes * 2, sorted(labels.glob('*.png')))
