"""Reading and writing checkpoint files safely: weights-only loads, atomic writes, resume.

Nothing here changes torch, mmengine or mmseg when it is imported. The pieces are used
explicitly:

* :func:`load_checkpoint_file` loads a local file **weights-only** with one clear error on
  failure. The types an mmengine training checkpoint pickles (``HistoryBuffer``, numeric
  numpy arrays and scalars) are allowed for that one call only (torch's
  ``safe_globals`` context on torch >= 2.5; a restricted unpickler on older torch, which
  has no such context), never registered process-wide.
* :func:`weights_only_checkpoints` is a context manager that routes mmengine's
  :class:`~mmengine.runner.CheckpointLoader` local and ``http(s)://`` schemes through it,
  and restores mmengine's own schemes on exit. ``CheckpointGuardHook`` holds it for the
  length of a run; the plugin's ``init_model`` and inferencer hold it while they load.
* :class:`AtomicLocalBackend` is a file backend (registered as ``'atomic_local'`` in
  mmengine's file-backend registry) whose writes appear complete or not at all; configs
  select it with ``default_hooks.checkpoint.backend_args=dict(backend='atomic_local')``.
* :func:`find_latest_loadable_checkpoint` is what ``--resume`` uses through the hook: the
  newest checkpoint of a work directory that reads completely.
"""
import contextlib
import os
import pickle
import re
import sys
import types
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import torch
from mmengine.fileio import LocalBackend, register_backend

from ..errors import CheckpointReadError, CheckpointRefusedError, PluginError

__all__ = [
    'mmengine_checkpoint_safe_globals', 'history_buffer_getattr', 'latin1_encode',
    'load_checkpoint_file',
    'load_from_local_weights_only', 'load_from_http_weights_only', 'weights_only_checkpoints',
    'checkpoint_is_readable', 'find_latest_loadable_checkpoint', 'AtomicLocalBackend',
    'ATOMIC_BACKEND'
]


# --------------------------------------------------------------------------------------
# What a weights-only load of an mmengine checkpoint must allow
# --------------------------------------------------------------------------------------
def _history_buffer_statistics() -> set:
    """Names of HistoryBuffer's built-in statistic methods (min, max, current, mean)."""
    from mmengine.logging import HistoryBuffer

    registered = HistoryBuffer()._statistics_methods  # instantiating registers the defaults
    return {
        name
        for name, fn in vars(HistoryBuffer).items()
        if isinstance(fn, types.FunctionType) and registered.get(name) is fn
    }


def history_buffer_getattr(owner: Any, name: Any) -> Any:
    """The only ``builtins.getattr`` a weights-only load of a checkpoint may call.

    ``HistoryBuffer.__getstate__`` stores its statistic methods, which pickle writes as
    ``getattr(HistoryBuffer, 'min')``. Allowing the real ``getattr`` would let a pickle
    reach any attribute of any allowed object (a function's ``__globals__``, and from
    there ``os.system``), so this stand-in resolves exactly ``HistoryBuffer.<statistic>``.
    """
    from mmengine.logging import HistoryBuffer

    if owner is HistoryBuffer and isinstance(name, str) and \
            name in _history_buffer_statistics():
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'weights-only load refused getattr({owner!r}, {name!r}): mmseg_segman '
        f'allows getattr only for the statistic methods of mmengine HistoryBuffer')


def latin1_encode(obj: Any, encoding: str = 'utf-8', errors: str = 'strict') -> bytes:
    """The only ``_codecs.encode`` a weights-only load may call.

    numpy 1.x pickles the raw bytes of its scalars and arrays (protocol 2) as
    ``_codecs.encode(text, 'latin1')``; this resolves exactly that and refuses the rest.
    """
    if isinstance(obj, str) and encoding in ('latin1', 'latin-1') and errors == 'strict':
        return obj.encode('latin1')
    raise pickle.UnpicklingError(
        f'weights-only load refused _codecs.encode(..., {encoding!r}): mmseg_segman allows '
        f"only the latin1 encoding numpy uses for the bytes of its arrays")


