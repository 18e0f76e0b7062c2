# LRFormer-T on ADE20K, 512x512 crops, 160k iterations: the official recipe
# (yuhuan-wu/LRFormer configs_local/lrformer/lrformer-t-160k_ade20k.py): 8 GPUs x 4 images,
# AdamW 6e-5, weight decay 0.01 (none on norms), head lr x10, gradient clipping at 35,
# 1500-iteration warm-up then linear decay; test images resized to multiples of 32.
_base_ = [
    '../_base_/models/lrformer.py', '../_base_/datasets/ade20k.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_160k.py'
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
    decode_head=dict(in_channels=[96, 240, 384], channels=256, num_classes=150))
train_dataloader = dict(batch_size=4)
optim_wrapper = dict(clip_grad=dict(max_norm=35, norm_type=2))
