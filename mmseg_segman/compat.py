"""Every dependency workaround of the plugin, in one place.

Importing :mod:`mmseg_segman` applies the shims below. Each one is inert when the
dependency it patches is complete, and only fills a gap of CPU-only installs or of
newer torch / setuptools releases:

* :func:`install_mmcv_ext_stub` - ``mmcv-lite`` has no compiled ``mmcv._ext``, which
  ``import mmseg`` needs; calling any missing compiled op raises
  :class:`MissingCompiledOpError` naming the op. Inert when full mmcv is installed.
* :func:`allow_mmengine_checkpoints` - torch >= 2.6 loads with ``weights_only=True``,
  which rejects the training state mmengine saves (resume, ``load_from``). The exact
  types those checkpoints contain are allow-listed; ``weights_only`` stays on.
  Inert on torch < 2.6 (which does not load weights-only by default).
* :func:`enable_cpu_distributed` - mmengine's distributed set-up assumes a GPU
  (``torch.cuda.set_device``, DDP ``device_ids``, SyncBN). Without CUDA,
  multi-process training uses the gloo backend, DDP without ``device_ids`` and plain
  BN (with a warning), and a collective timeout of ``CPU_DIST_TIMEOUT_S`` unless
  ``env_cfg.dist_cfg.timeout`` sets one. Inert when CUDA is available.
* :func:`enable_package_scoped_configs` - mmengine resolves package-scoped config
  bases (``_base_ = ['mmseg::_base_/...']``) with ``pkg_resources``, which setuptools
  >= 81 no longer ships; importlib.metadata and module lookup replace it. Inert
  when ``pkg_resources`` exists. (Our own configs do not depend on it: MMSeg's stock
  tools read a config before its ``custom_imports`` load this package.)

* :func:`enable_safe_checkpoint_loading` - mmengine downloads ``http(s)://`` checkpoints
  with ``torch.hub.load_state_dict_from_url``, which unpickles with ``weights_only=False``
  (a downloaded file could run code). URLs now download to the same cache and load through
  the weights-only ``torch.load`` used for local files, and a refused or unreadable file
  raises :class:`CheckpointRefusedError` / :class:`CheckpointReadError` (file, reason, what
  to do) instead of torch's long traceback.
* :func:`enable_atomic_checkpoints` - checkpoints are written to a temporary file and
  renamed, so a kill during a write never leaves a truncated ``iter_N.pth``; auto-resume
  (``--resume``) checks the file ``last_checkpoint`` names and falls back, with a warning,
  to the newest checkpoint that loads.
* :func:`exit_with_launcher` - a process started by ``torchrun`` ends when the launcher
  dies (Linux ``PR_SET_PDEATHSIG``) instead of training on as an orphan. Inert elsewhere.

They run when the package is imported, which for MMSeg's stock ``tools/train.py`` is
when the config is loaded (``custom_imports``), before the Runner sets anything up.
"""
import functools
import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
import logging
import os
import pickle
import re
import sys
import types
import warnings

import torch

__all__ = [
    'MissingCompiledOpError', 'mmcv_ext_available', 'install_mmcv_ext_stub',
    'mmengine_checkpoint_safe_globals', 'allow_mmengine_checkpoints',
    'enable_cpu_distributed', 'enable_package_scoped_configs', 'PluginError',
    'CheckpointRefusedError', 'CheckpointReadError', 'load_checkpoint_file',
    'load_from_http_weights_only', 'enable_safe_checkpoint_loading', 'checkpoint_is_readable',
    'enable_atomic_checkpoints', 'exit_with_launcher'
]


# --------------------------------------------------------------------------------------
# mmcv-lite: a stand-in for the compiled extension
# --------------------------------------------------------------------------------------
class MissingCompiledOpError(RuntimeError):
    """Raised when code calls an mmcv compiled op that this install does not have."""


def mmcv_ext_available():
    """True if mmcv's compiled extension ``mmcv._ext`` is really installed."""
    mod = sys.modules.get('mmcv._ext')
    if mod is not None:
        return not getattr(mod, '__mmseg_segman_stub__', False)
    try:
        return importlib.util.find_spec('mmcv._ext') is not None
    except (ImportError, ValueError):
        return False


