"""Confusion matrix (PNG and JSON) of saved predictions against a config's annotations.

Replaces MMSeg's ``tools/analysis_tools/confusion_matrix.py`` (MMSeg 1.2.2 and
onedl-mmsegmentation 1.4.2), which

* reads the class names from the dataset class's ``METAINFO``, not from the built
  dataset's ``metainfo``: every dataset whose classes come from the config (the toy
  configs, the custom-dataset template, any ``BaseSegDataset``) fails with
  ``KeyError: 'classes'``;
* forms the cell index ``n * gt + pred`` in uint8 (the annotation is cast to uint8), which
  wraps around for 16 classes or more: Cityscapes (19), ADE20K (150) and COCO-Stuff (171)
  get silently wrong matrices (19 * 18 + 18 = 360 lands in cell 104);
* pairs predictions with samples by sorting file names, and draws a figure of
  2n x 1.6n inches at 300 dpi (ADE20K: 90000 x 72000 pixels).

Here cells are counted in int64, predictions are matched to samples by name (as
``tools/test.py --out DIR`` writes them: ``<image name>.png``, shifted by +1 under
``reduce_zero_label``), annotations are loaded by MMSeg's ``LoadAnnotations`` (label_map and
reduce_zero_label applied), and the figure size is capped (cell values are written up to
30 classes). It also writes ``confusion_matrix.json`` (raw counts and the per-class IoU
they imply, which equals ``IoUMetric``'s).

Usage::

    python tools/test.py CONFIG CHECKPOINT --out PRED_DIR
    python tools/analysis/confusion_matrix.py CONFIG PRED_DIR SAVE_DIR [--split test]
"""
import argparse
import json
import os
import os.path as osp
import sys
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np


def confusion_matrix(cfg: Any, prediction_dir: str,
                     split: str = 'test') -> Tuple[np.ndarray, List[str]]:
    """Counts ``matrix[gt, pred]`` over the ``<split>_dataloader`` dataset of ``cfg``.

    Returns:
        tuple: the (n, n) int64 matrix and the class names.
    """
    import mmcv
    from mmengine import fileio
    from mmengine.registry import init_default_scope
    from mmseg.datasets.transforms import LoadAnnotations
    from mmseg.registry import DATASETS

    init_default_scope(cfg.get('default_scope', 'mmseg') or 'mmseg')
    loader = cfg.get(f'{split}_dataloader')
    if not loader or not loader.get('dataset'):
        raise KeyError(f'{split}_dataloader: not in the config; choose --split among '
                       'train, val, test')
    ds_cfg = loader['dataset'].copy()
    ds_cfg['pipeline'] = []
    dataset = DATASETS.build(ds_cfg)
    classes = list(dataset.metainfo.get('classes') or [])
    if not classes:
        raise KeyError(f'{split}_dataloader.dataset: the dataset has no classes')
    n = len(classes)
    ignore_index = getattr(dataset, 'ignore_index', 255)
    load = LoadAnnotations()
    matrix = np.zeros((n, n), np.int64)
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        name = osp.splitext(osp.basename(info['img_path']))[0] + '.png'
        pred_path = osp.join(prediction_dir, name)
        if not osp.isfile(pred_path):
            raise FileNotFoundError(f'{pred_path}: no prediction for {info["img_path"]}; '
                                    f'write them with tools/test.py CONFIG CHECKPOINT --out '
                                    f'{prediction_dir}')
        pred = mmcv.imfrombytes(fileio.get(pred_path), flag='unchanged',
                                backend='pillow').astype(np.int64)
        load.reduce_zero_label = bool(info.get('reduce_zero_label', False))
        gt = load(dict(info, seg_fields=[]))['gt_seg_map'].astype(np.int64)
        if pred.shape != gt.shape:
            raise ValueError(f'{pred_path}: prediction is {pred.shape[0]}x{pred.shape[1]} but '
                             f'the annotation {info["seg_map_path"]} is '
                             f'{gt.shape[0]}x{gt.shape[1]}')
        if info.get('reduce_zero_label', False):
            pred = pred - 1  # IoUMetric saves pred + 1 under reduce_zero_label
        keep = (gt != ignore_index) & (gt >= 0) & (gt < n) & (pred >= 0) & (pred < n)
        matrix += np.bincount(n * gt[keep] + pred[keep], minlength=n * n).reshape(n, n)
    return matrix, classes


