# LRFormer-T on COCO-Stuff 164k, 512x512 crops, 80k iterations. The official repository has
# no COCO-Stuff config; this applies its ADE20K recipe (see lrformer-t_ade20k.py) with the
# 80k schedule SegFormer, whose protocol LRFormer follows, uses for COCO-Stuff.
_base_ = [
    '../_base_/models/lrformer.py', '../_base_/datasets/coco-stuff164k.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_80k.py'
]
custom_imports = dict(imports=['mmseg_segman'], allow_failed_imports=False)
# ImageNet-1k LRFormer-T weights in the official format (e.g. lrformer_tiny.pth from
# https://huggingface.co/yuhuan-wu/LRFormer-Models). Placeholder: put the file here or set
# the path; nothing is downloaded at run time, and a missing file stops training.
checkpoint = 'pretrained/lrformer_tiny.pth'
crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        arch='t',
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    decode_head=dict(in_channels=[96, 240, 384], channels=256, num_classes=171))
train_dataloader = dict(batch_size=4)
optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))
