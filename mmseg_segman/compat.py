"""Every dependency workaround of the plugin, in one place.

Each shim is inert when the real dependency is complete (full mmcv with compiled ops, a CUDA
build of torch) and only fills the gap on CPU-only installs (``mmcv-lite``).
"""
import importlib.machinery
import importlib.util
import sys
import types

__all__ = ['MissingCompiledOpError', 'mmcv_ext_available', 'install_mmcv_ext_stub']


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
            f"mmcv compiled op '{name}' is not available: this environment has mmcv without "
            f"compiled ops (mmcv-lite). Install full mmcv (e.g. `mim install 'mmcv>=2.0.0rc4,<2.2.0'`) "
            f"to use it; mmseg_segman's own models do not need it.")
    op.__name__ = name
    return op


def install_mmcv_ext_stub():
    """Make ``import mmseg`` work with mmcv-lite.

    mmseg 1.2.2 imports a few ``mmcv.ops`` unconditionally (``point_sample`` through
    ``mmseg.utils``); those modules call ``load_ext('_ext', [...])`` at import, which only
    checks that the names exist. A stand-in module whose every attribute is an op raising
    :class:`MissingCompiledOpError` lets them import while any real call fails clearly. The
    module has a ``__spec__`` because ``pkgutil``/``importlib`` look it up inside the Runner.
    Does nothing when the real extension is installed.
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


install_mmcv_ext_stub()
