"""Evaluate an ImageNet classifier: mmpretrain's ``tools/test.py`` with mmseg_segman loaded.

Same arguments as mmpretrain's (``--work-dir``, ``--out``, ``--cfg-options``, ``--launcher``,
...); see ``python tools/test_cls.py -h``. CHECKPOINT may be an mmpretrain checkpoint or the
authors' ImageNet file (e.g. ``SegMAN_Encoder_t.pth.tar``), which is loaded strictly and
converted first. Needs the classification environment (``bash tools/install.sh
--classification``).
"""
import os.path as osp
import sys

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

if __name__ == '__main__':
    # A checkout runs its own package even if another copy is installed.
    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)
    import mmseg_segman  # noqa: F401  (compat shims; registers the encoders in mmpretrain)
    from mmseg_segman.classification.tools import run_mmpretrain_tool

    run_mmpretrain_tool('test')