def _numpy_array_globals() -> List[Tuple[Any, str]]:
    """(object, pickled name) pairs needed to rebuild numeric numpy arrays and scalars."""
    import importlib

    import numpy as np

    try:
        multiarray = importlib.import_module('numpy._core.multiarray')  # numpy >= 2
    except ImportError:
        multiarray = importlib.import_module('numpy.core.multiarray')
    pairs = [(np.ndarray, 'numpy.ndarray'), (np.dtype, 'numpy.dtype'),
             (latin1_encode, '_codecs.encode')]
    # Files written under numpy 1.x name `numpy.core`, under 2.x `numpy._core`.
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        pairs.append((multiarray._reconstruct, f'{module}._reconstruct'))
        pairs.append((multiarray.scalar, f'{module}.scalar'))
    # numpy >= 2 has one class per dtype: exactly the boolean and numeric ones (no object,
    # void or string dtypes, whose state could carry arbitrary objects).
    codes = '?' + np.typecodes['AllInteger'] + np.typecodes['AllFloat']
    dtype_classes = {type(np.dtype(c)) for c in codes} - {np.dtype}
    for dtype_cls in sorted(dtype_classes, key=lambda c: c.__name__):
        pairs.append((dtype_cls, f'{dtype_cls.__module__}.{dtype_cls.__name__}'))
    return pairs


def mmengine_checkpoint_safe_globals() -> List[Tuple[Any, str]]:
    """Everything beyond plain tensors that an mmengine training checkpoint pickles.

    The ``message_hub`` state holds ``HistoryBuffer`` objects (numpy arrays of logged
    values, numpy scalars and their statistic methods); timm's training script stores an
    ``argparse.Namespace`` of its arguments; the rest is tensors, dicts, lists, strings
    and numbers, which torch allows.

    Returns:
        list: ``(object, pickled_name)`` pairs for ``torch.serialization.safe_globals``.
    """
    import argparse

    from mmengine.logging import HistoryBuffer

    return [(HistoryBuffer, 'mmengine.logging.history_buffer.HistoryBuffer'),
            (history_buffer_getattr, 'builtins.getattr'),
            (argparse.Namespace, 'argparse.Namespace')] + _numpy_array_globals()


# --------------------------------------------------------------------------------------
# Weights-only torch.load
# --------------------------------------------------------------------------------------
def _restricted_pickle_module(allowed: Dict[str, Any]) -> types.ModuleType:
    """A ``pickle_module`` for ``torch.load`` whose unpickler resolves only ``allowed``.

    torch < 2.5 has no ``safe_globals`` context (and < 2.4 no ``add_safe_globals``), so
    the extra types cannot be passed to its weights-only unpickler for one call. This is
    the restricted-globals unpickler the Python documentation describes: ``find_class``
    returns only allow-listed objects (torch's own weights-only list plus ``allowed``), so
    a pickle can neither import nor call anything else.
    """
    from torch import _weights_only_unpickler

    table = dict(_weights_only_unpickler._get_allowed_globals())
    table.update(allowed)

    class Unpickler(pickle.Unpickler):

        def find_class(self, module: str, name: str) -> Any:
            # Protocol-2 files name Python 2 modules (`__builtin__.getattr`); map them as
            # pickle's own find_class does.
            import _compat_pickle

            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
            full = f'{module}.{name}'
            if full in table:
                return table[full]
            raise pickle.UnpicklingError(f'Unsupported global: GLOBAL {full} was not an '
                                         f'allowed global by default')

    def load(file: Any, **kwargs: Any) -> Any:
        return Unpickler(file, **kwargs).load()

    module = types.ModuleType('mmseg_segman_restricted_pickle')
    module.Unpickler, module.load = Unpickler, load
    module.__name__ = 'pickle'  # torch compares pickle_module.__name__ with 'dill'
    return module


def _weights_only_load(source: Any, map_location: Any) -> Any:
    pairs = mmengine_checkpoint_safe_globals()
    safe_globals = getattr(torch.serialization, 'safe_globals', None)
    if safe_globals is not None:
        with safe_globals(pairs):
            return torch.load(source, map_location=map_location, weights_only=True)
    if os.environ.get('TORCH_FORCE_WEIGHTS_ONLY_LOAD', '0').lower() in ('1', 'y', 'yes', 'true'):
        # The user forces torch's own weights-only unpickler, which old torch cannot extend
        # and which refuses mmengine's training state: honour it.
        return torch.load(source, map_location=map_location, weights_only=True)
    restricted = _restricted_pickle_module({name: obj for obj, name in pairs})
    return torch.load(source, map_location=map_location, pickle_module=restricted,
                      weights_only=False)


