# SegNeXt-T on Cityscapes, 1024x1024 crops, 160k iters, official recipe
# (8 GPUs x 4 images, SyncBN, AdamW 6e-5, poly decay, eval every 8k iters).
_base_ = [
    '../_base_/models/segnext.py',
    '../_base_/datasets/cityscapes_1024x1024.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_160k.py',
]
custom_imports = dict(imports=['mmseg_segman'], allow_failed_imports=False)
# ImageNet MSCAN-T weights (MMSeg's converted file or the official one: both key
# formats load). Nothing is downloaded at run time: put the file here, e.g. from
# https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segnext/mscan_t_20230227-119e8c9f.pth
# or pass --cfg-options model.backbone.init_cfg.checkpoint=/path/to/file.
checkpoint = 'pretrained/mscan_t.pth'
crop_size = (1024, 1024)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        arch='t',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(
        in_channels=[64, 160, 256],
        channels=256,
        ham_channels=256,
        ham_kwargs=dict(MD_R=16),
        num_classes=19),
    test_cfg=dict(mode='slide', crop_size=(1024, 1024), stride=(768, 768)))
train_dataloader = dict(batch_size=4)
train_cfg = dict(val_interval=8000)
default_hooks = dict(checkpoint=dict(interval=8000))
