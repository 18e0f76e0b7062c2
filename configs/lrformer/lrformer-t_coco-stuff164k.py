# 8 GPUs x 4 images per GPU = 32 total, 80k iterations
# LRFormer-T on COCO-Stuff 164k, 512x512 crops. The official repository has no COCO-Stuff
# config; this applies its ADE20K recipe (see lrformer-t_ade20k.py) with the 80k schedule
# SegFormer, whose protocol LRFormer follows, uses for COCO-Stuff.
_base_ = [
    '../_base_/models/lrformer.py', '../_base_/datasets/coco-stuff164k.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_80k.py'
]
checkpoint = 'pretrained/lrformer_tiny.pth'  # ImageNet-1k, see lrformer-t_ade20k.py
crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(num_classes=171))
train_dataloader = dict(batch_size=4)
optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))
total_batch_size = 32  # the recipe's total, checked by BatchSizeCheckHook
# Multi-scale + flip test (`--tta`) in LRFormer's official MMSeg 1.x form (yuhuan-wu/LRFormer
# @ 59f2764, configs_local/_base_/datasets/coco-stuff164k.py, tta_pipeline): each ratio scales
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
