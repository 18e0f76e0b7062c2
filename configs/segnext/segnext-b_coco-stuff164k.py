# 8 GPUs x 4 images per GPU = 32 total, 80k iterations
# SegNeXt-B on COCO-Stuff 164k: the recipe of segnext-t_coco-stuff164k.py with MSCAN-B,
# 512 head channels, NMF rank 64 and 4 images per GPU (official).
_base_ = './segnext-t_coco-stuff164k.py'
checkpoint = 'pretrained/mscan_b.pth'  # ImageNet MSCAN-B, e.g. from
# https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segnext/mscan_b_20230227-3ab7d230.pth
model = dict(
    backbone=dict(
        arch='b',
        init_cfg=dict(checkpoint=checkpoint)),
    decode_head=dict(
        in_channels=[128, 320, 512],
        channels=512,
        ham_channels=512,
        ham_kwargs=dict(MD_R=64)))
train_dataloader = dict(batch_size=4)
total_batch_size = 32  # the recipe's total, checked by BatchSizeCheckHook
