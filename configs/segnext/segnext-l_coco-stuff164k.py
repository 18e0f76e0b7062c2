# 8 GPUs x 4 images per GPU = 32 total, 80k iterations
# SegNeXt-L on COCO-Stuff 164k: the recipe of segnext-t_coco-stuff164k.py with MSCAN-L,
# 1024 head channels, NMF rank 64, drop path 0.3 and 4 images per GPU (official).
_base_ = './segnext-t_coco-stuff164k.py'
checkpoint = 'pretrained/mscan_l.pth'  # ImageNet MSCAN-L, e.g. from
# https://download.openmmlab.com/mmsegmentation/v0.5/pretrain/segnext/mscan_l_20230227-cef260d4.pth
model = dict(
    backbone=dict(
        arch='l',
        drop_path_rate=0.3,
        init_cfg=dict(checkpoint=checkpoint)),
    decode_head=dict(
        in_channels=[128, 320, 512],
        channels=1024,
        ham_channels=1024,
        ham_kwargs=dict(MD_R=64)))
train_dataloader = dict(batch_size=4)
total_batch_size = 32  # the recipe's total, checked by BatchSizeCheckHook
