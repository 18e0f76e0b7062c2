# 8 GPUs x 1 image per GPU = 8 total, 160k iterations
# LRFormer-B on Cityscapes, 1024x1024 crops, 160k iterations (see lrformer-t_cityscapes.py).
_base_ = './lrformer-t_cityscapes.py'
checkpoint = 'pretrained/lrformer_base.pth'  # ImageNet-1k LRFormer-B, see the T config
model = dict(
    backbone=dict(
        arch='b',
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(in_channels=[160, 400, 512], channels=512))
