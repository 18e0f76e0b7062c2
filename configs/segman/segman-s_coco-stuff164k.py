# 4 GPUs x 4 images per GPU = 16 total, 160k iterations
# SegMAN-S on COCO-Stuff 164k: the recipe of segman-t_coco-stuff164k.py with the SegMAN-S
# encoder and decoder widths and drop path 0.2 (official training script).
_base_ = './segman-t_coco-stuff164k.py'
checkpoint = 'pretrained/SegMAN_Encoder_s.pth.tar'  # ImageNet-1k, see segman-t_ade20k.py
model = dict(
    backbone=dict(
        arch='s',
        drop_path_rate=0.2,
        init_cfg=dict(checkpoint=checkpoint)),
    decode_head=dict(in_channels=[64, 144, 288, 512], channels=144, feat_proj_dim=288))
