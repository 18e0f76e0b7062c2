# COCO-Stuff 164k: 171 classes, 512x512 crops, same augmentation as ADE20K.
#
# Written out rather than inherited with `mmseg::_base_/...`: mmengine 0.10.7 resolves
# package-scoped bases through `pkg_resources`, which current setuptools no longer ships.
#
# Batch convention: `batch_size` is PER GPU (per process). The total batch differs between
# the papers' recipes (as on ADE20K: SegMAN 16, SegNeXt 64 / 32, LRFormer 32): each leaf
# config states it in its first line and sets `batch_size` and the BatchSizeCheckHook total
# to it; the 2 here is only a default.
dataset_type = 'COCOStuffDataset'
data_root = 'data/coco_stuff164k'
crop_size = (512, 512)
train_pipeline = [
    dict(type='LoadCheckedImageFromFile'),
    dict(type='LoadCheckedAnnotations'),
    dict(
        type='RandomResize',
        scale=(2048, 512),
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    # Then to the nearest multiples of 32 (SegMAN's AlignedResize, LRFormer's AlignResize,
    # SegNeXt's ResizeToMultiple: all three official test pipelines do this).
    dict(type='ResizeToMultiple', size_divisor=32),
    # Annotations are loaded after Resize: metrics are computed at the original resolution.
    dict(type='LoadCheckedAnnotations'),
    dict(type='PackSegInputs')
]
# Multi-scale + flip test (`tools/test.py --tta`), as the official SegMAN and SegNeXt
# repositories run it (MMSeg 0.x `MultiScaleFlipAug`, switched on by `--aug-test`; see
# ade20k.py for the test-time-aug and test.py files read):
#   yunxiangfu2001/SegMAN @ 9ced66a, segmentation/local_configs/_base_/datasets/
#     coco-stuff164k.py: img_scale=(2048, 512), Resize(keep_ratio=True) then
#     AlignedResize(keep_ratio=True, size_divisor=32) (the second rescale to the same
#     scale leaves the size unchanged, then aligns).
#   Visual-Attention-Network/SegNeXt @ c87bcae, local_configs/_base_/datasets/
#     coco-stuff164k.py: img_scale=(2048, 512), Resize(keep_ratio=True) then
#     ResizeToMultiple(size_divisor=32).
# So each ratio r rescales the image to fit inside (2048r, 512r) (long, short edge;
# mmcv.imrescale, as MMSeg 1.x's Resize(scale, keep_ratio=True)), then to multiples of 32;
# ratio 1.0 is the single-scale test above. LRFormer's configs override this with their
# official MMSeg 1.x form (the original image times r).
img_ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(
        type='TestTimeAug',
        transforms=[
            [
                dict(type='Resize', scale=(int(2048 * r), int(512 * r)), keep_ratio=True)
                for r in img_ratios
            ],
            [dict(type='ResizeToMultiple', size_divisor=32)],
            [
                dict(type='RandomFlip', prob=0., direction='horizontal'),
                dict(type='RandomFlip', prob=1., direction='horizontal')
            ],
            [dict(type='LoadCheckedAnnotations')],
            [dict(type='PackSegInputs')],
        ])
]
train_dataloader = dict(
    batch_size=2,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(
            img_path='images/train2017', seg_map_path='annotations/train2017'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(
            img_path='images/val2017', seg_map_path='annotations/val2017'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader

val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
