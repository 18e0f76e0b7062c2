# 8 GPUs x 1 image per GPU = 8 total, 160k iterations
# LRFormer-T on Cityscapes, 1024x1024 crops. The official repository has no Cityscapes config;
# this applies its ADE20K optimiser (see lrformer-t_ade20k.py) with the SegFormer Cityscapes
# protocol LRFormer follows: 8 GPUs x 1 image, sliding-window test with 1024x1024 windows at
# stride 768.
_base_ = [
    '../_base_/models/lrformer.py', '../_base_/datasets/cityscapes_1024x1024.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_160k.py'
]
checkpoint = 'pretrained/lrformer_tiny.pth'  # ImageNet-1k, see lrformer-t_ade20k.py
crop_size = (1024, 1024)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(num_classes=19),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(768, 768)))
train_dataloader = dict(batch_size=1)
optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))
total_batch_size = 8  # the recipe's total, checked by BatchSizeCheckHook
# Multi-scale + flip test (`--tta`) in LRFormer's official MMSeg 1.x form (yuhuan-wu/LRFormer
# @ 59f2764, configs_local/_base_/datasets/cityscapes.py, tta_pipeline): each ratio scales
# the original image (Resize scale_factor=r), no alignment to 32; the S/B/L configs inherit
# it. It replaces the dataset base's SegMAN/SegNeXt protocol (rescale to fit (2048r, ...)).
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(
        type='TestTimeAug',
        transforms=[
            [
                dict(type='Resize', scale_factor=r, keep_ratio=True)
                for r in [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
            ],
            [
                dict(type='RandomFlip', prob=0., direction='horizontal'),
                dict(type='RandomFlip', prob=1., direction='horizontal')
            ],
            [dict(type='LoadCheckedAnnotations')],
            [dict(type='PackSegInputs')],
        ])
]
