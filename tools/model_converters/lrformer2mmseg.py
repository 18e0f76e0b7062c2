"""Convert an official lrformer checkpoint to the MMSeg 1.x / mmseg_segman layout.

    python tools/model_converters/lrformer2mmseg.py SRC DST [--arch VARIANT]

See :mod:`mmseg_segman.converters` for what is renamed and dropped.
"""


from mmseg_segman.converters import main

if __name__ == '__main__':
    main('lrformer')
