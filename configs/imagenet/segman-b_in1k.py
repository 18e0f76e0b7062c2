# 8 GPUs x 256 images per GPU = 2048 total, 310 epochs (300 + 10 cool-down)
# SegMAN encoder B on ImageNet-1k, scripts/train_base.sh of yunxiangfu2001/SegMAN:
# --batch-size 256 --drop-path 0.3 --amp (pass --amp to tools/train_cls.py on GPUs); lr 2e-3
# by --auto-lr; reported top-1 85.1 (README). Evaluation crop_pct 0.95 (SegMANEncoder_b
# default cfg): short side floor(224 / 0.95) = 235.
_base_ = ['./_base_/segman_in1k.py']
model = dict(backbone=dict(arch='b', drop_path_rate=0.3), head=dict(in_channels=560))
train_dataloader = dict(batch_size=256)
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=235, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