def _missing_op(name):
    def op(*args, **kwargs):
        raise MissingCompiledOpError(
            f"mmcv compiled op '{name}' is not available: this environment has mmcv "
            f"without compiled ops (mmcv-lite). Install full mmcv (e.g. `mim install "
            f"'mmcv>=2.0.0rc4,<2.2.0'`) to use it; mmseg_segman's own models do not "
            f"need it.")
    op.__name__ = name
    return op


def install_mmcv_ext_stub():
    """Make ``import mmseg`` work with mmcv-lite.

    mmseg 1.2.2 imports a few ``mmcv.ops`` unconditionally (``point_sample`` through
    ``mmseg.utils``); those modules call ``load_ext('_ext', [...])`` at import, which
    only checks that the names exist. A stand-in module whose every attribute is an op
    raising :class:`MissingCompiledOpError` lets them import while any real call fails
    clearly. The module has a ``__spec__`` because ``pkgutil``/``importlib`` look it up
    inside the Runner.

    Returns:
        bool: True if the stand-in is in place, False if the real extension exists.
    """
    if mmcv_ext_available():
        return False
    if 'mmcv._ext' in sys.modules:
        return True
    stub = types.ModuleType('mmcv._ext')
    stub.__spec__ = importlib.machinery.ModuleSpec('mmcv._ext', None)
    stub.__mmseg_segman_stub__ = True

    def __getattr__(name):  # module-level getattr (PEP 562)
        if name.startswith('__'):
            raise AttributeError(name)
        return _missing_op(name)

    stub.__getattr__ = __getattr__
    sys.modules['mmcv._ext'] = stub
    return True


# --------------------------------------------------------------------------------------
# torch >= 2.6: weights-only loading of mmengine checkpoints
# --------------------------------------------------------------------------------------
def _torch_version():
    return tuple(int(p) for p in torch.__version__.split('+')[0].split('.')[:2])


def _history_buffer_statistics():
    """Names of HistoryBuffer's built-in statistic methods (min, max, current, mean)."""
    from mmengine.logging import HistoryBuffer

    # Instantiating registers the defaults into the class-level table.
    registered = HistoryBuffer()._statistics_methods
    return {
        name
        for name, fn in vars(HistoryBuffer).items()
        if isinstance(fn, types.FunctionType) and registered.get(name) is fn
    }


def history_buffer_getattr(owner, name):
    """The only ``builtins.getattr`` a weights-only load of a checkpoint may call.

    ``HistoryBuffer.__getstate__`` stores its statistic methods, which pickle (protocol
    2) writes as ``getattr(HistoryBuffer, 'min')``. Allow-listing the real ``getattr``
    would let a pickle reach any attribute of any allowed object - e.g. a function's
    ``__globals__`` and from there ``os.system`` - so this stand-in resolves exactly
    ``HistoryBuffer.<statistic method>`` and refuses everything else.
    """
    from mmengine.logging import HistoryBuffer

    if owner is HistoryBuffer and isinstance(name, str) and \
            name in _history_buffer_statistics():
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'weights-only load refused getattr({owner!r}, {name!r}): mmseg_segman '
        f'allows getattr only for the statistic methods of mmengine HistoryBuffer')


def _numpy_array_globals():
    """(object, pickled name) pairs needed to rebuild numeric numpy arrays/scalars."""
    import numpy as np

    try:
        multiarray = importlib.import_module('numpy._core.multiarray')  # numpy >= 2
    except ImportError:
        multiarray = importlib.import_module('numpy.core.multiarray')
    pairs = [(np.ndarray, 'numpy.ndarray'), (np.dtype, 'numpy.dtype')]
    # Checkpoints written under numpy 1.x name `numpy.core`, under 2.x `numpy._core`.
    for module in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        pairs.append((multiarray._reconstruct, f'{module}._reconstruct'))
        pairs.append((multiarray.scalar, f'{module}.scalar'))
    # A dtype is rebuilt as `dtype(...)` then given its state, which is only allowed
    # for allow-listed types. numpy >= 2 has one class per dtype: list exactly the
    # boolean and numeric ones (no object, void or string dtypes).
    codes = '?' + np.typecodes['AllInteger'] + np.typecodes['AllFloat']
    dtype_classes = {type(np.dtype(c)) for c in codes} - {np.dtype}
    for dtype_cls in sorted(dtype_classes, key=lambda c: c.__name__):
        pairs.append((dtype_cls, f'{dtype_cls.__module__}.{dtype_cls.__name__}'))
    return pairs


