"""Train a segmentor: MMSeg's ``tools/train.py`` with mmseg_segman loaded.

Same arguments as MMSeg's (``--work-dir``, ``--resume``, ``--amp``, ``--cfg-options``,
``--launcher``); see ``python tools/train.py -h``.

With the plugin loaded, checkpoints are written atomically, ``--resume`` continues from the
newest checkpoint that loads (with a warning if ``last_checkpoint`` names a damaged one),
and, with ``RandomStateHook`` in ``custom_hooks`` (default_runtime), repeats the
uninterrupted run exactly. Bad data files are reported as one ``error:`` line naming the
file (exit status 1).
"""
from _mmseg_tool import run_mmseg_tool

if __name__ == '__main__':
    run_mmseg_tool('train')
