# 4 GPUs x 4 images per GPU = 16 total, 160k iterations
# SegMAN-T on COCO-Stuff 164k, 512x512 crops: the recipe of segman-t_ade20k.py on the
# COCO-Stuff base (171 classes; 160k iterations as the official config).
_base_ = [
    '../_base_/models/segman.py', '../_base_/datasets/coco-stuff164k.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_160k.py'
]
checkpoint = 'pretrained/SegMAN_Encoder_t.pth.tar'  # ImageNet-1k, see segman-t_ade20k.py
crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(num_classes=171))
train_dataloader = dict(batch_size=4)
train_cfg = dict(val_interval=4000)
default_hooks = dict(checkpoint=dict(interval=4000))
total_batch_size = 16  # the recipe's total, checked by BatchSizeCheckHook
