"""Every dependency workaround of the plugin, in one place.

Importing :mod:`mmseg_segman` applies four shims. Each one is inert when the
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
  BN (with a warning). Inert when CUDA is available.
* :func:`enable_package_scoped_configs` - mmengine resolves package-scoped config
  bases (``_base_ = ['mmseg::_base_/...']``) with ``pkg_resources``, which setuptools
  >= 81 no longer ships; importlib.metadata and module lookup replace it. Inert
  when ``pkg_resources`` exists. (Our own configs do not depend on it: MMSeg's stock
  tools read a config before its ``custom_imports`` load this package.)

They run when the package is imported, which for MMSeg's stock ``tools/train.py`` is
when the config is loaded (``custom_imports``), before the Runner sets anything up.
"""
import functools
import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
import os
import pickle
import sys
import types
import warnings

import torch

__all__ = [
    'MissingCompiledOpError', 'mmcv_ext_available', 'install_mmcv_ext_stub',
    'mmengine_checkpoint_safe_globals', 'allow_mmengine_checkpoints',
    'enable_cpu_distributed', 'enable_package_scoped_configs'
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
# Multi-process training without CUDA
# --------------------------------------------------------------------------------------
def _init_dist_pytorch_cpu(backend, init_backend='torch', **kwargs):
    """mmengine's torchrun initialisation without ``torch.cuda.set_device``, on gloo."""
    import torch.distributed as dist

    if init_backend != 'torch':
        raise ValueError(f"init_backend={init_backend!r} needs CUDA; without CUDA "
                         f"mmseg_segman supports only init_backend='torch'")
    if backend != 'gloo':
        warnings.warn(f"CUDA is not available: using the 'gloo' distributed backend "
                      f"instead of {backend!r} (env_cfg.dist_cfg.backend)")
    dist.init_process_group(backend='gloo', **kwargs)


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
    from mmengine.device import (is_mlu_available, is_musa_available,
                                 is_npu_available)

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
