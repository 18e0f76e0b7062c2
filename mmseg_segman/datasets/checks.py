"""Dataset checks that need the dataset, not one sample.

* :func:`bind_num_classes` hands a built dataset's number of classes to its
  :class:`~.transforms.LoadCheckedAnnotations` (``DataCheckHook`` does it for every run).
* :func:`check_dataset_folders` is the pre-flight check of the plugin's tools: before
  anything is built, each dataset of a config must have its image folder, holding files
  with the expected suffix; the message names the folder, the layout and
  ``docs/datasets.md``.
* :func:`describe_file_problem` says why an image or annotation file cannot be read.

Nothing here changes MMSeg's dataset classes.
"""
import os
import os.path as osp
from typing import Any, Iterator, Optional, Tuple

from ..errors import DataCheckError

__all__ = ['DataCheckError', 'describe_file_problem', 'bind_num_classes',
           'check_dataset_folders']


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


def _datasets_of(dataset: Any) -> Iterator[Any]:
    """A dataset and those it wraps (ConcatDataset, RepeatDataset, ClassBalancedDataset)."""
    yield dataset
    for inner in getattr(dataset, 'datasets', None) or []:
        yield from _datasets_of(inner)
    inner = getattr(dataset, 'dataset', None)
    if inner is not None:
        yield from _datasets_of(inner)


def bind_num_classes(dataset: Any) -> int:
    """Set ``num_classes`` of each ``LoadCheckedAnnotations`` in ``dataset``'s pipeline.

    Only transforms without an explicit ``num_classes`` are changed; the number is
    ``len(dataset.metainfo['classes'])``.

    Args:
        dataset: A built dataset (wrappers are followed).

    Returns:
        int: How many transforms were given a number.
    """
    from .transforms import LoadCheckedAnnotations

    bound = 0
    for ds in _datasets_of(dataset):
        classes = (getattr(ds, 'metainfo', None) or {}).get('classes')
        pipeline = getattr(ds, 'pipeline', None)
        if not classes or pipeline is None:
            continue
        for transform in getattr(pipeline, 'transforms', []):
            if isinstance(transform, LoadCheckedAnnotations) and transform.num_classes is None:
                transform.num_classes = len(classes)
                bound += 1
    return bound


_DOCS = 'docs/datasets.md'


def _dataset_cfgs(cfg: Any) -> Iterator[Tuple[str, dict]]:
    for split in ('train', 'val', 'test'):
        loader = cfg.get(f'{split}_dataloader')
        if not loader or not isinstance(loader.get('dataset'), dict):
            continue
        stack = [(f'{split}_dataloader.dataset', loader['dataset'])]
        while stack:
            key, ds = stack.pop()
            inner = ds.get('dataset')
            if isinstance(inner, dict):
                stack.append((f'{key}.dataset', inner))
            for i, sub in enumerate(ds.get('datasets') or []):
                if isinstance(sub, dict):
                    stack.append((f'{key}.datasets.{i}', sub))
            if 'data_prefix' in ds or 'data_root' in ds:
                yield key, ds


def check_dataset_folders(cfg: Any) -> None:
    """Fail before anything is built when a dataset's image folder is missing or empty.

    Datasets read from an annotation-list file (``ann_file``) or from remote storage are
    not checked.

    Args:
        cfg (mmengine.Config): The config (after ``--cfg-options``).

    Raises:
        DataCheckError: naming the config key, the folder, what it holds and the layout.
    """
    from mmseg.registry import DATASETS

    seen = set()
    for key, ds in _dataset_cfgs(cfg):
        root = ds.get('data_root') or ''
        prefix = ds.get('data_prefix') or {}
        img_dir = prefix.get('img_path', '')
        img_dir = osp.join(root, img_dir) if root and not osp.isabs(img_dir) else img_dir
        ann_file = ds.get('ann_file') or ''
        if not img_dir or '://' in img_dir or (ann_file and not osp.isdir(
                osp.join(root, ann_file))) or img_dir in seen:
            continue
        seen.add(img_dir)
        cls = DATASETS.get(ds.get('type', '')) if isinstance(ds.get('type'), str) else None
        suffix = ds.get('img_suffix') or _default_suffix(cls, 'img_suffix', '.jpg')
        seg_dir = prefix.get('seg_map_path')
        layout = (f'images {img_dir}/<name>{suffix}' +
                  (f' with annotations {osp.join(root, seg_dir)}/<name>'
                   f'{ds.get("seg_map_suffix") or _default_suffix(cls, "seg_map_suffix", ".png")}'
                   if seg_dir else ''))
        if not osp.isdir(img_dir):
            raise DataCheckError(
                f'{key}: image folder {img_dir} does not exist (data_root={root!r}). Expected '
                f'{layout}; set data_root / data_prefix, or prepare the dataset as {_DOCS} '
                f'describes')
        if not _holds_suffix(img_dir, suffix):
            entries = sorted(os.listdir(img_dir))[:5]
            found = f'it holds {", ".join(entries)}' if entries else 'it is empty'
            raise DataCheckError(
                f'{key}: no *{suffix} image in {img_dir} ({found}). Expected {layout}; check '
                f'data_root, data_prefix and img_suffix, or prepare the dataset as {_DOCS} '
                f'describes')


def _default_suffix(cls: Optional[type], name: str, fallback: str) -> str:
    import inspect

    if cls is None:
        return fallback
    try:
        default = inspect.signature(cls.__init__).parameters[name].default
    except (KeyError, TypeError, ValueError):
        return fallback
    return default if isinstance(default, str) else fallback


def _holds_suffix(folder: str, suffix: str) -> bool:
    for _, _, files in os.walk(folder):
        if any(f.endswith(suffix) for f in files):
            return True
    return False
