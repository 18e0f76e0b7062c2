# LRFormer-T on Cityscapes, 1024x1024 crops, 160k iterations. The official repository has no
# Cityscapes config; this applies its ADE20K optimiser (see lrformer-t_ade20k.py) with the
# SegFormer Cityscapes protocol LRFormer follows: 8 GPUs x 1 image, sliding-window test
# with 1024x1024 windows at stride 768.
_base_ = [
    '../_base_/models/lrformer.py', '../_base_/datasets/cityscapes_1024x1024.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_160k.py'
]
custom_imports = dict(imports=['mmseg_segman'], allow_failed_imports=False)
# ImageNet-1k LRFormer-T weights in the official format (e.g. lrformer_tiny.pth from
# https://huggingface.co/yuhuan-wu/LRFormer-Models). Placeholder: put the file here or set
# the path; nothing is downloaded at run time, and a missing file stops training.
checkpoint = 'pretrained/lrformer_tiny.pth'
crop_size = (1024, 1024)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        arch='t',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(in_channels=[96, 240, 384], channels=256, num_classes=19),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(768, 768)))
train_dataloader = dict(batch_size=1)
optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))