def per_class_iou(matrix: np.ndarray) -> np.ndarray:
    """IoU of each class from the counts (NaN for a class absent from gt and prediction)."""
    tp = np.diag(matrix).astype(np.float64)
    union = matrix.sum(0) + matrix.sum(1) - tp
    with np.errstate(invalid='ignore', divide='ignore'):
        return tp / union


def plot_confusion_matrix(matrix: np.ndarray, classes: Sequence[str], out: str,
                          title: str = 'Normalized confusion matrix',
                          cmap: str = 'OrRd') -> str:
    """Row-normalised matrix (% of each ground-truth class) as a PNG; returns ``out``."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    n = len(classes)
    rows = matrix.sum(1, keepdims=True)
    with np.errstate(invalid='ignore', divide='ignore'):
        percent = np.where(rows > 0, 100.0 * matrix / np.maximum(rows, 1), np.nan)
    side = float(min(max(4.0, 0.6 * n + 2.5), 30.0))
    fig, ax = plt.subplots(figsize=(side + 1.5, side), dpi=100)
    image = ax.imshow(percent, cmap=cmap, vmin=0, vmax=100)
    fig.colorbar(image, ax=ax, label='% of the ground-truth class')
    ax.set_title(title)
    ax.set_xlabel('prediction')
    ax.set_ylabel('ground truth')
    if n <= 60:
        ax.set_xticks(range(n), labels=classes, rotation=45, ha='right')
        ax.set_yticks(range(n), labels=classes)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                text = '-' if np.isnan(percent[i, j]) else f'{percent[i, j]:.1f}'
                ax.text(j, i, text, ha='center', va='center', fontsize=8,
                        color='white' if percent[i, j] > 60 else 'black')
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    from mmengine.config import Config, DictAction

    parser = argparse.ArgumentParser(description='Confusion matrix of saved predictions')
    parser.add_argument('config', help='config file')
    parser.add_argument('prediction_dir', help='predictions of tools/test.py --out DIR')
    parser.add_argument('save_dir', help='folder for confusion_matrix.png / .json')
    parser.add_argument('--split', default='test', help='dataloader (default test)')
    parser.add_argument('--title', default='Normalized confusion matrix')
    parser.add_argument('--color-theme', default='OrRd', help='matplotlib colour map')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args(argv)
    try:
        import mmseg_segman  # noqa: F401  (the plugin's registered names in configs)
    except ImportError as err:
        print(f'error: mmseg_segman cannot be imported ({err}); install the plugin in this '
              'Python environment (pip install -e .)', file=sys.stderr)
        return 1
    if not osp.isfile(args.config):
        print(f'error: {args.config}: no such config file', file=sys.stderr)
        return 1
    if not osp.isdir(args.prediction_dir):
        print(f'error: {args.prediction_dir}: no such folder; write the predictions with '
              f'tools/test.py CONFIG CHECKPOINT --out {args.prediction_dir}', file=sys.stderr)
        return 1
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    try:
        matrix, classes = confusion_matrix(cfg, args.prediction_dir, args.split)
    except (OSError, ValueError, KeyError) as err:
        print(f'error: {err.args[0] if err.args else err}', file=sys.stderr)
        return 1
    os.makedirs(args.save_dir, exist_ok=True)
    png = plot_confusion_matrix(matrix, classes, osp.join(args.save_dir, 'confusion_matrix.png'),
                                args.title, args.color_theme)
    iou = per_class_iou(matrix)
    with open(osp.join(args.save_dir, 'confusion_matrix.json'), 'w') as f:
        json.dump(dict(classes=classes, matrix=matrix.tolist(),
                       iou={c: None if np.isnan(v) else round(100 * float(v), 2)
                            for c, v in zip(classes, iou)}), f, indent=2)
    for c, v in zip(classes, iou):
        print(f'{c:>24s}  IoU {100 * v:6.2f}')
    print(f'confusion matrix saved to {png}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
