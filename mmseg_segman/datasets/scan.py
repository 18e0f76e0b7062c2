"""Pre-flight scan of every sample of a config's datasets (``tools/misc/check_dataset.py``).

The checked loading transforms find a bad file only when its sample is loaded, which for a
file deep in a large dataset is hours into training. :func:`scan_config` instead lists
every sample of the chosen splits (the config's datasets built through MMSeg's
``DATASETS`` registry, wrappers included, without their pipelines) and checks each pair
in worker processes with the plugin's own checks:

* :func:`~.checks.describe_file_problem`: missing, empty (0 bytes), truncated or
  undecodable image / annotation;
* :func:`~.transforms.check_finite_image`: NaN or infinite pixels of a float image;
* the annotation is one channel and has its image's height and width;
* :func:`~.transforms.check_label_values`: labels outside ``[0, num_classes)`` that are not
  the ignore index (after the dataset's ``label_map`` and ``reduce_zero_label``, as
  MMSeg's ``LoadAnnotations`` applies them).

Every problem of every sample is kept (not just the first), with its file and cause, and
the valid labels are counted per class. Files are read with mmengine's ``fileio`` and
decoded with ``mmcv.imfrombytes``, as MMSeg's loading transforms do.
"""
import json
import multiprocessing
import os
import os.path as osp
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from ..errors import DataCheckError
from .checks import check_dataset_folders, describe_file_problem
from .transforms import check_finite_image, check_label_values

__all__ = ['SampleTask', 'SampleResult', 'Problem', 'SplitSummary', 'ScanReport',
           'collect_samples', 'check_sample', 'scan_samples', 'scan_config']

_LOAD_ANNOTATIONS = ('LoadAnnotations', 'LoadCheckedAnnotations')
_LOAD_IMAGE = ('LoadImageFromFile', 'LoadCheckedImageFromFile')


class SampleTask(NamedTuple):
    """One image/annotation pair and what its checks need (picklable, for the workers)."""
    split: str
    index: int  # index of the sample in its split's (flattened) dataset
    img_path: str
    seg_path: Optional[str]
    num_classes: int
    ignore_index: int = 255
    reduce_zero_label: bool = False
    label_map: Optional[Dict[int, int]] = None
    img_decode_backend: str = 'cv2'
    seg_decode_backend: str = 'pillow'


class SampleResult(NamedTuple):
    """What :func:`check_sample` found: ``problems`` as (file, cause) pairs,
    ``class_pixels`` (num_classes,) counts of valid labels, ``ignored_pixels``."""
    split: str
    index: int
    problems: List[Tuple[str, str]]
    class_pixels: Optional[np.ndarray]
    ignored_pixels: int


@dataclass
class Problem:
    """One bad file: its split, its sample index, the file and the cause."""
    split: str
    index: int
    file: str
    cause: str

    def __str__(self) -> str:
        return f'{self.file}: {self.cause} ({self.split} sample {self.index})'


@dataclass
class SplitSummary:
    """Per split: sample counts and per-class pixel counts of the valid annotations."""
    samples: int
    bad_samples: int
    classes: List[str]
    class_pixels: Dict[str, int]
    ignored_pixels: int
    ignore_index: int


@dataclass
class ScanReport:
    """The whole scan: per-split summaries and every problem found."""
    config: str
    splits: Dict[str, SplitSummary] = field(default_factory=dict)
    problems: List[Problem] = field(default_factory=list)
    seconds: float = 0.0
    nproc: int = 1

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        out = asdict(self)
        out['ok'] = self.ok
        out['bad_files'] = len({p.file for p in self.problems})
        return out

    def write(self, path: str) -> None:
        """Write :meth:`to_dict` as JSON (the folder is created)."""
        folder = osp.dirname(osp.abspath(path))
        os.makedirs(folder, exist_ok=True)
        with open(path, 'w') as f:
            json.dump(self.to_dict(), f, indent=2)


# ----------------------------------------------------------------------------- one sample
def _read(path: str) -> bytes:
    from mmengine import fileio

    return fileio.get(path)


def _decode(path: str, flag: str, backend: str) -> np.ndarray:
    import mmcv

    img = mmcv.imfrombytes(_read(path), flag=flag, backend=backend)
    if img is None:
        raise ValueError(f'{backend} could not decode it')
    return img


