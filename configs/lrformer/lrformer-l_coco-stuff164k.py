# 8 GPUs x 4 images per GPU = 32 total, 80k iterations
# LRFormer-L on COCO-Stuff 164k, 512x512 crops, 80k iterations (see lrformer-t_coco-
# stuff164k.py).
_base_ = './lrformer-t_coco-stuff164k.py'
checkpoint = 'pretrained/lrformer_large.pth'  # ImageNet-1k LRFormer-L, see the T config
model = dict(
    backbone=dict(
        arch='l',
        drop_path_rate=0.6,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(in_channels=[192, 480, 640], channels=640))
