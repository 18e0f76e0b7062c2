# 4 GPUs x 2 images per GPU = 8 total, 160k iterations
# SegMAN-T on Cityscapes, 1024x1024 crops: the recipe of segman-t_ade20k.py on the
# Cityscapes base, tested with sliding 1024x1024 windows at stride 768 as the official
# T/S/B configs. num_classes is 19 (the official T Cityscapes config has 150, a defect).
_base_ = [
    '../_base_/models/segman.py', '../_base_/datasets/cityscapes_1024x1024.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_160k.py'
]
checkpoint = 'pretrained/SegMAN_Encoder_t.pth.tar'  # ImageNet-1k, see segman-t_ade20k.py
crop_size = (1024, 1024)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(num_classes=19),
    test_cfg=dict(mode='slide', crop_size=(1024, 1024), stride=(768, 768)))
train_dataloader = dict(batch_size=2)
train_cfg = dict(val_interval=4000)
default_hooks = dict(checkpoint=dict(interval=4000))
total_batch_size = 8  # the recipe's total, checked by BatchSizeCheckHook
