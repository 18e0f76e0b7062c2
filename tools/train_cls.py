"""Train an ImageNet classifier of a plugin encoder: mmpretrain's ``tools/train.py`` with
mmseg_segman loaded (``configs/imagenet/*.py``).

Same arguments as mmpretrain's (``--work-dir``, ``--resume``, ``--amp``, ``--auto-scale-lr``,
``--cfg-options``, ``--launcher``); see ``python tools/train_cls.py -h``. Needs the
classification environment (``bash tools/install.sh --classification``, then
``.venv-cls/bin/python tools/train_cls.py ...``).
"""


if __name__ == '__main__':
    from _mmseg_tool import _load_shims

    # mmpretrain 1.2 imports mainline mmseg/mmcv: with mmcv-lite it needs the mmcv._ext
    # stand-in (one line says so; nothing on full mmcv).
    _load_shims().apply_needed_shims()
    import mmseg_segman  # noqa: F401  (registers the encoders in mmpretrain)
    from mmseg_segman.classification.tools import run_mmpretrain_tool

    run_mmpretrain_tool('train')
