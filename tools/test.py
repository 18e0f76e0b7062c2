"""Test a segmentor: MMSeg's ``tools/test.py`` with mmseg_segman's pre-flight checks.

Same arguments as MMSeg's (``--work-dir``, ``--out``, ``--show``, ``--show-dir``,
``--tta``, ``--cfg-options``, ``--launcher``); see ``python tools/test.py -h``.

A missing config or checkpoint, a misspelled registry ``type``, ``--tta`` on a config
without ``tta_pipeline`` and a missing dataset folder are reported as one ``error:`` line
before anything is built. CHECKPOINT (a path or an http(s) URL) is read weights-only, and
with the configs' ``CheckpointGuardHook`` it must fit the model exactly (keys and shapes);
``--cfg-options strict_load=False`` evaluates with the matching weights only.
"""
from _mmseg_tool import run_mmseg_tool

if __name__ == '__main__':
    run_mmseg_tool('test')
