"""Evaluate an ImageNet classifier: mmpretrain's ``tools/test.py`` with mmseg_segman loaded.

Same arguments as mmpretrain's (``--work-dir``, ``--out``, ``--cfg-options``, ``--launcher``,
...); see ``python tools/test_cls.py -h``. CHECKPOINT may be an mmpretrain checkpoint or the
authors' ImageNet file (e.g. ``SegMAN_Encoder_t.pth.tar``), which is loaded strictly and
converted first. Needs the classification environment (``bash tools/install.sh
--classification``).
"""


if __name__ == '__main__':
    from _mmseg_tool import _load_shims

    # mmpretrain 1.2 imports mainline mmseg/mmcv: with mmcv-lite it needs the mmcv._ext
    # stand-in (one line says so; nothing on full mmcv).
    _load_shims().apply_needed_shims()
    import mmseg_segman  # noqa: F401  (registers the encoders in mmpretrain)
    from mmseg_segman.classification.tools import run_mmpretrain_tool

    run_mmpretrain_tool('test')
