"""Model tests: the shared helpers module and the MMSeg registry fixture.

The test folders have no ``__init__.py`` (and an installed dependency ships a top-level
``tests`` package), so ``tests.models._family_helpers`` cannot be imported by its package path;
this folder goes on ``sys.path`` instead, whatever pytest's import mode, and the test modules
under it ``from _family_helpers import ...``.
"""
import sys
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


@pytest.fixture(scope='module')
def mmseg_registry():
    """MMSeg's modules registered and ``mmseg`` as the default scope (configs build by type)."""
    from mmseg.utils import register_all_modules

    register_all_modules()