_TRUST_HINT = (
    'If you trust the source of this file, re-save its tensors once in a trusted Python '
    'session (e.g. torch.save(torch.load(PATH, weights_only=False)["state_dict"], '
    "'clean.pth')) and use the new file")


def _refusal_reason(error: BaseException) -> str:
    """The sentence of torch's weights-only error that says which global was refused."""
    text = str(error)
    marker = 'WeightsUnpickler error:'
    if marker in text:
        text = text.split(marker, 1)[1]
    paragraphs = [p.strip() for p in text.split('\n\n') if p.strip()]
    for p in paragraphs:
        if not p.startswith(('Weights only load failed', 'Check the documentation')):
            return p.split(' Please use ')[0].rstrip('. ')
    return paragraphs[-1] if paragraphs else type(error).__name__


def _first_sentence(error: BaseException) -> str:
    text = ' '.join(str(error).split())
    return (text.split('. ')[0].rstrip('.') if text else '') or type(error).__name__


# Messages of torch.load on a file that is not a complete torch.save archive.
_DAMAGED_FILE_HINTS = ('PytorchStreamReader', 'central directory', 'Ran out of input',
                       'invalid load key', 'EOF', 'truncated', 'magic number',
                       'Unsupported operand')


def load_checkpoint_file(filename: str, map_location: Any = None,
                         source: Optional[str] = None) -> Any:
    """``torch.load`` a local checkpoint weights-only, with one clear error on failure.

    Args:
        filename (str): Local file path.
        map_location: As for :func:`torch.load`.
        source (str, optional): What to call the file in messages (e.g. its URL).

    Returns:
        The unpickled object (usually a dict).

    Raises:
        CheckpointRefusedError: The file needs objects outside the allow-list.
        CheckpointReadError: The file is missing, empty, truncated or not a PyTorch file.
    """
    name = source or filename
    if not os.path.isfile(filename):
        raise CheckpointReadError(f'checkpoint {name} can not be found: no such file')
    if os.path.getsize(filename) == 0:
        raise CheckpointReadError(f'checkpoint {name} is empty (0 bytes): it was not '
                                  f'written completely; use another checkpoint')
    try:
        return _weights_only_load(filename, map_location)
    except pickle.UnpicklingError as error:
        if any(h in str(error) for h in _DAMAGED_FILE_HINTS):
            raise CheckpointReadError(
                f'checkpoint {name} cannot be read ({_first_sentence(error)}): it is not '
                f'a file written by torch.save, or it is damaged') from None
        raise CheckpointRefusedError(
            f'checkpoint {name} was refused by the weights-only loader: '
            f'{_refusal_reason(error)}. Loading it without that check would let the file '
            f'run code. {_TRUST_HINT}') from None
    except (RuntimeError, EOFError, OSError, KeyError, ValueError) as error:
        damaged = isinstance(error, (EOFError, KeyError)) or any(
            h in str(error) for h in _DAMAGED_FILE_HINTS)
        hint = ('it is truncated, damaged or not a file written by torch.save; use another '
                'checkpoint or download it again') if damaged else 'see the cause above'
        raise CheckpointReadError(f'checkpoint {name} cannot be read ({type(error).__name__}: '
                                  f'{_first_sentence(error)}): {hint}') from error


def load_from_local_weights_only(filename: str, map_location: Any = None) -> Any:
    """mmengine's local-file checkpoint scheme, weights-only (see :func:`load_checkpoint_file`)."""
    filename = os.path.expanduser(filename)
    if not os.path.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return load_checkpoint_file(filename, map_location)


