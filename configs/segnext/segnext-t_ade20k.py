# 8 GPUs x 8 images per GPU = 64 total, 160k iterations
# SegNeXt-T (MSCAN-T + light Hamburger head) on ADE20K, 512x512 crops: the official recipe
# (Visual-Attention-Network/SegNeXt local_configs: SyncBN, AdamW 6e-5 with 10x head lr,
# 1500-iteration warm-up then poly decay, eval every 8k iterations). The model base
# (configs/_base_/models/segnext.py) holds the T settings.
_base_ = [
    '../_base_/models/segnext.py', '../_base_/datasets/ade20k.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_160k.py'
]
# ImageNet MSCAN-T weights (MMSeg's converted file or the official one: both key
# formats load). Nothing is downloaded at run time: put the file here, e.g. from
# https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segnext/mscan_t_20230227-119e8c9f.pth
# or pass --cfg-options model.backbone.init_cfg.checkpoint=/path/to/file.
checkpoint = 'pretrained/mscan_t.pth'
crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=checkpoint)))
train_dataloader = dict(batch_size=8)
train_cfg = dict(val_interval=8000)
default_hooks = dict(checkpoint=dict(interval=8000))
total_batch_size = 64  # the recipe's total, checked by BatchSizeCheckHook
