"""Workarounds for upstream defects that leave no extension point, applied explicitly.

Nothing here runs on import. The plugin's tools call :func:`apply_needed_shims`, which
applies only the shims whose defect is present in the installed versions and prints one
line for each one it applies; ``docs/get_started.md`` ("Workarounds") lists each with its
upstream issue, and ``tests/test_shims.py`` fails once one is no longer needed.

* :func:`install_mmcv_ext_stub` - mainline mmsegmentation (<= 1.2.x) imports compiled
  ``mmcv.ops`` unconditionally (``mmseg/utils/mask_classification.py``), so ``import
  mmseg`` fails with ``mmcv-lite`` (no ``mmcv._ext``). A stand-in module makes the import
  work; calling any missing op raises :class:`~mmseg_segman.errors.MissingCompiledOpError`
  naming it. onedl-mmsegmentation guards those imports and needs nothing.
* :func:`enable_package_scoped_configs` - mainline mmengine (0.10.7) resolves
  ``mmseg::`` / ``mmseg_segman::`` config bases with ``pkg_resources``, which setuptools
  >= 81 no longer ships; onedl-mmengine uses ``importlib``.
"""
import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
import os
import sys
import types
from typing import Callable, Dict, List

# Standard library only: the tools and the test harness load this file on its own, before
# mmseg (and so the package, whose __init__ imports it) can be imported.

__all__ = ['mmcv_ext_available', 'needs_mmcv_ext_stub', 'install_mmcv_ext_stub',
           'needs_package_scoped_configs', 'enable_package_scoped_configs', 'SHIMS',
           'apply_needed_shims']


# --------------------------------------------------------------------------------------
# mmcv-lite under mainline mmseg: a stand-in for the compiled extension
# --------------------------------------------------------------------------------------
def mmcv_ext_available() -> bool:
    """True if mmcv's compiled extension ``mmcv._ext`` is really installed."""
    mod = sys.modules.get('mmcv._ext')
    if mod is not None:
        return not getattr(mod, '__mmseg_segman_stub__', False)
    try:
        return importlib.util.find_spec('mmcv._ext') is not None
    except (ImportError, ValueError):
        return False


def _mmseg_guards_mmcv_ops() -> bool:
    """True if the installed mmseg imports without compiled mmcv ops (onedl's fork does)."""
    spec = importlib.util.find_spec('mmseg')
    if spec is None or not spec.submodule_search_locations:
        return True
    path = os.path.join(list(spec.submodule_search_locations)[0], 'utils',
                        'mask_classification.py')
    try:
        with open(path) as f:
            source = f.read()
    except OSError:
        return True
    # Mainline: a bare `from mmcv.ops import point_sample` at module level.
    return '\nfrom mmcv.ops import' not in source


def needs_mmcv_ext_stub() -> bool:
    """True when ``import mmseg`` would fail for want of ``mmcv._ext``."""
    # The file check first: looking for mmcv._ext imports mmcv, and with it torch (3 s).
    return not _mmseg_guards_mmcv_ops() and not mmcv_ext_available()


def _missing_op(name: str) -> Callable:
    def op(*args, **kwargs):
        from mmseg_segman.errors import MissingCompiledOpError

        raise MissingCompiledOpError(
            f"mmcv compiled op '{name}' is not available: this environment has mmcv without "
            f"compiled ops (mmcv-lite). Install full mmcv, or the onedl-mmcv / "
            f"onedl-mmsegmentation stack, to use it; mmseg_segman's own models do not need it")
    op.__name__ = name
    return op


def install_mmcv_ext_stub() -> bool:
    """Put a stand-in ``mmcv._ext`` into ``sys.modules`` (mainline mmseg with mmcv-lite).

    Mainline mmseg imports a few ``mmcv.ops`` at import time; those modules call
    ``load_ext('_ext', [...])``, which only checks that the names exist. Every attribute
    of the stand-in is an op that raises :class:`MissingCompiledOpError`. It has a
    ``__spec__`` because ``pkgutil`` looks it up inside the Runner.

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

    def __getattr__(name: str):  # module-level getattr (PEP 562)
        if name.startswith('__'):
            raise AttributeError(name)
        return _missing_op(name)

    stub.__getattr__ = __getattr__
    sys.modules['mmcv._ext'] = stub
    return True


# --------------------------------------------------------------------------------------
# mainline mmengine without pkg_resources: package-scoped config bases
# --------------------------------------------------------------------------------------
def _top_level_module(package: str) -> str:
    """The importable module of a distribution or module name (mmsegmentation -> mmseg)."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return package
    top_level = (dist.read_text('top_level.txt') or '').split()
    return top_level[0] if top_level else package.replace('-', '_')


def _module_is_installed(package: str) -> bool:
    spec = importlib.util.find_spec(_top_level_module(package))
    return spec is not None and spec.origin is not None


def _module_installed_path(package: str) -> str:
    spec = importlib.util.find_spec(_top_level_module(package))
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f'config scope package {package!r} is not installed')
    return os.path.dirname(spec.origin)


def needs_package_scoped_configs() -> bool:
    """True when mmengine's config lookups need ``pkg_resources`` and it is absent."""
    import inspect

    import mmengine.config.config as config_module

    if importlib.util.find_spec('pkg_resources') is not None:
        return False
    try:
        source = inspect.getsource(config_module.get_installed_path)
    except (OSError, TypeError):
        return False
    return 'pkg_resources' in source


def enable_package_scoped_configs() -> bool:
    """Let mmengine's Config resolve ``mmseg::`` bases when it needs the missing
    ``pkg_resources`` (replaces the two lookups of ``mmengine.config.config``).

    Returns:
        bool: True if replaced, False if not needed.
    """
    if not needs_package_scoped_configs():
        return False
    import mmengine.config.config as config_module

    config_module.is_installed = _module_is_installed
    config_module.get_installed_path = _module_installed_path
    return True


# name -> (is it needed?, apply it, upstream reference)
SHIMS: Dict[str, tuple] = {
    'mmcv._ext stand-in': (needs_mmcv_ext_stub, install_mmcv_ext_stub,
                           'mainline mmsegmentation 1.2.2 imports compiled mmcv.ops '
                           'unconditionally; open-mmlab/mmsegmentation#871'),
    'package-scoped configs without pkg_resources': (
        needs_package_scoped_configs, enable_package_scoped_configs,
        'mmengine 0.10.7 resolves config scopes with pkg_resources; fixed '
        'on its main branch by open-mmlab/mmengine#1676, unreleased'),
}


def apply_needed_shims(announce: Callable[[str], None] = lambda line: print(
        line, file=sys.stderr)) -> List[str]:
    """Apply every shim whose defect is present, announcing each in one line.

    Args:
        announce (callable): Receives the line. Default: print to stderr.

    Returns:
        list[str]: Names of the shims applied.
    """
    applied = []
    for name, (needed, apply, upstream) in SHIMS.items():
        if needed() and apply():
            applied.append(name)
            announce(f'mmseg_segman: applied workaround "{name}" ({upstream})')
    return applied