def _download_to_cache(url: str, model_dir: Optional[str] = None, progress: bool = True) -> str:
    """Download ``url`` once into torch's hub cache (where mmengine's ``load_url`` puts it)."""
    from urllib.parse import urlparse

    if model_dir is None:
        model_dir = os.path.join(torch.hub.get_dir(), 'checkpoints')
    os.makedirs(model_dir, exist_ok=True)
    cached = os.path.join(model_dir, os.path.basename(urlparse(url).path))
    if not os.path.exists(cached):
        sys.stderr.write(f'Downloading: "{url}" to {cached}\n')
        # torch writes a temporary file and renames it: no partial file under the name.
        torch.hub.download_url_to_file(url, cached, None, progress=progress)
    return cached


def load_from_http_weights_only(filename: str, map_location: Any = None,
                                model_dir: Optional[str] = None,
                                progress: bool = os.isatty(0)) -> Any:
    """mmengine's ``http(s)://`` checkpoint scheme, downloading first and loading weights-only.

    mmengine's own scheme unpickles through ``torch.hub.load_state_dict_from_url`` with
    ``weights_only=False``. As there, in distributed runs local rank 0 downloads first and
    the others read the cached file after a barrier.
    """
    from mmengine.dist import get_dist_info

    rank, world_size = get_dist_info()
    if rank == 0:
        cached = _download_to_cache(filename, model_dir, progress)
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            cached = _download_to_cache(filename, model_dir, progress)
    is_legacy_zip = getattr(torch.hub, '_is_legacy_zip_format', None)
    if is_legacy_zip is not None and is_legacy_zip(cached):
        import zipfile  # a zip of one torch < 1.6 file (torch.hub unpacks these)

        with zipfile.ZipFile(cached) as archive:
            member = archive.infolist()[0]
            archive.extract(member, os.path.dirname(cached))
        cached = os.path.join(os.path.dirname(cached), member.filename)
    return load_checkpoint_file(cached, map_location, source=f'{filename} (cached as {cached})')


# Schemes replaced while :func:`weights_only_checkpoints` is active. ``torchvision://``,
# ``open-mmlab://`` and the other named schemes download through mmengine's module-level
# ``load_from_http`` (weights_only=False); they are refused inside the context instead.
_NAMED_URL_SCHEMES = ('torchvision://', 'open-mmlab://', 'openmmlab://', 'mmcls://',
                      'pavi://', 's3://')


def _refuse_named_scheme(filename: str, map_location: Any = None) -> Any:
    raise CheckpointRefusedError(
        f'checkpoint {filename}: mmengine loads this scheme with weights_only=False, which '
        f'lets the file run code; download the file and pass its local path or its '
        f'http(s) URL instead (both are read weights-only)')


@contextlib.contextmanager
def weights_only_checkpoints(record: Optional[Dict[str, Any]] = None) -> Iterator[None]:
    """Within the context, mmengine's checkpoint loaders read files weights-only.

    ``CheckpointLoader.register_scheme`` is mmengine's process-global table of loaders
    (``Runner.load_checkpoint`` / ``resume``, ``load_checkpoint``, ``init_cfg=dict(type=
    'Pretrained')``, ``init_model`` and the inferencer all read through it). Local paths
    and ``http(s)://`` URLs get :func:`load_from_local_weights_only` /
    :func:`load_from_http_weights_only`; the named schemes that mmengine downloads with
    ``weights_only=False`` are refused with a message. On exit mmengine's table is
    restored exactly. Re-entrant.

    Args:
        record (dict, optional): Receives ``{filename: loaded checkpoint}`` of every file
            read inside the context (to check what was loaded without reading it again).
    """
    from mmengine.runner import CheckpointLoader

    def recorded(load: Callable) -> Callable:
        if record is None:
            return load

        def load_and_record(filename: str, map_location: Any = None) -> Any:
            record[filename] = load(filename, map_location)
            return record[filename]

        return load_and_record

    saved = dict(CheckpointLoader._schemes)
    try:
        CheckpointLoader.register_scheme(('http://', 'https://'),
                                         recorded(load_from_http_weights_only), force=True)
        CheckpointLoader.register_scheme('', recorded(load_from_local_weights_only),
                                         force=True)
        for prefix in _NAMED_URL_SCHEMES:
            if prefix in saved:
                CheckpointLoader.register_scheme(prefix, _refuse_named_scheme, force=True)
        yield
    finally:
        CheckpointLoader._schemes.clear()
        CheckpointLoader._schemes.update(saved)


