"""Load the plugin when MMSeg, mmcv or a checkpoint is first used, with no import of ours.

MMSeg's own entry points (``mmseg.apis``, the scripts under ``mmseg/.mim/tools``) import
mmseg before any config's ``custom_imports`` can load this package, and with mmcv-lite
``import mmseg`` fails on the missing ``mmcv._ext``. The package therefore installs
``mmseg_segman_autoload.pth`` into site-packages (see ``setup.py``), which runs
:func:`install` at interpreter start. That only puts a :data:`sys.meta_path` finder in
place (standard library only: no torch, no mmcv); the finder then waits for these first
imports:

* ``mmcv`` (which ``import mmseg`` does first): right after mmcv's own ``__init__``
  runs, :mod:`mmseg_segman.compat` is loaded, so the mmcv-lite stand-in, the weights-only
  allow-list and the other shims are in place before ``mmcv.ops`` or mmseg is imported.
  compat is loaded from its file, without the package ``__init__``, because the
  package's models import mmseg, which is itself in the middle of being imported.
* ``mmseg.models``, ``mmseg.datasets`` or ``mmseg.engine`` (where MMSeg's registries
  import their modules from before they build anything; also ``mmseg.apis`` and
  ``register_all_modules`` import them): once the outermost mmseg import under way has
  finished, the whole package is imported, which registers its models, transforms and
  hooks; so a config without ``custom_imports`` still builds.
* ``mmengine`` (once its ``__init__``, which imports ``mmengine.config``, has run): the same,
  for scripts that parse a config before they import mmcv (MMSeg's ``tools/train.py``), so
  ``_base_ = ['mmseg_segman::...']`` resolves there.
* ``torch``: ``torch.load`` is wrapped until its first call, which loads compat (for the
  checkpoint allow-list) and then restores the original function. Scripts that use only
  torch, such as MMSeg's ``misc/publish_model.py``, can then read mmengine checkpoints.

Set ``MMSEG_SEGMAN_NO_AUTOLOAD=1`` to turn all of this off; the plugin then loads only
when imported (``import mmseg_segman`` or the configs' ``custom_imports``). A failure
inside the hook is reported as a warning and never breaks the import that triggered it.
"""
import os
import sys

ENV_DISABLE = 'MMSEG_SEGMAN_NO_AUTOLOAD'
PACKAGE = 'mmseg_segman'
PTH_NAME = 'mmseg_segman_autoload.pth'
# Where MMSeg's registries import their modules from (mmseg/registry/registry.py): the
# plugin registers models, transforms, dataset wrappers and hooks, so it is imported after
# the first of these, before anything is built from them.
REGISTRY_LOCATIONS = ('mmseg.models', 'mmseg.datasets', 'mmseg.engine')
# The installed .pth file (setup.py writes it). Its code finds this file through the
# meta-path finders, so it serves a normal install and an editable one (whose finder is
# put in place by ``__editable__.mmseg_segman-*.pth``, which sorts, and so runs, before
# this file); it runs this file without the package ``__init__`` (which imports torch),
# and it uses importlib.machinery, not importlib.util, which costs ~5 ms more at start.
_PTH_CODE = """\
if os.environ.get('MMSEG_SEGMAN_NO_AUTOLOAD', '') in ('', '0') and \\
        'mmseg_segman._autoload' not in sys.modules:
    try:
        from importlib.machinery import ModuleSpec, SourceFileLoader
        s = None
        for f in sys.meta_path:
            s = getattr(f, 'find_spec', None) and f.find_spec('mmseg_segman', None)
            if s:
                break
        if s and s.submodule_search_locations:
            n = 'mmseg_segman._autoload'
            p = os.path.join(list(s.submodule_search_locations)[0], '_autoload.py')
            ld = SourceFileLoader(n, p)
            m = type(sys)(n)
            m.__file__, m.__loader__, m.__package__ = p, ld, 'mmseg_segman'
            m.__spec__ = ModuleSpec(n, ld, origin=p)
            sys.modules[n] = m
            ld.exec_module(m)
            m.install()
    except Exception as e:
        sys.stderr.write('mmseg_segman autoload is off: %r\\n' % (e,))
"""
# site.py executes a .pth line that starts with "import"; one line, hence the exec.
PTH_CONTENT = 'import os, sys; exec(%r)\n' % _PTH_CODE


def disabled() -> bool:
    """True when ``MMSEG_SEGMAN_NO_AUTOLOAD`` is set to anything but ``''`` or ``'0'``."""
    return os.environ.get(ENV_DISABLE, '') not in ('', '0')


def _warn(what, exc):
    import warnings

    warnings.warn(f'mmseg_segman autoload: {what} failed ({exc!r}). Import mmseg_segman '
                  f'yourself before mmseg, or set {ENV_DISABLE}=1 to turn the hook off',
                  RuntimeWarning, stacklevel=3)


def load_compat():
    """Load :mod:`mmseg_segman.compat` (which applies its shims) without the package.

    Returns:
        module: ``sys.modules['mmseg_segman.compat']``, loaded now or earlier.
    """
    name = f'{PACKAGE}.compat'
    if name in sys.modules:  # loaded, or being loaded by `import mmseg_segman`
        return sys.modules[name]
    import importlib.util

    package = sys.modules.get(PACKAGE)
    if package is not None:
        spec = package.__spec__
    else:  # found past our finder, so that probing does not wrap a loader for nothing
        spec = find_spec_after(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f'{PACKAGE} is not importable from sys.path', name=PACKAGE)
    path = os.path.join(list(spec.submodule_search_locations)[0], 'compat.py')
    compat_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(compat_spec)
    # Registered under its real name, so the package's own `from . import compat` later
    # finds this module instead of running compat a second time.
    sys.modules[name] = module
    try:
        compat_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _after_mmcv():
    try:
        load_compat()
    except Exception as exc:  # noqa: BLE001  (never break the user's import)
        _warn('loading mmseg_segman.compat', exc)


