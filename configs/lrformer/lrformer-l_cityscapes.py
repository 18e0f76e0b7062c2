# 8 GPUs x 1 image per GPU = 8 total, 160k iterations
# LRFormer-L on Cityscapes, 1024x1024 crops, 160k iterations (see lrformer-t_cityscapes.py).
_base_ = './lrformer-t_cityscapes.py'
checkpoint = 'pretrained/lrformer_large.pth'  # ImageNet-1k LRFormer-L, see the T config
model = dict(
    backbone=dict(
        arch='l',
        drop_path_rate=0.6,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(in_channels=[192, 480, 640], channels=640))
