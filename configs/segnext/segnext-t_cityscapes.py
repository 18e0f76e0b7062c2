# 8 GPUs x 4 images per GPU = 32 total, 160k iterations
# SegNeXt-T on Cityscapes, 1024x1024 crops: the recipe of segnext-t_ade20k.py on the
# Cityscapes base, tested with sliding 1024x1024 windows at stride 768 (official).
_base_ = [
    '../_base_/models/segnext.py', '../_base_/datasets/cityscapes_1024x1024.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_160k.py'
]
checkpoint = 'pretrained/mscan_t.pth'  # ImageNet MSCAN-T, see segnext-t_ade20k.py
crop_size = (1024, 1024)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(num_classes=19),
    test_cfg=dict(mode='slide', crop_size=(1024, 1024), stride=(768, 768)))
train_dataloader = dict(batch_size=4)
train_cfg = dict(val_interval=8000)
default_hooks = dict(checkpoint=dict(interval=8000))
total_batch_size = 32  # the recipe's total, checked by BatchSizeCheckHook