def mmengine_checkpoint_safe_globals():
    """Everything beyond plain tensors that an mmengine training checkpoint pickles.

    The list is exact: the ``message_hub`` state holds ``HistoryBuffer`` objects (numpy
    arrays of logged values, numpy scalars, and their statistic methods); the rest of a
    checkpoint is tensors, dicts, lists, strings and numbers, which torch allows.

    Returns:
        list: entries for :func:`torch.serialization.add_safe_globals` /
        :func:`torch.serialization.safe_globals`, as ``(object, pickled_name)`` pairs.
    """
    from mmengine.logging import HistoryBuffer

    return [(HistoryBuffer, 'mmengine.logging.history_buffer.HistoryBuffer'),
            (history_buffer_getattr, 'builtins.getattr')] + _numpy_array_globals()


def allow_mmengine_checkpoints():
    """Let ``torch.load(weights_only=True)`` read mmengine checkpoints (resume, load_from).

    Registers :func:`mmengine_checkpoint_safe_globals` process-wide, the way torch
    documents for trusted types. Nothing else changes: a pickle that names any other
    global, or tries to call one, is still refused.

    Returns:
        bool: True if registered, False on torch < 2.6 (no weights-only default).
    """
    if _torch_version() < (2, 6):
        return False
    torch.serialization.add_safe_globals(mmengine_checkpoint_safe_globals())
    return True


# --------------------------------------------------------------------------------------
# Checkpoint files: weights-only for URLs too, clear refusals, atomic writes, resume
# --------------------------------------------------------------------------------------
class PluginError(ValueError):
    """An error whose message names the file or key, the cause and the fix.

    The plugin's tools (``tools/train.py``, ``tools/test.py``) print these as one message
    instead of a traceback.
    """


class CheckpointRefusedError(PluginError, pickle.UnpicklingError):
    """A checkpoint holds Python objects that a weights-only load does not allow."""


class CheckpointReadError(PluginError):
    """A checkpoint file cannot be read (missing, empty, truncated, not a PyTorch file)."""


_TRUST_HINT = (
    'If you trust the source of this file, either re-save its tensors once in a trusted '
    'Python session (e.g. torch.save(torch.load(PATH, weights_only=False)["state_dict"], '
    "'clean.pth')) and use the new file, or run with the environment variable "
    'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1, which lets the file execute code')


def _refusal_reason(error):
    """The sentence of torch's weights-only error that says which global was refused."""
    text = str(error)
    marker = 'WeightsUnpickler error:'
    if marker in text:
        text = text.split(marker, 1)[1]
    # torch's message opens with a paragraph about its defaults and ends with advice
    # (allow-listing the global, weights_only=False); the refused global is in between.
    paragraphs = [p.strip() for p in text.split('\n\n') if p.strip()]
    for p in paragraphs:
        if not p.startswith(('Weights only load failed', 'Check the documentation')):
            return p.split(' Please use ')[0].rstrip('. ')
    return paragraphs[-1] if paragraphs else type(error).__name__


def _first_sentence(error):
    text = ' '.join(str(error).split())
    return (text.split('. ')[0].rstrip('.') if text else '') or type(error).__name__


# Messages of torch.load on a file that is not a complete torch.save archive.
_DAMAGED_FILE_HINTS = ('PytorchStreamReader', 'central directory', 'Ran out of input',
                       'invalid load key', 'EOF', 'truncated', 'magic number',
                       'Unsupported operand')


