# 8 GPUs x 4 images per GPU = 32 total, 80k iterations
# LRFormer-S on COCO-Stuff 164k, 512x512 crops, 80k iterations (see lrformer-t_coco-
# stuff164k.py).
_base_ = './lrformer-t_coco-stuff164k.py'
checkpoint = 'pretrained/lrformer_small.pth'  # ImageNet-1k LRFormer-S, see the T config
model = dict(
    backbone=dict(
        arch='s',
        drop_path_rate=0.2,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(in_channels=[128, 320, 512], channels=384))
