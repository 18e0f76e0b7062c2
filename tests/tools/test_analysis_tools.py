"""MMSeg's analysis tools on our configs and training logs.

A toy run (tools/train.py, 4 iterations, validation at 2 and 4) and its test
(tools/test.py --out) give a real mmengine log, per-class IoU table and saved predictions.
On them:

* per-class IoU in the test log (``IoUMetric``'s table) whose mean is the printed mIoU;
* ``tools/analysis/confusion_matrix.py`` (ours; MMSeg's fails on config-given classes with
  ``KeyError: 'classes'`` and wraps its cell index in uint8 from 16 classes on): a PNG that
  decodes and shows the matrix, and per-class IoU equal to ``IoUMetric``'s;
* ``tools/analysis/analyze_logs.py`` (ours; MMSeg's imports seaborn, which nothing
  installs): loss and mIoU curves as a PNG;
* MMSeg's ``misc/print_config.py`` (works as shipped) on the toy and SegMAN-T configs.
"""
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import mmseg
import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]
TOY_CONFIG = REPO_ROOT / 'configs' / 'toy' / 'fcn-r18-narrow_toy.py'
MMSEG_TOOLS = Path(mmseg.__file__).parent / '.mim' / 'tools'
CLASSES = ('background', 'striped disc', 'checkered square', 'dotted triangle')
ROW = re.compile(r'^\|\s*([a-z ]+?)\s*\|\s*([\d.]+|nan)\s*\|\s*([\d.]+|nan)\s*\|$', re.M)


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(cmd, cwd, check=True):
    env = {**os.environ, 'MPLBACKEND': 'Agg'}
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, timeout=600,
                            capture_output=True, text=True)
    if check:
        assert result.returncode == 0, (
            f'{cmd} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}')
    return result


def loader_options(data_root):
    opts = ['train_cfg.max_iters=4', 'train_cfg.val_interval=2',
            'default_hooks.checkpoint.interval=2', 'default_hooks.logger.interval=1',
            'train_dataloader.batch_size=2', 'total_batch_size=2', 'randomness.seed=0']
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        opts += [f'{loader}.dataset.data_root={data_root}', f'{loader}.num_workers=0',
                 f'{loader}.persistent_workers=False']
    return opts


@pytest.fixture(scope='module')
def toy_run(tmp_path_factory):
    """(root, work_dir, test log text, prediction dir) of a 4-iteration toy run and its test."""
    root = tmp_path_factory.mktemp('analysis')
    _load(REPO_ROOT / 'tools' / 'make_toy_dataset.py', 'make_toy_dataset').make_toy_dataset(
        str(root / 'data'), num_train=4, num_val=3, size=48)
    work = root / 'work'
    opts = loader_options(root / 'data')
    run([sys.executable, REPO_ROOT / 'tools' / 'train.py', TOY_CONFIG, '--work-dir', work,
         '--cfg-options', *opts], root)
    pred = root / 'pred'
    result = run([sys.executable, REPO_ROOT / 'tools' / 'test.py', TOY_CONFIG,
                  work / 'iter_4.pth', '--out', pred, '--work-dir', root / 'test',
                  '--cfg-options', *opts], root)
    return root, work, result.stdout + result.stderr, pred


def _png(path: Path) -> np.ndarray:
    assert path.is_file() and path.stat().st_size > 1000, path
    with Image.open(path) as img:
        img.load()
        return np.asarray(img.convert('RGB'))


def _colour_pixels(image: np.ndarray, rgb) -> int:
    return int((np.abs(image.astype(int) - np.array(rgb)).sum(-1) < 30).sum())


def _iou_table(log: str) -> dict:
    rows = {m.group(1): float(m.group(2)) for m in ROW.finditer(log)}
    return {c: rows[c] for c in CLASSES if c in rows}


def test_per_class_iou_in_test_log(toy_run):
    _, _, log, _ = toy_run
    assert 'per class results:' in log
    table = _iou_table(log)
    assert list(table) == list(CLASSES), log[-3000:]
    miou = float(re.findall(r'mIoU: (\d+\.\d+)', log)[-1])
    present = [v for v in table.values() if not np.isnan(v)]
    assert abs(np.mean(present) - miou) < 0.01 + 1e-9  # the table's mean is the mIoU