def load_checkpoint_file(filename, map_location=None, source=None):
    """``torch.load`` a local checkpoint weights-only, with one clear error on failure.

    ``weights_only`` is left to torch's default (True on torch >= 2.6), so torch's own
    environment variables keep working; the types mmengine checkpoints contain are
    allow-listed by :func:`allow_mmengine_checkpoints`.

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
        return torch.load(filename, map_location=map_location)
    except CheckpointRefusedError:
        raise
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


def _download_to_cache(url, model_dir=None, progress=True):
    """Download ``url`` once into torch's hub cache (what mmengine's ``load_url`` uses)."""
    from urllib.parse import urlparse

    if model_dir is None:
        model_dir = os.path.join(torch.hub.get_dir(), 'checkpoints')
    os.makedirs(model_dir, exist_ok=True)
    cached = os.path.join(model_dir, os.path.basename(urlparse(url).path))
    if not os.path.exists(cached):
        sys.stderr.write(f'Downloading: "{url}" to {cached}\n')
        # Writes a temporary file and renames it, so an interrupted download leaves no
        # partial file under the cached name.
        torch.hub.download_url_to_file(url, cached, None, progress=progress)
    return cached


def _load_cached_download(cached, url, map_location):
    is_legacy_zip = getattr(torch.hub, '_is_legacy_zip_format', None)
    if is_legacy_zip is not None and is_legacy_zip(cached):
        # A zip of one torch < 1.6 file (torch.hub unpacks these): load the member.
        import zipfile

        with zipfile.ZipFile(cached) as archive:
            member = archive.infolist()[0]
            archive.extract(member, os.path.dirname(cached))
        cached = os.path.join(os.path.dirname(cached), member.filename)
    return load_checkpoint_file(cached, map_location, source=f'{url} (cached as {cached})')


def load_from_http_weights_only(filename, map_location=None, model_dir=None,
                                progress=os.isatty(0)):
    """mmengine's ``http(s)://`` checkpoint scheme, loading weights-only.

    As mmengine's ``load_from_http``: in distributed runs local rank 0 downloads first
    and the others read the cached file after a barrier.

    Args:
        filename (str): The URL.
        map_location: As for :func:`torch.load`.
        model_dir (str, optional): Download directory; torch's hub cache by default.
        progress (bool): Show a progress bar while downloading.

    Returns:
        The loaded checkpoint.
    """
    from mmengine.dist import get_dist_info

    rank, world_size = get_dist_info()
    if rank == 0:
        cached = _download_to_cache(filename, model_dir, progress)
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            cached = _download_to_cache(filename, model_dir, progress)
    return _load_cached_download(cached, filename, map_location)


def load_from_local_weights_only(filename, map_location=None):
    """mmengine's local-file checkpoint scheme with the errors of :func:`load_checkpoint_file`."""
    filename = os.path.expanduser(filename)
    if not os.path.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    return load_checkpoint_file(filename, map_location)


def enable_safe_checkpoint_loading():
    """Route mmengine's local and ``http(s)://`` checkpoint loaders through weights-only loading.

    Every reader of MMEngine and MMSeg (``Runner.load_checkpoint`` / ``resume``,
    ``load_checkpoint``, ``init_cfg=dict(type='Pretrained')``, ``init_model``) goes through
    :class:`mmengine.runner.CheckpointLoader`; its two schemes are replaced, and the
    ``torchvision://`` / ``open-mmlab://`` / ``mmcls://`` loaders, which call
    ``load_from_http`` directly, get the same function.

    Returns:
        bool: True (the loaders are always replaced; idempotent).
    """
    import mmengine.runner.checkpoint as ckpt_module

    loader = ckpt_module.CheckpointLoader
    loader.register_scheme(('http://', 'https://'), load_from_http_weights_only, force=True)
    loader.register_scheme('', load_from_local_weights_only, force=True)
    ckpt_module.load_from_http = load_from_http_weights_only
    ckpt_module.load_from_local = load_from_local_weights_only
    return True


def _is_local_path(filename):
    return isinstance(filename, str) and '://' not in filename


def save_checkpoint_atomic(original):
    """Wrap mmengine's ``save_checkpoint`` so local files appear complete or not at all."""

    @functools.wraps(original)
    def save_checkpoint(checkpoint, filename, file_client_args=None, backend_args=None):
        if file_client_args is not None or backend_args is not None \
                or not _is_local_path(filename):
            return original(checkpoint, filename, file_client_args=file_client_args,
                            backend_args=backend_args)
        directory = os.path.dirname(os.path.abspath(filename))
        os.makedirs(directory, exist_ok=True)
        tmp = os.path.join(directory, f'.{os.path.basename(filename)}.tmp{os.getpid()}')
        try:
            with open(tmp, 'wb') as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, filename)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    save_checkpoint.__mmseg_segman_atomic__ = True
    return save_checkpoint


_CKPT_NAME = re.compile(r'^(?:iter|epoch)_(\d+)\.pth$')


def checkpoint_is_readable(filename):
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


