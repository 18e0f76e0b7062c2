"""Convert an official segman checkpoint to the MMSeg 1.x / mmseg_segman layout.

    python tools/model_converters/segman2mmseg.py SRC DST [--arch VARIANT]

See :mod:`mmseg_segman.utils.convert` for what is renamed and dropped.
"""
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmseg_segman.utils.convert import main  # noqa: E402

if __name__ == '__main__':
    main('segman')
