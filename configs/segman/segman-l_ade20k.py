# 4 GPUs x 4 images per GPU = 16 total, 160k iterations
# SegMAN-L on ADE20K: the recipe of segman-t_ade20k.py with the SegMAN-L encoder and
# decoder widths and drop path 0.3. The official release has no SegMAN-L training script:
# this drop path is our choice (B uses 0.25 ADE / 0.25 Cityscapes / 0.20 COCO and L is
# deeper), not validated by a training run.
_base_ = './segman-t_ade20k.py'
checkpoint = 'pretrained/SegMAN_Encoder_l.pth.tar'  # ImageNet-1k, see segman-t_ade20k.py
model = dict(
    backbone=dict(
        arch='l',
        drop_path_rate=0.3,
        init_cfg=dict(checkpoint=checkpoint)),
    decode_head=dict(in_channels=[96, 192, 432, 640], channels=224, feat_proj_dim=432))