def find_latest_loadable_checkpoint(original):
    """Wrap mmengine's ``find_latest_checkpoint`` (auto-resume) to skip unreadable files."""

    @functools.wraps(original)
    def find_latest_checkpoint(path):
        from mmengine.logging import print_log

        last = original(path)
        candidates = [last] if last else []
        if os.path.isdir(path):
            numbered = [(int(m.group(1)), name) for name in os.listdir(path)
                        if (m := _CKPT_NAME.match(name))]
            candidates += [os.path.join(path, name) for _, name in sorted(numbered,
                                                                          reverse=True)]
        problems = []
        for candidate in dict.fromkeys(candidates):  # ordered, without repeats
            if not _is_local_path(candidate):
                return candidate  # remote storage: leave it to mmengine
            problem = checkpoint_is_readable(candidate)
            if problem is None:
                if problems:
                    print_log(
                        f'Resuming from {candidate}, the newest checkpoint that loads: ' +
                        '; '.join(problems), logger='current', level=logging.WARNING)
                return candidate
            problems.append(f'{candidate} cannot be used ({problem})')
        if problems:
            raise CheckpointReadError(
                f'--resume found no usable checkpoint in {path}: ' + '; '.join(problems) +
                '. Remove the damaged files to train from scratch, or pass a checkpoint '
                'with --cfg-options load_from=PATH')
        return None

    find_latest_checkpoint.__mmseg_segman_fallback__ = True
    return find_latest_checkpoint


def enable_atomic_checkpoints():
    """Atomic checkpoint writes and auto-resume that skips unreadable checkpoints.

    Returns:
        bool: True (idempotent).
    """
    import mmengine.runner.checkpoint as ckpt_module
    import mmengine.runner.runner as runner_module

    for module in (ckpt_module, runner_module):
        if not getattr(module.save_checkpoint, '__mmseg_segman_atomic__', False):
            module.save_checkpoint = save_checkpoint_atomic(module.save_checkpoint)
    if not getattr(runner_module.find_latest_checkpoint, '__mmseg_segman_fallback__', False):
        runner_module.find_latest_checkpoint = find_latest_loadable_checkpoint(
            runner_module.find_latest_checkpoint)
    return True


# --------------------------------------------------------------------------------------
# Multi-process training without CUDA
# --------------------------------------------------------------------------------------
# Collective timeout of CPU (gloo) runs when `env_cfg.dist_cfg.timeout` is not set: a
# stopped or hung process then fails the others within minutes instead of torch's 30.
# CPU runs synchronise every step, so only checkpoint writes and downloads on rank 0 make
# the others wait longer than a step; raise it for slow downloads.
CPU_DIST_TIMEOUT_S = 300


def _init_dist_pytorch_cpu(backend, init_backend='torch', **kwargs):
    """mmengine's torchrun initialisation without ``torch.cuda.set_device``, on gloo."""
    import datetime

    import torch.distributed as dist

    if init_backend != 'torch':
        raise ValueError(f"init_backend={init_backend!r} needs CUDA; without CUDA "
                         f"mmseg_segman supports only init_backend='torch'")
    if backend != 'gloo':
        warnings.warn(f"CUDA is not available: using the 'gloo' distributed backend "
                      f"instead of {backend!r} (env_cfg.dist_cfg.backend)")
    # mmengine's init_dist has already turned a configured timeout (seconds) into a
    # timedelta.
    kwargs.setdefault('timeout', datetime.timedelta(seconds=CPU_DIST_TIMEOUT_S))
    dist.init_process_group(backend='gloo', **kwargs)


