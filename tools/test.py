"""Test a segmentor: MMSeg's ``tools/test.py`` with mmseg_segman loaded.

Same arguments as MMSeg's (``--work-dir``, ``--out``, ``--show``, ``--show-dir``,
``--tta``, ``--cfg-options``, ``--launcher``); see ``python tools/test.py -h``.

With the plugin loaded, CHECKPOINT (a path or an http(s) URL) is read weights-only, and
it must fit the model exactly (keys and shapes); ``--cfg-options strict_load=False``
evaluates with the matching weights only. Refused checkpoints and bad data files are
reported as one ``error:`` line naming the file (exit status 1).
"""
from _mmseg_tool import run_mmseg_tool

if __name__ == '__main__':
    run_mmseg_tool('test')
