"""Model tests: the shared helpers module and the MMSeg registry fixture.

The test folders have no ``__init__.py`` (and an installed dependency ships a top-level
``tests`` package), so ``tests.models._family_helpers`` cannot be imported by its package path;
pytest.ini puts this folder on ``pythonpath`` and the test modules ``from _family_helpers
import ...``.
"""
import pytest


@pytest.fixture(scope='module')
def mmseg_registry():
    """MMSeg's modules registered and ``mmseg`` as the default scope (configs build by type)."""
    from mmseg.utils import register_all_modules

    register_all_modules()
