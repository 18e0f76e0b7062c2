# 8 GPUs x 4 images per GPU = 32 total, 160k iterations
# SegNeXt-S on Cityscapes: the recipe of segnext-t_cityscapes.py with MSCAN-S (official).
_base_ = './segnext-t_cityscapes.py'
checkpoint = 'pretrained/mscan_s.pth'  # ImageNet MSCAN-S, e.g. from
# https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segnext/mscan_s_20230227-f33ccdf2.pth
model = dict(
    backbone=dict(
        arch='s',
        init_cfg=dict(checkpoint=checkpoint)),
    decode_head=dict(
        in_channels=[128, 320, 512]))
