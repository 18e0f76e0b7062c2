"""Test harness only: the mmcv._ext stand-in in every interpreter the tests start.

tests/conftest.py puts this folder on PYTHONPATH only where mainline mmseg would need the
stand-in (mmcv-lite on the frozen stack), playing the role of full mmcv there.
"""
import importlib.util
import os

_shims = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), 'mmseg_segman', 'shims.py')
_spec = importlib.util.spec_from_file_location('mmseg_segman_harness_shims', _shims)
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
if _module.needs_mmcv_ext_stub():
    _module.install_mmcv_ext_stub()
    _module.enable_package_scoped_configs()  # no-op unless mmengine needs pkg_resources
