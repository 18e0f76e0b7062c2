# LRFormer encoder ImageNet-1k recipe. yuhuan-wu/LRFormer (commit 59f2764) publishes ImageNet
# weights but no classification code or recipe; its encoder grows out of P2T by the same first
# author (yuhuan-wu/P2T: the same pooled-attention blocks with shared d_convs, IRB and nn.Linear
# head on the mean of the last stage), so this follows P2T's published recipe (main.py defaults
# and README, commit acd5e64, DeiT-style): 8 GPUs x 128, lr 5e-4 x total batch / 512 (always
# applied), AdamW weight decay 0.05, cosine, 20 warm-up epochs from 1e-6, min lr 1e-5, 300
# epochs, repeated augmentation (3 repeats), RandAugment m9, mixup 0.8, cutmix 1.0, label
# smoothing 0.1, random erasing 0.25, no EMA, no gradient clipping. Leaves set the variant.
_base_ = ['./imagenet_224.py', 'mmpretrain::_base_/default_runtime.py']
custom_imports = dict(imports=['mmseg_segman'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='LRFormer',
        arch='t',
        drop_path_rate=0.1,
        out_indices=(3, ),
        norm_cfg=dict(type='BN', requires_grad=True),
        init_cfg=None),
    neck=None,
    # The spatial mean of the last stage, then nn.Linear -> keys head.{weight,bias}.
    head=dict(
        type='PooledLinearClsHead',
        num_classes=1000,
        in_channels=384,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        topk=(1, 5)),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]))

# DeiT's linear rule, lr = 5e-4 x total batch / 512 (1e-3 at 8 x 128), applied by mmengine.
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=5e-4, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0))
auto_scale_lr = dict(base_batch_size=512, enable=True)

# Per-epoch steps as timm's: warm-up from 1e-6 (factor 1e-3 of 1e-3) over 20 epochs, cosine to
# 1e-5 at epoch 300 (DeiT's loop stops at --epochs; no cool-down epochs).
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=20),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=20, end=300),
]
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
val_cfg = dict()
test_cfg = dict()

# --repeated-aug (default on): every image three times per epoch on different GPUs.
train_dataloader = dict(sampler=dict(type='RepeatAugSampler', num_repeats=3, shuffle=True))
# DeiT's evaluation: short side int(256 / 224 * 224) = 256, bicubic, centre 224x224.
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=256, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