def _register_plugin():
    if PACKAGE in sys.modules:  # imported already, or being imported (it imports mmseg)
        return
    try:
        __import__(PACKAGE)
    except Exception as exc:  # noqa: BLE001
        _warn(f'importing {PACKAGE} (registration of its modules)', exc)


def _after_package():
    """Bind the submodules this hook loaded before the package onto the package."""
    package = sys.modules[PACKAGE]
    for child in ('compat', '_autoload'):
        module = sys.modules.get(f'{PACKAGE}.{child}')
        if module is not None and not hasattr(package, child):
            setattr(package, child, module)


def _after_torch():
    torch = sys.modules['torch']
    original = torch.load

    def load(*args, **kwargs):
        if torch.load is load:
            torch.load = original
        _after_mmcv()
        return original(*args, **kwargs)

    load.__wrapped__ = original
    load.__doc__ = original.__doc__
    load.__name__ = getattr(original, '__name__', 'load')
    torch.load = load


def _is_autoload_finder(finder):
    # An attribute, not isinstance: a second copy of this module (e.g. a site directory
    # that site.py processes twice) has its own class.
    return getattr(finder, 'mmseg_segman_autoload', False)


def find_spec_after(fullname, path=None, target=None):
    """The spec that the meta-path finders other than the autoload ones give."""
    for finder in list(sys.meta_path):
        if _is_autoload_finder(finder) or not hasattr(finder, 'find_spec'):
            continue
        spec = finder.find_spec(fullname, path, target)
        if spec is not None:
            return spec
    return None


def _is_mmseg(name):
    return name == 'mmseg' or name.startswith('mmseg.')


class AutoloadFinder:
    """A meta-path finder that runs hooks right after certain modules first execute.

    It never loads anything itself: it asks the finders after it for a module's spec and
    wraps that spec's loader's ``exec_module`` once. ``hooks`` run right after the module
    of that name. The plugin's registration is due once one of :data:`REGISTRY_LOCATIONS`
    has run, and runs when no mmseg module is still being imported (in this thread): the
    plugin imports ``mmseg.apis`` and the rest, which may be the very modules whose import
    is under way (``from mmseg.apis import ...`` imports ``mmseg.models`` on its way). So
    while the registration is pending every mmseg module is wrapped, to count the depth.
    The finder removes itself from :data:`sys.meta_path` when nothing is left to do.
    """

    mmseg_segman_autoload = True

    def __init__(self, hooks, register=True):
        self.hooks = dict(hooks)
        self.register_pending = register  # the plugin still has to be registered
        self.register_due = False  # a registry location has been imported
        self.depth = {}  # thread id -> mmseg modules being executed

    def find_spec(self, fullname, path=None, target=None):
        watched = fullname in self.hooks or (self.register_pending and _is_mmseg(fullname))
        if not watched or fullname in sys.modules:
            return None
        spec = find_spec_after(fullname, path, target)
        loader = getattr(spec, 'loader', None)
        if loader is None or isinstance(loader, type) or not hasattr(loader, 'exec_module'):
            return None  # nothing we can hook: let the import system handle it
        original = loader.exec_module

        def exec_module(module):
            vars(loader).pop('exec_module', None)  # one shot: the loader is as before
            self._exec(fullname, original, module)

        try:
            loader.exec_module = exec_module
        except AttributeError:  # a loader without instance attributes
            return None
        return spec

    def _exec(self, fullname, original, module):
        from _thread import get_ident

        counted = _is_mmseg(fullname)
        thread = get_ident()
        if counted:
            self.depth[thread] = self.depth.get(thread, 0) + 1
        try:
            original(module)
        finally:
            if counted:
                self.depth[thread] -= 1
        # Popped only now: a spec found by a mere probe (importlib.util.find_spec) and
        # never executed must not use up the hook.
        hook = self.hooks.pop(fullname, None)
        if hook is not None:
            hook()
        if fullname in REGISTRY_LOCATIONS:
            self.register_due = True
        if self.register_pending and self.register_due and not self.depth.get(thread):
            self.register_pending = False
            _register_plugin()
        if not self.hooks and not self.register_pending:
            self.uninstall()

    def uninstall(self):
        while self in sys.meta_path:
            sys.meta_path.remove(self)


def install():
    """Put the finder first on :data:`sys.meta_path` (once; not when disabled).

    Returns:
        AutoloadFinder | None: the finder, or None when disabled or already installed.
    """
    if disabled() or any(_is_autoload_finder(f) for f in sys.meta_path):
        return None
    # mmengine (after its __init__, which imports mmengine.config): scripts parse a config
    # (``mmseg_segman::`` bases) before they import mmcv.
    hooks = {'mmcv': _after_mmcv, 'mmengine': _after_mmcv, 'torch': _after_torch,
             PACKAGE: _after_package}
    finder = AutoloadFinder({k: v for k, v in hooks.items() if k not in sys.modules},
                            register=PACKAGE not in sys.modules)
    if finder.hooks or finder.register_pending:
        sys.meta_path.insert(0, finder)
        return finder
    return None