def test_confusion_matrix_png_and_iou(toy_run):
    root, work, log, pred = toy_run
    assert len(list(pred.glob('*.png'))) == 3
    out = root / 'cm'
    run([sys.executable, REPO_ROOT / 'tools' / 'analysis' / 'confusion_matrix.py',
         work / TOY_CONFIG.name, pred, out], root)
    image = _png(out / 'confusion_matrix.png')
    assert image.shape[0] >= 300 and image.shape[1] >= 300
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 50  # cells, colour bar, text
    summary = json.loads((out / 'confusion_matrix.json').read_text())
    assert summary['classes'] == list(CLASSES)
    matrix = np.array(summary['matrix'])
    # every annotated pixel is counted once: 3 validation images of 48x48, no ignore label
    assert matrix.sum() == 3 * 48 * 48
    table = _iou_table(log)
    for name in CLASSES:  # the same per-class IoU as IoUMetric's table
        ours = summary['iou'][name]
        assert (ours is None and np.isnan(table[name])) or abs(ours - table[name]) < 0.006


def test_upstream_confusion_matrix_still_needs_our_replacement(toy_run):
    """MMSeg's script reads the classes from the dataset class (``METAINFO``), so configs
    that give them (toy, custom) fail; if this starts passing, drop our copy."""
    root, work, _, pred = toy_run
    result = run([sys.executable, MMSEG_TOOLS / 'analysis_tools' / 'confusion_matrix.py',
                  work / TOY_CONFIG.name, pred, root / 'cm_upstream'], root, check=False)
    assert result.returncode != 0 and "KeyError: 'classes'" in result.stderr


def test_confusion_matrix_counts_many_classes_without_overflow(tmp_path):
    """19 classes (Cityscapes): MMSeg's uint8 index 19 * 18 + 17 wraps to cell 103."""
    tool = _load(REPO_ROOT / 'tools' / 'analysis' / 'confusion_matrix.py', 'cm_tool')
    from mmengine.config import Config

    for folder in ('img', 'ann', 'pred'):
        (tmp_path / folder).mkdir()
    gt = np.full((8, 8), 18, np.uint8)
    gt[:2] = 255  # ignored
    pred = np.full((8, 8), 17, np.uint8)
    pred[4:] = 18
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / 'img' / 'a.png')
    Image.fromarray(gt).save(tmp_path / 'ann' / 'a.png')
    Image.fromarray(pred).save(tmp_path / 'pred' / 'a.png')
    cfg = Config(dict(default_scope='mmseg', test_dataloader=dict(dataset=dict(
        type='BaseSegDataset', data_root=str(tmp_path), img_suffix='.png',
        seg_map_suffix='.png', metainfo=dict(classes=[f'c{i}' for i in range(19)]),
        data_prefix=dict(img_path='img', seg_map_path='ann'), pipeline=[]))))
    matrix, classes = tool.confusion_matrix(cfg, str(tmp_path / 'pred'))
    assert len(classes) == 19 and matrix.sum() == 48
    assert matrix[18, 17] == 16 and matrix[18, 18] == 32
    iou = tool.per_class_iou(matrix)
    assert iou[18] == pytest.approx(32 / 48) and iou[17] == 0 and np.isnan(iou[0])
    # (the plot is checked by test_confusion_matrix_png_and_iou, slow tier)


def test_analyze_logs_curves_png(toy_run):
    root, work, _, _ = toy_run
    logs = list(work.glob('*/vis_data/scalars.json'))
    assert len(logs) == 1
    out = root / 'curves.png'
    run([sys.executable, REPO_ROOT / 'tools' / 'analysis' / 'analyze_logs.py', logs[0],
         '--keys', 'loss', 'mIoU', '--out', out], root)
    image = _png(out)
    assert image.shape[0] >= 400 and image.shape[1] >= 600
    # the two curves, in matplotlib's first colour (#1f77b4), with markers
    assert _colour_pixels(image, (0x1f, 0x77, 0xb4)) > 300
    assert (image.min(-1) < 200).mean() > 0.02  # axes, ticks, labels


