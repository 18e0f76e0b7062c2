# Cityscapes: 19 classes, 1024x1024 crops from images rescaled around (2048, 1024).
#
# Written out rather than inherited with `mmseg::_base_/...`: mmengine 0.10.7 resolves
# package-scoped bases through `pkg_resources`, which current setuptools no longer ships.
#
# Batch convention: `batch_size` is PER GPU (per process). The total batch differs between
# the papers' recipes (SegMAN 4 GPUs x 2 = 8, SegNeXt 8 x 4 = 32 for T/S and 8 x 2 = 16 for
# B/L, LRFormer 8 x 1 = 8): each leaf config states it in its first line and sets
# `batch_size` and the BatchSizeCheckHook total to it; the 1 here is only a default. The
# papers test T/S/B models with sliding windows (crop 1024, stride 768): that is a model
# `test_cfg`, set by family configs.
dataset_type = 'CityscapesDataset'
data_root = 'data/cityscapes/'
crop_size = (1024, 1024)
train_pipeline = [
    dict(type='LoadCheckedImageFromFile'),
    dict(type='LoadCheckedAnnotations'),
    dict(
        type='RandomResize',
        scale=(2048, 1024),
        ratio_range=(0.5, 2.0),
        keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 1024), keep_ratio=True),
    # Annotations are loaded after Resize: metrics are computed at the original resolution.
    dict(type='LoadCheckedAnnotations'),
    dict(type='PackSegInputs')
]
# Multi-scale + flip test (`tools/test.py --tta`), as the official SegMAN and SegNeXt
# repositories run it (MMSeg 0.x `MultiScaleFlipAug`, switched on by `--aug-test`):
#   yunxiangfu2001/SegMAN @ 9ced66a, segmentation/local_configs/_base_/datasets/
#     cityscapes_1024x1024_repeat.py, and Visual-Attention-Network/SegNeXt @ c87bcae,
#     local_configs/_base_/datasets/cityscapes_1024x1024_repeat.py: both
#     img_scale=(2048, 1024), Resize(keep_ratio=True), no alignment to 32; --aug-test in
#     each tools/test.py sets the six ratios below and flip=True, and MultiScaleFlipAug
#     (mmseg/datasets/pipelines/test_time_aug.py in each) makes each ratio's scale
#     (int(2048 * r), int(1024 * r)).
# So each ratio r rescales the image to fit inside (2048r, 1024r) (long, short edge;
# mmcv.imrescale, as MMSeg 1.x's Resize(scale, keep_ratio=True)); ratio 1.0 is the
# single-scale test above; the model's test_cfg (sliding windows where a config sets
# them) runs on every branch. LRFormer's configs override this with their official
# MMSeg 1.x form (the original image times r).
img_ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(
        type='TestTimeAug',
        transforms=[
            [
                dict(type='Resize', scale=(int(2048 * r), int(1024 * r)), keep_ratio=True)
                for r in img_ratios
            ],
            [
                dict(type='RandomFlip', prob=0., direction='horizontal'),
                dict(type='RandomFlip', prob=1., direction='horizontal')
            ],
            [dict(type='LoadCheckedAnnotations')],
            [dict(type='PackSegInputs')],
        ])
]
train_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(
            img_path='leftImg8bit/train', seg_map_path='gtFine/train'),
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
            img_path='leftImg8bit/val', seg_map_path='gtFine/val'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader

val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
