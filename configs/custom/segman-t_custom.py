# 1 GPU x 8 images per GPU = 8 total, 80k iterations (a starting point, not a paper recipe)
# SegMAN-T on your own dataset (docs/datasets.md, "Your own dataset"): the ADE20K recipe
# (AdamW 6e-5 with 10x head lr, warm-up then poly decay) on the folders, classes and
# palette of configs/_base_/datasets/custom_dataset.py. Copy that file, edit its first
# block, and point the second `_base_` entry below at your copy. (This folder, not
# configs/segman/, because configs/<family>/ hold the papers' recipes only.)
_base_ = [
    '../_base_/models/segman.py', '../_base_/datasets/custom_dataset.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_80k.py'
]
# ImageNet-1k weights of the SegMAN-T encoder (SegMAN_Encoder_t.pth.tar, linked from the
# official README); nothing is downloaded at run time. To fine-tune a whole segmentor
# trained on another dataset instead, set `load_from` to its checkpoint: the decode
# head's last layer then has another class count and is left at its initialisation
# (mmengine warns about the size mismatch and loads the rest).
checkpoint = 'pretrained/SegMAN_Encoder_t.pth.tar'
crop_size = {{_base_.crop_size}}
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(num_classes={{_base_.num_classes}}))
train_dataloader = dict(batch_size=8)
# A shorter run: copy schedule_80k.py and change both 80000s (max_iters and PolyLR end).
train_cfg = dict(val_interval=8000)
default_hooks = dict(checkpoint=dict(interval=8000))