def check_sample(task: SampleTask) -> SampleResult:
    """Run every check on one pair; never raises for a bad file (it is reported)."""
    problems: List[Tuple[str, str]] = []
    img_shape = None
    problem = describe_file_problem(task.img_path)
    if problem is None:
        try:
            img = _decode(task.img_path, 'unchanged', task.img_decode_backend)
            img_shape = img.shape[:2]
            check_finite_image(img, task.img_path)
        except DataCheckError as err:
            problems.append((task.img_path, str(err)))
        except Exception as err:  # decoders raise several types
            problems.append((task.img_path,
                             f'it cannot be decoded as an image ({type(err).__name__}: {err})'))
    else:
        problems.append((task.img_path, problem))
    if task.seg_path is None:
        return SampleResult(task.split, task.index, problems, None, 0)
    problem = describe_file_problem(task.seg_path)
    if problem is not None:
        problems.append((task.seg_path, problem))
        return SampleResult(task.split, task.index, problems, None, 0)
    try:
        seg = np.asarray(_decode(task.seg_path, 'unchanged', task.seg_decode_backend))
    except Exception as err:
        problems.append((task.seg_path,
                         f'it cannot be decoded as an image ({type(err).__name__}: {err})'))
        return SampleResult(task.split, task.index, problems, None, 0)
    seg = seg.squeeze()
    if seg.ndim != 2:
        problems.append((task.seg_path, f'it has shape {list(seg.shape)}: expected a '
                         'single-channel map of class indices (convert a colour-coded '
                         'annotation to indices first)'))
        return SampleResult(task.split, task.index, problems, None, 0)
    if img_shape is not None and tuple(seg.shape) != tuple(img_shape):
        problems.append((task.seg_path, f'it is {seg.shape[0]}x{seg.shape[1]} (HxW) but its '
                         f'image {task.img_path} is {img_shape[0]}x{img_shape[1]}: labels '
                         'would not line up with the pixels'))
    if task.label_map or task.reduce_zero_label or seg.dtype != np.uint8:
        seg = seg.astype(np.int64)
    if task.label_map:  # as mmseg's LoadAnnotations: old -> new on a copy
        mapped = seg.copy()
        for old, new in task.label_map.items():
            mapped[seg == old] = new
        seg = mapped
    if task.reduce_zero_label:  # as mmseg's LoadAnnotations
        seg[seg == 0] = 255
        seg = seg - 1
        seg[seg == 254] = 255
    try:
        check_label_values(seg, task.num_classes, task.ignore_index, task.seg_path,
                           task.reduce_zero_label)
    except DataCheckError as err:  # its message starts with 'annotation <path> '
        problems.append((task.seg_path, str(err).replace(f'annotation {task.seg_path} ', '', 1)))
    if seg.size and seg.min() >= 0:  # one bincount gives the classes and the ignore index
        every = np.bincount(seg.ravel(), minlength=max(task.num_classes,
                                                       task.ignore_index + 1))
        counts = every[:task.num_classes]
        ignored = int(every[task.ignore_index]) if task.ignore_index >= 0 else 0
    else:
        valid = seg[(seg >= 0) & (seg < task.num_classes)]
        counts = np.bincount(valid.ravel(), minlength=task.num_classes)[:task.num_classes]
        ignored = int(np.count_nonzero(seg == task.ignore_index))
    return SampleResult(task.split, task.index, problems, counts, ignored)


# ----------------------------------------------------------------------------- datasets
def _leaf_datasets(dataset: Any) -> Iterator[Any]:
    """The datasets holding samples inside wrappers (Concat/Repeat/ClassBalanced)."""
    inner = getattr(dataset, 'datasets', None)
    if inner:
        for ds in inner:
            yield from _leaf_datasets(ds)
        return
    wrapped = getattr(dataset, 'dataset', None)
    if wrapped is not None:
        yield from _leaf_datasets(wrapped)
        return
    yield dataset


def _without_pipelines(cfg: Any) -> Any:
    """A copy of a dataset config with every (nested) pipeline emptied, and the loading
    transforms' settings found in them: (cfg, {'ann': dict, 'img': dict})."""
    import copy

    cfg = copy.deepcopy(cfg)
    found: Dict[str, dict] = {}
    stack = [cfg]
    while stack:
        ds = stack.pop()
        for step in ds.get('pipeline') or []:
            kind = step.get('type') if isinstance(step, dict) else None
            kind = kind.split('.')[-1] if isinstance(kind, str) else None
            if kind in _LOAD_ANNOTATIONS:
                found.setdefault('ann', dict(step))
            elif kind in _LOAD_IMAGE:
                found.setdefault('img', dict(step))
        if 'pipeline' in ds:
            ds['pipeline'] = []
        if isinstance(ds.get('dataset'), dict):
            stack.append(ds['dataset'])
        stack.extend(d for d in ds.get('datasets') or [] if isinstance(d, dict))
    return cfg, found