def exit_with_launcher(sig=None):
    """End this process when the ``torchrun`` launcher that started it dies.

    A SIGKILLed launcher cannot stop its workers, which would then train on as orphans
    (holding the port, the cores and the work directory). Linux's ``PR_SET_PDEATHSIG``
    makes the kernel send ``sig`` to this process when its parent exits.

    Args:
        sig (int, optional): Signal to receive; SIGTERM by default.

    Returns:
        bool: True if armed; False outside torchrun workers or off Linux.
    """
    import ctypes
    import signal

    if not sys.platform.startswith('linux') or 'TORCHELASTIC_RUN_ID' not in os.environ:
        return False
    sig = signal.SIGTERM if sig is None else sig
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        if libc.prctl(pr_set_pdeathsig, int(sig), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() == 1 and not _pid1_is_launcher():
        os.kill(os.getpid(), sig)  # the launcher died before the signal was armed
    return True


def _pid1_is_launcher():
    """True if PID 1 is torchrun itself (a container started with it as entry point)."""
    try:
        with open('/proc/1/cmdline', 'rb') as f:
            cmdline = f.read()
    except OSError:
        return True  # cannot tell: never kill on a guess
    return b'torchrun' in cmdline or b'torch.distributed.run' in cmdline


def _module_on_cpu(module):
    return all(t.device.type == 'cpu'
               for t in [*module.parameters(), *module.buffers()])


def _cpu_ddp_init(original_init):
    """Wrap ``MMDistributedDataParallel.__init__`` for modules that live on the CPU.

    The Runner always passes ``device_ids=[LOCAL_RANK]``, which DDP rejects for CPU
    modules; and SyncBN cannot synchronise CPU tensors, so it becomes plain BN.
    """

    @functools.wraps(original_init)
    def __init__(self, module, *args, **kwargs):
        if _module_on_cpu(module):
            from mmengine.model import revert_sync_batchnorm

            has_sync_bn = any(
                isinstance(m, torch.nn.SyncBatchNorm) for m in module.modules())
            if has_sync_bn:
                warnings.warn(
                    'SyncBatchNorm cannot synchronise across CPU processes: converted '
                    'to BatchNorm, so each process normalises with its own batch '
                    'statistics')
                module = revert_sync_batchnorm(module)
            kwargs['device_ids'] = None
            kwargs.pop('output_device', None)
        original_init(self, module, *args, **kwargs)

    __init__.__mmseg_segman_cpu__ = True
    return __init__


def enable_cpu_distributed():
    """Make mmengine's ``launcher='pytorch'`` training run without CUDA.

    Returns:
        bool: True if the CPU paths are active, False when CUDA (or another
        accelerator mmengine drives itself: NPU, MLU, MUSA) is available.
    """
    from mmengine.device import is_mlu_available, is_musa_available, is_npu_available

    if torch.cuda.is_available() or is_npu_available() or is_mlu_available() \
            or is_musa_available():
        return False
    import mmengine.dist.utils as dist_utils
    from mmengine.model import MMDistributedDataParallel

    dist_utils._init_dist_pytorch = _init_dist_pytorch_cpu
    if not getattr(MMDistributedDataParallel.__init__, '__mmseg_segman_cpu__', False):
        MMDistributedDataParallel.__init__ = _cpu_ddp_init(
            MMDistributedDataParallel.__init__)
    return True


# --------------------------------------------------------------------------------------
# Package-scoped config bases without pkg_resources
# --------------------------------------------------------------------------------------
def _top_level_module(package):
    """The importable module of a distribution or module name (mmsegmentation -> mmseg)."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return package
    top_level = (dist.read_text('top_level.txt') or '').split()
    return top_level[0] if top_level else package.replace('-', '_')


def _module_is_installed(package):
    spec = importlib.util.find_spec(_top_level_module(package))
    return spec is not None and spec.origin is not None


def _module_installed_path(package):
    spec = importlib.util.find_spec(_top_level_module(package))
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f'config scope package {package!r} is not installed')
    return os.path.dirname(spec.origin)


def enable_package_scoped_configs():
    """Let mmengine's Config resolve ``mmseg::...`` bases when pkg_resources is absent.

    Returns:
        bool: True if mmengine's lookups were replaced, False if pkg_resources exists.
    """
    # mmengine accepts only the scopes listed in MODULE2PACKAGE: ``mmseg_segman::`` bases
    # (the configs this package installs under mmseg_segman/.mim) need the entry too.
    from mmengine.config.utils import MODULE2PACKAGE
    MODULE2PACKAGE.setdefault('mmseg_segman', 'mmseg_segman')
    if importlib.util.find_spec('pkg_resources') is not None:
        return False
    import mmengine.config.config as config_module

    config_module.is_installed = _module_is_installed
    config_module.get_installed_path = _module_installed_path
    return True


install_mmcv_ext_stub()
allow_mmengine_checkpoints()
enable_cpu_distributed()
enable_package_scoped_configs()
enable_safe_checkpoint_loading()
enable_atomic_checkpoints()
exit_with_launcher()
