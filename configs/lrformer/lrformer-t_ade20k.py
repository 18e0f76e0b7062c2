# 8 GPUs x 4 images per GPU = 32 total, 160k iterations
# LRFormer-T on ADE20K, 512x512 crops: the official recipe (yuhuan-wu/LRFormer
# configs_local/lrformer/lrformer-t-160k_ade20k.py): AdamW 6e-5, weight decay 0.01 (none on
# norms), head lr x10, gradient clipping at 35, 1500-iteration warm-up then linear decay;
# test images resized to multiples of 32. The model base (configs/_base_/models/lrformer.py)
# holds the T settings.
_base_ = [
    '../_base_/models/lrformer.py', '../_base_/datasets/ade20k.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_160k.py'
]
# ImageNet-1k LRFormer-T weights in the official format (e.g. lrformer_tiny.pth from
# https://huggingface.co/yuhuan-wu/LRFormer-Models). Nothing is downloaded at run time:
# put the file here or set the path; a missing file stops training.
checkpoint = 'pretrained/lrformer_tiny.pth'
crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=checkpoint)))
train_dataloader = dict(batch_size=4)
optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))
total_batch_size = 32  # the recipe's total, checked by BatchSizeCheckHook
# Multi-scale + flip test (`--tta`) in LRFormer's official MMSeg 1.x form (yuhuan-wu/LRFormer
# @ 59f2764, configs_local/_base_/datasets/ade20k.py, tta_pipeline): each ratio scales
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
            [dict(type='LoadCheckedAnnotations', reduce_zero_label=True)],
            [dict(type='PackSegInputs')],
        ])
]
