# Template for your own dataset (docs/datasets.md, "Your own dataset"): images and masks in
# two folders, one mask per image with the same file stem. Copy this file, then edit the
# block below; everything after it follows from these values.
#
#   data/my_dataset/images/train/0001.jpg        data/my_dataset/annotations/train/0001.png
#   data/my_dataset/images/val/0101.jpg          data/my_dataset/annotations/val/0101.png
#
# A mask is a single-channel PNG (mode L or P, not RGB) whose pixel values are class
# indices 0..num_classes-1, and 255 where a pixel is not labelled (ignored by the loss and
# the mIoU). Label values outside that range stop loading with the file's name.
#
# Batch convention: `batch_size` is PER GPU (per process).

# ---- edit these ------------------------------------------------------------------------
data_root = 'data/my_dataset'
# One name and one RGB colour per class; num_classes = len(classes). The leaf config
# (configs/custom/segman-t_custom.py) passes num_classes to the decode head.
classes = ('background', 'object')
palette = [[0, 0, 0], [220, 20, 60]]
# True when mask value 0 means "unlabelled" (as in ADE20K): 0 becomes 255 (ignored) and
# every other value v becomes v - 1, so `classes` must then list the classes of values
# 1, 2, ... only.
reduce_zero_label = False
img_suffix = '.jpg'
seg_map_suffix = '.png'
train_prefix = dict(img_path='images/train', seg_map_path='annotations/train')
val_prefix = dict(img_path='images/val', seg_map_path='annotations/val')
# Training crops; images are first rescaled to about `scale` (long side, short side) times
# 0.5-2.0, and test images to `scale`. ADE20K uses (2048, 512) and 512x512 crops.
crop_size = (512, 512)
scale = (2048, 512)
# ------------------------------------------------------------------------------------------

dataset_type = 'BaseSegDataset'
num_classes = len(classes)
metainfo = dict(classes=classes, palette=palette)
train_pipeline = [
    dict(type='LoadCheckedImageFromFile'),
    # MMSeg's LoadAnnotations plus checks: a label value outside [0, num_classes) (other
    # than 255) or a mask whose size differs from its image is reported with the file.
    dict(type='LoadCheckedAnnotations'),
    dict(type='RandomResize', scale=scale, ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=scale, keep_ratio=True),
    # Loaded after Resize: the mIoU is computed at the masks' own resolution.
    dict(type='LoadCheckedAnnotations'),
    dict(type='PackSegInputs')
]
# Multi-scale + flip test (`tools/test.py --tta`) in the SegMAN/SegNeXt protocol of the
# paper datasets (MMSeg 0.x MultiScaleFlipAug, see ade20k.py): each ratio r rescales the
# image to fit inside (scale[0] * r, scale[1] * r), so ratio 1.0 is the single-scale test
# above; each scale is tested unflipped and flipped and the predictions averaged.
img_ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(
        type='TestTimeAug',
        transforms=[
            [
                dict(type='Resize', scale=(int(scale[0] * r), int(scale[1] * r)),
                     keep_ratio=True) for r in img_ratios
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
    batch_size=2,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=metainfo,
        img_suffix=img_suffix,
        seg_map_suffix=seg_map_suffix,
        reduce_zero_label=reduce_zero_label,
        data_prefix=train_prefix,
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        metainfo=metainfo,
        img_suffix=img_suffix,
        seg_map_suffix=seg_map_suffix,
        reduce_zero_label=reduce_zero_label,
        data_prefix=val_prefix,
        pipeline=test_pipeline))
test_dataloader = val_dataloader

val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
