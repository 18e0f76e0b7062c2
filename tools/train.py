"""Train a segmentor: MMSeg's ``tools/train.py`` with mmseg_segman loaded.

Same arguments as MMSeg's (``--work-dir``, ``--resume``, ``--amp``, ``--cfg-options``,
``--launcher``); see ``python tools/train.py -h``.
"""
from _mmseg_tool import run_mmseg_tool

if __name__ == '__main__':
    run_mmseg_tool('train')
