"""Dataset-level checks on MMSeg's ``BaseSegDataset`` (and so every MMSeg dataset).

:func:`install_dataset_checks` wraps two methods of ``BaseSegDataset``:

* ``load_data_list``: a dataset that finds no image raises :class:`DataCheckError`
  naming the folder, the suffixes and the layout it expects, instead of MMEngine's
  ``need at least one array to concatenate`` later on.
* ``prepare_data`` (one sample through the pipeline): it passes ``num_classes`` (from the
  dataset's classes) to the pipeline for :class:`~.transforms.LoadCheckedAnnotations`, and
  when a transform fails it names the sample's files. A missing, empty (zero bytes) or
  undecodable (truncated) image or annotation raises :class:`DataCheckError` with the
  file and the cause, in place of OpenCV's ``!buf.empty()`` or Pillow's ``image file is
  truncated``; any other failure keeps its type and gets a note naming the files. The
  packed input is also checked for NaN / infinite values.

Both cost nothing on the normal path beyond one ``isfinite`` pass over float inputs.
"""
import functools
import os
import os.path as osp
from typing import Optional

import torch

from ..compat import PluginError

__all__ = ['DataCheckError', 'describe_file_problem', 'install_dataset_checks']


class DataCheckError(PluginError):
    """A dataset file or folder is unusable; the message names it, the cause and the fix."""


def describe_file_problem(path: str) -> Optional[str]:
    """Why a local image/annotation file cannot be read, or None if it decodes.

    Args:
        path (str): File path (other storage backends are not inspected).

    Returns:
        str or None: e.g. ``'the file is empty (0 bytes)'``.
    """
    if not isinstance(path, str) or '://' in path:
        return None
    if not osp.exists(path):
        return 'the file does not exist'
    if osp.isdir(path):
        return 'it is a directory'
    if osp.getsize(path) == 0:
        return 'the file is empty (0 bytes)'
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()  # decodes everything: truncated files fail here
    except Exception as error:  # PIL raises several types for damaged files
        return f'it cannot be decoded as an image ({error}); it is truncated or damaged'
    return None


def _files_of(data_info: dict) -> dict:
    return {k: data_info[k] for k in ('img_path', 'seg_map_path') if data_info.get(k)}


def _checked_prepare_data(original):

    @functools.wraps(original)
    def prepare_data(self, idx):
        data_info = self.get_data_info(idx)
        classes = self.metainfo.get('classes')
        if classes:
            data_info.setdefault('num_classes', len(classes))
        files = _files_of(data_info)
        try:
            data = self.pipeline(data_info)
        except DataCheckError:
            raise
        except Exception as error:
            for kind, path in files.items():
                problem = describe_file_problem(path)
                if problem:
                    what = 'image' if kind == 'img_path' else 'annotation'
                    raise DataCheckError(
                        f'{what} {path} cannot be loaded: {problem}. Re-create, '
                        f're-download or remove it (sample {idx} of '
                        f'{type(self).__name__} at {self.data_root or self.data_prefix})'
                    ) from error
            if hasattr(error, 'add_note'):
                error.add_note(f'while loading sample {idx}: ' +
                               ', '.join(f'{k}={v}' for k, v in files.items()))
            raise
        inputs = data.get('inputs') if isinstance(data, dict) else None
        if isinstance(inputs, torch.Tensor) and inputs.is_floating_point() and \
                not torch.isfinite(inputs).all():
            raise DataCheckError(
                f'image {files.get("img_path", f"of sample {idx}")} has NaN or infinite '
                f'pixel values after the pipeline: one such pixel makes the whole '
                f'prediction NaN. Fix or remove the file')
        return data

    prepare_data.__mmseg_segman_checked__ = True
    return prepare_data


def _checked_load_data_list(original):

    @functools.wraps(original)
    def load_data_list(self):
        img_dir = self.data_prefix.get('img_path', None)
        ann_dir = self.data_prefix.get('seg_map_path', None)
        ann_file = self.ann_file if self.ann_file and not osp.isdir(self.ann_file) else None
        layout = (f'images {img_dir}/<name>{self.img_suffix}' +
                  (f' with annotations {ann_dir}/<name>{self.seg_map_suffix}'
                   if ann_dir else ''))
        name = type(self).__name__
        if ann_file is None and img_dir and '://' not in str(img_dir) and \
                not osp.isdir(img_dir):
            raise DataCheckError(
                f'{name}: image folder {img_dir} does not exist (data_root='
                f'{self.data_root!r}). Expected {layout}; set data_root / data_prefix, '
                f'or prepare the dataset as docs/get_started.md describes')
        data_list = original(self)
        if not data_list:
            found = ''
            if img_dir and osp.isdir(img_dir):
                entries = sorted(os.listdir(img_dir))[:5]
                found = (f'; it holds {", ".join(entries)}' if entries else '; it is empty')
            source = f'annotation list {ann_file}' if ann_file else f'folder {img_dir}'
            raise DataCheckError(
                f'{name}: no samples found in {source} (looking for *{self.img_suffix} '
                f'files{found}). Expected {layout}; check data_root, data_prefix and '
                f'img_suffix / seg_map_suffix')
        return data_list

    load_data_list.__mmseg_segman_checked__ = True
    return load_data_list


def install_dataset_checks() -> bool:
    """Wrap ``BaseSegDataset.prepare_data`` / ``load_data_list`` (idempotent).

    Subclasses that override ``load_data_list`` keep their own; every dataset gets the
    ``prepare_data`` checks unless it overrides that method.

    Returns:
        bool: True.
    """
    from mmseg.datasets import BaseSegDataset

    if not getattr(BaseSegDataset.__dict__.get('prepare_data'), '__mmseg_segman_checked__',
                   False):
        BaseSegDataset.prepare_data = _checked_prepare_data(BaseSegDataset.prepare_data)
    if not getattr(BaseSegDataset.load_data_list, '__mmseg_segman_checked__', False):
        BaseSegDataset.load_data_list = _checked_load_data_list(
            BaseSegDataset.load_data_list)
    return True
