# 4 GPUs x 4 images per GPU = 16 total, 160k iterations
# SegMAN-T on ADE20K, 512x512 crops: the official recipe (yunxiangfu2001/SegMAN configs and
# training scripts): SyncBN, AdamW 6e-5 with 10x head lr, 1500-iteration warm-up then poly
# decay, drop path 0.0. With another GPU count change train_dataloader.batch_size so that
# the total stays 16; a warning at training start says when it does not. The model base
# (configs/_base_/models/segman.py) holds the T encoder and decoder settings.
_base_ = [
    '../_base_/models/segman.py', '../_base_/datasets/ade20k.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_160k.py'
]
# ImageNet-1k weights of the SegMAN-T encoder (SegMAN_Encoder_t.pth.tar, linked from the
# official README). Nothing is downloaded at run time: put the file at this path or pass
# --cfg-options model.backbone.init_cfg.checkpoint=/path/to/file.
checkpoint = 'pretrained/SegMAN_Encoder_t.pth.tar'
crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=checkpoint)))
train_dataloader = dict(batch_size=4)
train_cfg = dict(val_interval=8000)
default_hooks = dict(checkpoint=dict(interval=8000))
total_batch_size = 16  # the recipe's total, checked by BatchSizeCheckHook
