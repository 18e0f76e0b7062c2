# SegMAN-B on ADE20K, 512x512 crops, 160k iterations, the official recipe:
# total batch 16 = 4 GPUs x 4 images, as the official scripts; with another GPU
# count, change train_dataloader.batch_size to keep that total. SyncBN, AdamW
# 6e-5 with 10x head lr, 1500-iteration warm-up then poly decay, drop path
# 0.25.
_base_ = [
    '../_base_/models/segman.py', '../_base_/datasets/ade20k.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_160k.py'
]
custom_imports = dict(imports=['mmseg_segman'], allow_failed_imports=False)
# ImageNet-1k weights of the SegMAN-B encoder (SegMAN_Encoder_b.pth.tar, linked
# from the official README). Nothing is downloaded at run time: put the file at
# this path or pass --cfg-options
# model.backbone.init_cfg.checkpoint=/path/to/file.
checkpoint = 'checkpoints/SegMAN_Encoder_b.pth.tar'
crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        arch='b',
        drop_path_rate=0.25,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(
        in_channels=[96, 160, 364, 560],
        channels=180,
        feat_proj_dim=320,
        num_classes=150),
    test_cfg=dict(mode='whole'))
train_dataloader = dict(batch_size=4)
train_cfg = dict(val_interval=8000)
default_hooks = dict(checkpoint=dict(interval=8000))