def collect_samples(cfg: Any, splits: Sequence[str]) -> Tuple[List[SampleTask],
                                                               Dict[str, dict]]:
    """Build each split's dataset (through ``mmseg.registry.DATASETS``) and list its pairs.

    Args:
        cfg (mmengine.Config): The config; ``<split>_dataloader.dataset`` is scanned.
        splits (Sequence[str]): e.g. ``('train', 'val')``.

    Returns:
        tuple: the tasks, and per split ``dict(classes=..., ignore_index=...)``.

    Raises:
        DataCheckError: a split has no dataloader in the config.
    """
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS

    init_default_scope(cfg.get('default_scope', 'mmseg') or 'mmseg')
    missing = [s for s in splits if not (cfg.get(f'{s}_dataloader') or {}).get('dataset')]
    if missing:
        raise DataCheckError(f'{missing[0]}_dataloader: the config has no such dataloader (or '
                             f'no dataset in it); choose --splits among those it has')
    # missing or empty image folders: one error naming the key and the folder
    check_dataset_folders({f'{s}_dataloader': cfg.get(f'{s}_dataloader') for s in splits})
    tasks: List[SampleTask] = []
    meta: Dict[str, dict] = {}
    for split in splits:
        ds_cfg, loading = _without_pipelines(cfg.get(f'{split}_dataloader')['dataset'])
        try:
            dataset = DATASETS.build(ds_cfg)
        except DataCheckError:
            raise
        except Exception as err:
            raise DataCheckError(f'{split}_dataloader.dataset: it cannot be built '
                                 f'({type(err).__name__}: {err}); check its type, data_root '
                                 'and data_prefix') from err
        ann = loading.get('ann', {})
        img = loading.get('img', {})
        index = 0
        classes: List[str] = []
        ignore_index = 255
        for ds in _leaf_datasets(dataset):
            classes = list(ds.metainfo.get('classes') or [])
            if not classes:
                raise DataCheckError(f'{split}_dataloader.dataset: the dataset has no classes '
                                     '(metainfo.classes); the label check needs them')
            num_classes = int(ann.get('num_classes') or len(classes))
            ignore_index = int(ann.get('ignore_index', getattr(ds, 'ignore_index', 255)))
            for i in range(len(ds)):
                info = ds.get_data_info(i)
                reduce_zero = ann.get('reduce_zero_label')
                if reduce_zero is None:
                    reduce_zero = info.get('reduce_zero_label', False)
                label_map = info.get('label_map') or None
                tasks.append(SampleTask(
                    split, index, info['img_path'], info.get('seg_map_path'), num_classes,
                    ignore_index, bool(reduce_zero),
                    {int(k): int(v) for k, v in label_map.items()} if label_map else None,
                    img.get('imdecode_backend', 'cv2'), ann.get('imdecode_backend', 'pillow')))
                index += 1
        meta[split] = dict(classes=classes, ignore_index=ignore_index)
    return tasks, meta


# ----------------------------------------------------------------------------- running
def scan_samples(tasks: Sequence[SampleTask], nproc: int = 1,
                 progress: bool = False) -> List[SampleResult]:
    """:func:`check_sample` over ``tasks`` in ``nproc`` processes, in order.

    With ``progress`` mmengine's progress bar is shown (``track_parallel_progress``).
    """
    nproc = max(1, min(int(nproc), len(tasks) or 1))
    chunksize = max(1, min(64, len(tasks) // (nproc * 8) or 1))
    if progress:
        from mmengine.utils import track_parallel_progress, track_progress

        if nproc == 1:
            return list(track_progress(check_sample, list(tasks)))
        return list(track_parallel_progress(check_sample, list(tasks), nproc,
                                            chunksize=chunksize))
    if nproc == 1:
        return [check_sample(t) for t in tasks]
    with multiprocessing.Pool(nproc) as pool:
        return list(pool.imap(check_sample, tasks, chunksize=chunksize))


def summarize(config: str, results: Iterable[SampleResult], meta: Dict[str, dict],
              seconds: float = 0.0, nproc: int = 1) -> ScanReport:
    """Fold the per-sample results into a :class:`ScanReport`."""
    report = ScanReport(config=config, seconds=round(seconds, 3), nproc=nproc)
    totals = {s: (np.zeros(len(m['classes']), np.int64), [0], [0], [0])
              for s, m in meta.items()}
    for res in results:
        counts, ignored, samples, bad = totals[res.split]
        samples[0] += 1
        if res.problems:
            bad[0] += 1
        report.problems.extend(Problem(res.split, res.index, f, c) for f, c in res.problems)
        if res.class_pixels is not None:
            counts += res.class_pixels[:len(counts)]
            ignored[0] += res.ignored_pixels
    for split, (counts, ignored, samples, bad) in totals.items():
        classes = meta[split]['classes']
        report.splits[split] = SplitSummary(
            samples=samples[0], bad_samples=bad[0], classes=classes,
            class_pixels={str(c): int(n) for c, n in zip(classes, counts)},
            ignored_pixels=ignored[0], ignore_index=meta[split]['ignore_index'])
    return report


def scan_config(cfg: Any, splits: Sequence[str] = ('train', 'val'), nproc: int = 1,
                progress: bool = False) -> ScanReport:
    """Scan every sample of ``cfg``'s datasets of ``splits``; see the module docstring.

    Args:
        cfg (mmengine.Config): The config (``import mmseg_segman`` first, so that the
            plugin's registered names resolve).
        splits (Sequence[str]): Which ``<split>_dataloader`` datasets to scan.
        nproc (int): Worker processes.
        progress (bool): Show a progress bar.

    Returns:
        ScanReport: ``report.ok`` is False if any file has a problem.
    """
    import time

    start = time.perf_counter()
    tasks, meta = collect_samples(cfg, splits)
    results = scan_samples(tasks, nproc, progress)
    return summarize(getattr(cfg, 'filename', None) or '<config>', results, meta,
                     time.perf_counter() - start, nproc)
