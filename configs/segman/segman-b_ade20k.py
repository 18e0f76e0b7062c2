# 4 GPUs x 4 images per GPU = 16 total, 160k iterations
# SegMAN-B on ADE20K: the recipe of segman-t_ade20k.py with the SegMAN-B encoder and
# decoder widths and drop path 0.25 (official training script).
_base_ = './segman-t_ade20k.py'
checkpoint = 'pretrained/SegMAN_Encoder_b.pth.tar'  # ImageNet-1k, see segman-t_ade20k.py
model = dict(
    backbone=dict(
        arch='b',
        drop_path_rate=0.25,
        init_cfg=dict(checkpoint=checkpoint)),
    decode_head=dict(in_channels=[96, 160, 364, 560], channels=180, feat_proj_dim=320))
