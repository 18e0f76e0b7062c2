# SegMAN-S on Cityscapes, 1024x1024 crops, 160k iterations, the official
# recipe: total batch 8 = 4 GPUs x 2 images, as the official scripts; with
# another GPU count, change train_dataloader.batch_size to keep that total.
# SyncBN, AdamW 6e-5 with 10x head lr, 1500-iteration warm-up then poly decay,
# drop path 0.2.
_base_ = [
    '../_base_/models/segman.py', '../_base_/datasets/cityscapes_1024x1024.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_160k.py'
]
custom_imports = dict(imports=['mmseg_segman'], allow_failed_imports=False)
# ImageNet-1k weights of the SegMAN-S encoder (SegMAN_Encoder_s.pth.tar, linked
# from the official README). Nothing is downloaded at run time: put the file at
# this path or pass --cfg-options
# model.backbone.init_cfg.checkpoint=/path/to/file.
checkpoint = 'checkpoints/SegMAN_Encoder_s.pth.tar'
crop_size = (1024, 1024)
data_preprocessor = dict(size=crop_size)
# The official S Cityscapes config uses 152 decoder channels (144 elsewhere).
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        arch='s',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(
        in_channels=[64, 144, 288, 512],
        channels=152,
        feat_proj_dim=288,
        num_classes=19),
    # Official: whole-image test for L, sliding 1024x1024 windows (stride 768)
    # for T/S/B.
    test_cfg=dict(mode='slide', crop_size=(1024, 1024), stride=(768, 768)))
train_dataloader = dict(batch_size=2)
train_cfg = dict(val_interval=4000)
default_hooks = dict(checkpoint=dict(interval=4000))
