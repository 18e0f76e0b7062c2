"""tests/classification need mmpretrain, which lives in the second environment .venv-cls
(``bash tools/install.sh --classification``; ``bash tools/run_tests.sh`` runs them there).

In an environment without mmpretrain (the main ``.venv``) they skip, except modules that set
``NEEDS_MMPRETRAIN = False``. With ``MMSEG_SEGMAN_CLASSIFICATION_ENV=1`` (set by run_tests.sh
for the .venv-cls stage) a missing or broken mmpretrain fails them instead.
"""
import os
from pathlib import Path

import numpy as np
import pytest

from mmseg_segman.classification import mmpretrain_registered, require_mmpretrain

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO_ROOT / 'configs' / 'imagenet'
REQUIRED = os.environ.get('MMSEG_SEGMAN_CLASSIFICATION_ENV') == '1'
FAMILIES = ('segman', 'segnext', 'lrformer')


# Module scope: it must run before the module-scoped fixtures that train models.
@pytest.fixture(autouse=True, scope='module')
def _needs_mmpretrain(request):
    if not getattr(request.module, 'NEEDS_MMPRETRAIN', True) or mmpretrain_registered():
        return
    try:
        require_mmpretrain()
    except ImportError as err:
        if REQUIRED:
            pytest.fail(f'{err} (MMSEG_SEGMAN_CLASSIFICATION_ENV=1: this is the '
                        'classification environment)')
        pytest.skip(str(err))


def write_image_folder(root: Path, counts: dict, size: int = 40, seed: int = 0) -> Path:
    """``root/<class>/<i>.png`` for ``counts = {class: n}``; class k is a flat grey level
    (dark for the first class, light for the second, ...) plus noise, so classes separate."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    levels = np.linspace(40, 215, len(counts))
    for level, (name, n) in zip(levels, counts.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = np.clip(level + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / name / f'{i}.png')
    return root


def small_data_cfg(root: Path, classes, batch_size: int = 4, size: int = 32) -> dict:
    """Dataloader settings that read ``root`` (an image folder) at ``size`` x ``size``."""
    pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=(size, size)),
        dict(type='PackInputs'),
    ]
    return dict(
        batch_size=batch_size,
        num_workers=0,
        persistent_workers=False,
        dataset=dict(type='CustomDataset', data_root=str(root), data_prefix='',
                     classes=list(classes), pipeline=pipeline, _delete_=True),
        sampler=dict(type='DefaultSampler', shuffle=False, _delete_=True))
