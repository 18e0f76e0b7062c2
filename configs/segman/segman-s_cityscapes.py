# 4 GPUs x 2 images per GPU = 8 total, 160k iterations
# SegMAN-S on Cityscapes: the recipe of segman-t_cityscapes.py with the SegMAN-S encoder
# and decoder widths and drop path 0.2 (official training script). The official S
# Cityscapes config uses 152 decoder channels (144 elsewhere).
_base_ = './segman-t_cityscapes.py'
checkpoint = 'pretrained/SegMAN_Encoder_s.pth.tar'  # ImageNet-1k, see segman-t_ade20k.py
model = dict(
    backbone=dict(
        arch='s',
        drop_path_rate=0.2,
        init_cfg=dict(checkpoint=checkpoint)),
    decode_head=dict(in_channels=[64, 144, 288, 512], channels=152, feat_proj_dim=288))
