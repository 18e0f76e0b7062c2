# 4 GPUs x 2 images per GPU = 8 total, 160k iterations
# SegMAN-L on Cityscapes: the recipe of segman-t_cityscapes.py with the SegMAN-L encoder
# and decoder widths and drop path 0.3. The official release has no SegMAN-L training
# script: this drop path is our choice (B uses 0.25 ADE / 0.25 Cityscapes / 0.20 COCO and
# L is deeper), not validated by a training run. Whole-image test, as the official L
# Cityscapes config (T/S/B slide).
_base_ = './segman-t_cityscapes.py'
checkpoint = 'pretrained/SegMAN_Encoder_l.pth.tar'  # ImageNet-1k, see segman-t_ade20k.py
model = dict(
    backbone=dict(
        arch='l',
        drop_path_rate=0.3,
        init_cfg=dict(checkpoint=checkpoint)),
    decode_head=dict(in_channels=[96, 192, 432, 640], channels=224, feat_proj_dim=432),
    test_cfg=dict(_delete_=True, mode='whole'))