def test_analyze_logs_reads_an_mmengine_log(tmp_path):
    """loss at every logged iteration, mIoU at each validation, per log; a missing key is
    one error line naming the keys there are."""
    tool = _load(REPO_ROOT / 'tools' / 'analysis' / 'analyze_logs.py', 'analyze_logs_tool')
    lines = []
    for it in range(1, 9):
        lines.append({'lr': 1e-3, 'loss': 2.0 / it, 'decode.loss_ce': 2.0 / it, 'time': 0.5,
                      'iter': it, 'step': it})
        if it % 4 == 0:
            lines.append({'aAcc': 50.0 + it, 'mIoU': 10.0 * it, 'mAcc': 30.0, 'step': it})
    log = tmp_path / 'scalars.json'
    log.write_text(''.join(json.dumps(line) + '\n' for line in lines))
    curves = tool.load_log(str(log))
    assert curves['loss'] == [(it, 2.0 / it) for it in range(1, 9)]
    assert curves['mIoU'] == [(4, 40.0), (8, 80.0)]
    assert 'iter' not in curves and 'step' not in curves
    run_dir = tmp_path / 'work' / '20261207_000000' / 'vis_data'
    run_dir.mkdir(parents=True)
    (run_dir / 'scalars.json').write_text(''.join(
        json.dumps({k: v / 2 if k == 'loss' else v for k, v in line.items()}) + '\n'
        for line in lines))
    out = tmp_path / 'two.png'
    # a log file and a work dir (its latest run's scalars.json), one line each
    assert tool.main([str(log), str(tmp_path / 'work'), '--legend', 'a', 'b',
                      '--out', str(out)]) == 0
    image = _png(out)
    assert _colour_pixels(image, (0x1f, 0x77, 0xb4)) > 100  # first log
    assert _colour_pixels(image, (0xff, 0x7f, 0x0e)) > 100  # second log
    assert tool.main([str(log), '--keys', 'los', '--out', str(tmp_path / 'x.png')]) == 1
    assert not (tmp_path / 'x.png').exists()


def test_upstream_analyze_logs_needs_seaborn(tmp_path):
    """MMSeg's analyze_logs.py imports seaborn (and so pandas), which nothing installs:
    without it the script cannot start, hence our matplotlib-only replacement."""
    if importlib.util.find_spec('seaborn') is not None:
        pytest.skip('seaborn is installed here: the upstream script can start')
    log = tmp_path / 'scalars.json'
    log.write_text(json.dumps({'loss': 1.0, 'iter': 1, 'step': 1}) + '\n')
    result = run([sys.executable, MMSEG_TOOLS / 'analysis_tools' / 'analyze_logs.py', log,
                  '--keys', 'loss', '--out', tmp_path / 'up.png'], tmp_path, check=False)
    assert result.returncode != 0
    assert "No module named 'seaborn'" in result.stderr


@pytest.mark.parametrize('config,model_type', [
    (TOY_CONFIG, 'EncoderDecoder'),
    (REPO_ROOT / 'configs' / 'segman' / 'segman-t_ade20k.py', 'SegMANEncoder'),
])
def test_mmseg_print_config(tmp_path, config, model_type):
    """MMSeg's print_config.py works on our configs as shipped (the config's
    custom_imports load the plugin); it also dumps example.py into the working dir."""
    result = run([sys.executable, MMSEG_TOOLS / 'misc' / 'print_config.py', config,
                  '--graph'], tmp_path)
    assert 'Config:\n' in result.stdout
    assert f"type='{model_type}'" in result.stdout
    assert 'Model graph:' in result.stdout and f'{model_type}(' in result.stdout
    dumped = (tmp_path / 'example.py').read_text()
    assert "custom_imports = dict(" in dumped and "'mmseg_segman'" in dumped
