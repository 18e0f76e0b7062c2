"""Train a segmentor: MMSeg's ``tools/train.py`` with mmseg_segman's pre-flight checks.

Same arguments as MMSeg's (``--work-dir``, ``--resume``, ``--amp``, ``--cfg-options``,
``--launcher``); see ``python tools/train.py -h``.

Before MMSeg's script runs, a missing config, pretrained file or dataset folder, a
misspelled registry ``type`` and ``--amp`` without a GPU are reported as one ``error:`` line
(exit status 1); with ``--launcher pytorch`` on a machine without CUDA the gloo process
group is started here. The configs' hooks do the rest (``configs/_base_/default_runtime.py``):
checkpoints are read weights-only and written atomically, ``--resume`` continues from the
newest checkpoint that loads and repeats the uninterrupted run exactly, and bad data files
are named.
"""
from _mmseg_tool import run_mmseg_tool

if __name__ == '__main__':
    run_mmseg_tool('train')
