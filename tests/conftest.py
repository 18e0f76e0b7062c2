"""Suite-wide settings and fixtures.

* One intra-op thread unless ``OMP_NUM_THREADS`` says otherwise: the suite targets a
  2-core machine, where a second OpenMP thread mostly waits on barriers (measured: a toy
  training step went from 0.14 s to several seconds when the cores were busy). The
  environment variable is also inherited by the subprocesses the tool tests start.
* ``golden_dir``: the reference outputs of the authors' code, ``<repo>/../shared/golden``
  or ``$MMSEG_SEGMAN_GOLDEN``. Missing files skip, except under ``CI`` where they fail.
"""
import os
from pathlib import Path

import pytest

if 'OMP_NUM_THREADS' not in os.environ:
    os.environ['OMP_NUM_THREADS'] = '1'
    import torch

    torch.set_num_threads(1)

import mmseg_segman  # noqa: E402,F401  (applies compat before any test imports mmseg)

REPO_ROOT = Path(__file__).resolve().parents[1]


def golden_root():
    return Path(os.environ.get('MMSEG_SEGMAN_GOLDEN',
                               REPO_ROOT.parent / 'shared' / 'golden'))


@pytest.fixture(scope='session')
def golden_dir():
    """Directory of the golden files; skips (fails under CI) when it is missing."""
    root = golden_root()
    if not root.is_dir():
        reason = (f'golden directory {root} not found; set MMSEG_SEGMAN_GOLDEN '
                  f'to its location')
        if os.environ.get('CI'):
            pytest.fail(reason + ' (CI is set)')
        pytest.skip(reason)
    return root


@pytest.fixture(scope='session')
def load_golden(golden_dir):
    """``load_golden('segman-t.pt')``: the golden dict (loaded weights-only, once per session)."""
    import torch

    cache = {}

    def load(name):
        if name not in cache:
            path = golden_dir / name
            if not path.is_file():
                reason = f'golden file {path} is missing'
                if os.environ.get('CI'):
                    pytest.fail(reason + ' (CI is set)')
                pytest.skip(reason)
            cache[name] = torch.load(path, weights_only=True)
        return cache[name]

    return load