# --------------------------------------------------------------------------------------
# Atomic writes and the resume fallback
# --------------------------------------------------------------------------------------
ATOMIC_BACKEND = 'atomic_local'


@register_backend(ATOMIC_BACKEND)
class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend whose writes appear complete or not at all.

    A kill during ``torch.save`` into ``iter_N.pth`` would leave a truncated file that
    ``--resume`` then picks; here each write goes to a temporary file in the same folder,
    is flushed to disk and renamed over the target. Select it for checkpoints with
    ``default_hooks = dict(checkpoint=dict(..., backend_args=dict(backend='atomic_local')))``.
    """

    def put(self, obj: bytes, filepath: Union[str, 'os.PathLike']) -> None:
        self._atomic_write(obj, str(filepath))

    def put_text(self, obj: str, filepath: Union[str, 'os.PathLike'],
                 encoding: str = 'utf-8') -> None:
        self._atomic_write(obj.encode(encoding), str(filepath))

    @staticmethod
    def _atomic_write(data: bytes, filepath: str) -> None:
        directory = os.path.dirname(os.path.abspath(filepath))
        os.makedirs(directory, exist_ok=True)
        tmp = os.path.join(directory, f'.{os.path.basename(filepath)}.tmp{os.getpid()}')
        try:
            with open(tmp, 'wb') as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, filepath)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)


def checkpoint_is_readable(filename: str) -> Optional[str]:
    """Why ``filename`` cannot be resumed from, or None if it reads completely.

    A torch zip checkpoint is checked entry by entry against its CRCs (no unpickling);
    other files are loaded.

    Args:
        filename (str): Local checkpoint path.

    Returns:
        str or None: The reason it is unreadable, None if it is fine.
    """
    import zipfile

    if not os.path.isfile(filename):
        return 'no such file'
    if os.path.getsize(filename) == 0:
        return 'empty file'
    if zipfile.is_zipfile(filename):
        try:
            with zipfile.ZipFile(filename) as archive:
                bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            return f'damaged zip archive ({error})'
        return None if bad is None else f'damaged entry {bad}'
    try:
        load_checkpoint_file(filename, map_location='cpu')
    except PluginError as error:
        return str(error)
    return None


_CKPT_NAME = re.compile(r'^(?:iter|epoch)_(\d+)\.pth$')


def find_latest_loadable_checkpoint(work_dir: str,
                                    warn: Optional[Callable[[str], None]] = None
                                    ) -> Optional[str]:
    """The checkpoint ``--resume`` should continue from: the newest one that reads.

    The file named in ``last_checkpoint`` comes first, then ``iter_N.pth`` /
    ``epoch_N.pth`` from the highest ``N`` down.

    Args:
        work_dir (str): The run's work directory.
        warn (callable, optional): Receives the warning when newer files were skipped.

    Returns:
        str or None: The path, or None when the directory holds no checkpoint at all.

    Raises:
        CheckpointReadError: Checkpoints exist but none of them reads.
    """
    candidates = []
    last = os.path.join(work_dir, 'last_checkpoint')
    if os.path.isfile(last):
        with open(last) as f:
            named = f.read().strip()
        if named:
            candidates.append(named)
    if os.path.isdir(work_dir):
        numbered = [(int(m.group(1)), name) for name in os.listdir(work_dir)
                    if (m := _CKPT_NAME.match(name))]
        candidates += [os.path.join(work_dir, name)
                       for _, name in sorted(numbered, reverse=True)]
    problems = []
    for candidate in dict.fromkeys(candidates):  # ordered, without repeats
        if '://' in candidate:
            return candidate  # remote storage: mmengine reads it
        problem = checkpoint_is_readable(candidate)
        if problem is None:
            if problems and warn is not None:
                warn(f'Resuming from {candidate}, the newest checkpoint that loads: ' +
                     '; '.join(problems))
            return candidate
        problems.append(f'{candidate} cannot be used ({problem})')
    if problems:
        raise CheckpointReadError(
            f'--resume found no usable checkpoint in {work_dir}: ' + '; '.join(problems) +
            '. Remove the damaged files to train from scratch, or pass a checkpoint with '
            '--cfg-options load_from=PATH')
    return None

