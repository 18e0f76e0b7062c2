"""Test a segmentor: MMSeg's ``tools/test.py`` with mmseg_segman loaded.

Same arguments as MMSeg's (``--work-dir``, ``--out``, ``--show``, ``--show-dir``,
``--tta``, ``--cfg-options``, ``--launcher``); see ``python tools/test.py -h``.
"""
from _mmseg_tool import run_mmseg_tool

if __name__ == '__main__':
    run_mmseg_tool('test')
