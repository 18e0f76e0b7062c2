"""``LoadCheckedImageFromFile`` and ``LoadCheckedAnnotations``: MMSeg's loaders that check.

Bad annotations otherwise fail far from their cause or not at all: an annotation smaller
than its image is cropped and padded (with 255) out of alignment and only crashes at
validation with an ``IndexError``; a label value >= ``num_classes`` crashes training with
``Target 7 is out of bounds`` and, at test time, its pixels silently drop out of the
mIoU. Every check here names the file. They cost one pass over the label map
(``np.bincount``) and, for float images only, one over the image.
"""
from typing import Optional

import numpy as np
from mmcv.transforms import LoadImageFromFile
from mmseg.datasets.transforms import LoadAnnotations
from mmseg.registry import TRANSFORMS

from .checks import DataCheckError, describe_file_problem

__all__ = ['LoadCheckedImageFromFile', 'LoadCheckedAnnotations', 'check_finite_image',
           'check_label_values']


def check_finite_image(img: np.ndarray, path: str) -> None:
    """Raise :class:`DataCheckError` if a float image has NaN or infinite pixels.

    Args:
        img (np.ndarray): The image (integer images are always finite and not scanned).
        path (str): The image file, for the message.
    """
    if not np.issubdtype(img.dtype, np.floating):
        return
    finite = np.isfinite(img)
    if not finite.all():
        bad = int(img.size - np.count_nonzero(finite))
        raise DataCheckError(
            f'image {path} has {bad} NaN or infinite pixel value(s): one such pixel makes '
            f'the whole prediction NaN (normalisation and attention spread it). Fix or '
            f'remove the file')


def check_label_values(seg: np.ndarray, num_classes: int, ignore_index: int, path: str,
                       reduce_zero_label: bool = False) -> None:
    """Raise :class:`DataCheckError` for labels outside ``[0, num_classes)`` but ignore.

    Args:
        seg (np.ndarray): The label map after ``reduce_zero_label`` / ``label_map``.
        num_classes (int): Number of classes of the dataset.
        ignore_index (int): The label that is not trained or scored.
        path (str): The annotation file, for the message.
        reduce_zero_label (bool): Whether the file's values were shifted down by one.
    """
    if seg.dtype == np.uint8:
        counts = np.bincount(seg.ravel(), minlength=256)
        values = np.flatnonzero(counts)
    else:
        values, counts_of = np.unique(seg, return_counts=True)
        counts = dict(zip(values.tolist(), counts_of.tolist()))
    bad = [int(v) for v in values if (v < 0 or v >= num_classes) and v != ignore_index]
    if not bad:
        return
    shown = ', '.join(f'{v} ({int(counts[v])} px)' for v in bad[:8])
    more = f' and {len(bad) - 8} more values' if len(bad) > 8 else ''
    shift = (' (after reduce_zero_label, which subtracts 1 from the file\'s values and '
             'maps 0 to the ignore index)') if reduce_zero_label else ''
    raise DataCheckError(
        f'annotation {path} has label values {shown}{more} outside [0, {num_classes}) that '
        f'are not the ignore index {ignore_index}{shift}. Training would fail with '
        f'"Target out of bounds" and evaluation would leave those pixels out of the '
        f'mIoU. Fix the file, or the dataset\'s classes / reduce_zero_label settings')


@TRANSFORMS.register_module()
class LoadCheckedImageFromFile(LoadImageFromFile):
    """mmcv's ``LoadImageFromFile`` that names the file and the cause when it cannot load.

    A zero-byte, truncated or undecodable image raises
    :class:`~mmseg_segman.datasets.DataCheckError` (file, cause, what to do) in place of
    OpenCV's ``!buf.empty()`` or ``failed to load image``; a float image with NaN or
    infinite pixels is refused too (one such pixel makes the whole prediction NaN).

    Args:
        **kwargs: ``LoadImageFromFile`` arguments (``to_float32``, ``color_type``,
            ``imdecode_backend``, ``backend_args``, ``ignore_empty``).
    """

    def transform(self, results: dict) -> Optional[dict]:
        path = results.get('img_path')
        try:
            loaded = super().transform(results)
        except Exception as error:
            problem = describe_file_problem(path)
            if problem is None:
                raise
            raise DataCheckError(f'image {path} cannot be loaded: {problem}. Re-create, '
                                 f're-download or remove it') from error
        if loaded is not None:
            check_finite_image(loaded['img'], path or '<in-memory image>')
        return loaded


@TRANSFORMS.register_module()
class LoadCheckedAnnotations(LoadAnnotations):
    """``LoadAnnotations`` with file, size and label-value checks.

    After loading the label map (as MMSeg's ``LoadAnnotations``, whose arguments it
    takes) it raises :class:`~mmseg_segman.datasets.DataCheckError`, naming the file,
    when:

    * the file is empty, truncated or cannot be decoded;
    * its size differs from its image's (``ori_shape``, set by ``LoadImageFromFile``);
    * a label is outside ``[0, num_classes)`` and is not ``ignore_index``
      (``num_classes`` is the argument, else the dataset's number of classes, which
      ``DataCheckHook`` binds for every run);
    * the image loaded before it is a float image with NaN or infinite pixels.

    Without ``seg_map_path`` (inference on plain images) it only checks the image.

    Args:
        num_classes (int, optional): Overrides the dataset's number of classes.
        ignore_index (int): The label excluded from training and metrics. Default: 255.
        **kwargs: ``LoadAnnotations`` arguments (``reduce_zero_label``,
            ``imdecode_backend``, ``backend_args``).
    """

    def __init__(self, num_classes: Optional[int] = None, ignore_index: int = 255,
                 **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def transform(self, results: dict) -> dict:
        if 'img' in results:
            check_finite_image(results['img'], results.get('img_path', '<in-memory image>'))
        path = results.get('seg_map_path')
        if path is None:
            return results
        try:
            results = super().transform(results)
        except DataCheckError:
            raise
        except Exception as error:
            problem = describe_file_problem(path)
            raise DataCheckError(
                f'annotation {path} cannot be loaded: {problem or error}'
                f'{"" if problem else f" ({type(error).__name__})"}. Re-create or remove '
                f'the file') from error
        seg = results['gt_seg_map']
        if seg.ndim != 2:
            raise DataCheckError(
                f'annotation {path} has shape {list(seg.shape)}: expected a single-channel '
                f'map of class indices (a colour-coded annotation must be converted to '
                f'indices first)')
        ori_shape = results.get('ori_shape')
        if ori_shape is not None and tuple(seg.shape[:2]) != tuple(ori_shape[:2]):
            raise DataCheckError(
                f'annotation {path} is {seg.shape[0]}x{seg.shape[1]} (HxW) but its image '
                f'{results.get("img_path")} is {ori_shape[0]}x{ori_shape[1]}: labels would '
                f'not line up with the pixels. Fix the pair (same size) or remove it')
        num_classes = self.num_classes or results.get('num_classes')
        if num_classes:
            check_label_values(seg, num_classes, self.ignore_index, path,
                               bool(results.get('reduce_zero_label')))
        return results

    def __repr__(self) -> str:
        return (super().__repr__()[:-1] + f', num_classes={self.num_classes}, '
                f'ignore_index={self.ignore_index})')
