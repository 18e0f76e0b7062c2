# MSCAN (SegNeXt encoder) ImageNet-1k recipe. SegNeXt's authors pretrain MSCAN with VAN's
# classification code (Visual-Attention-Network/SegNeXt issue #33); MSCAN-T/S/B/L have the
# depths of VAN-B0/B1/B2/B3. From Visual-Attention-Network/VAN-Classification (commit e19779b):
# train.sh / README (8 GPUs x 128, --lr 1e-3, drop path 0.1/0.1/0.1/0.2 for T/S/B/L) and the
# defaults of its timm train.py (AdamW, weight decay 0.05, cosine, 5 warm-up epochs from 1e-6,
# min lr 1e-6, 10 cool-down epochs, RandAugment m9, mixup 0.8, cutmix 1.0, label smoothing
# 0.1, random erasing 0.25; no EMA, no gradient clipping, no SyncBN). Leaves set the variant.
_base_ = ['./imagenet_224.py', 'mmpretrain::_base_/default_runtime.py']
custom_imports = dict(imports=['mmseg_segman'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='SegNeXtMSCAN',
        arch='t',
        drop_path_rate=0.1,
        out_indices=(3, ),
        norm_cfg=dict(type='BN', requires_grad=True),
        init_cfg=None),
    neck=None,
    # VAN's classifier: the spatial mean of the last (layer-normed) stage, then
    # nn.Linear -> keys head.{weight,bias}, the same here.
    head=dict(
        type='PooledLinearClsHead',
        num_classes=1000,
        in_channels=256,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        topk=(1, 5)),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]))

# lr 1e-3 for the total batch of 1024 (no automatic scaling in VAN's script; --auto-scale-lr of
# tools/train_cls.py scales it linearly for another total batch).
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0))
auto_scale_lr = dict(base_batch_size=1024)

# Per-epoch steps as timm's: warm-up from 1e-6 (factor 1e-3) over 5 epochs, cosine to 1e-6 at
# epoch 300, 10 cool-down epochs at 1e-6.
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=5),
    dict(type='CosineAnnealingLR', eta_min=1e-6, by_epoch=True, begin=5, end=300),
]
train_cfg = dict(by_epoch=True, max_epochs=310, val_interval=1)
val_cfg = dict()
test_cfg = dict()
