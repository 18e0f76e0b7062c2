# 8 GPUs x 8 images per GPU = 64 total, 80k iterations
# SegNeXt-T on COCO-Stuff 164k, 512x512 crops: the recipe of segnext-t_ade20k.py on the
# COCO-Stuff base with the official 80k schedule.
_base_ = [
    '../_base_/models/segnext.py', '../_base_/datasets/coco-stuff164k.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_80k.py'
]
checkpoint = 'pretrained/mscan_t.pth'  # ImageNet MSCAN-T, see segnext-t_ade20k.py
crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(num_classes=171))
train_dataloader = dict(batch_size=8)
train_cfg = dict(val_interval=8000)
default_hooks = dict(checkpoint=dict(interval=8000))
total_batch_size = 64  # the recipe's total, checked by BatchSizeCheckHook
