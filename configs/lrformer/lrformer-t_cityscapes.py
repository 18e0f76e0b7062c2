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
