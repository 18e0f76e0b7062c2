# SegMAN encoder ImageNet-1k recipe, from yunxiangfu2001/SegMAN (commit 9ced66a):
# scripts/train_{tiny,small,base}.sh (8 GPUs; --epochs 300 --warmup-epochs 5 --auto-lr
# --model-ema --model-ema-decay 0.99984 --clip-grad 5; per variant: --batch-size, --drop-path,
# S/B --amp) and the defaults of its timm train.py (AdamW, weight decay 0.05, cosine schedule,
# warm-up from 1e-6, min lr 1e-5, 10 cool-down epochs, mixup 0.8, cutmix 1.0, label smoothing
# 0.1, RandAugment m9, random erasing 0.25, SyncBN in distributed runs). Leaves set the variant.
_base_ = ['./imagenet_224.py', 'mmpretrain::_base_/default_runtime.py']
custom_imports = dict(imports=['mmseg_segman'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='SegMANEncoder',
        arch='t',
        drop_path_rate=0.0,
        out_indices=(3, ),
        norm_cfg=dict(type='BN', requires_grad=True),
        init_cfg=None),
    neck=None,
    # The official classifier: 1x1 conv 192->1024, BN, SiLU, average pool, 1x1 conv (keys
    # classifier.{0,1,4}.* in the released files, head.{0,1,4}.* here).
    head=dict(
        type='SegMANClsHead',
        num_classes=1000,
        in_channels=192,
        projection=1024,
        # timm's Mixup(label_smoothing=0.1) + SoftTargetCrossEntropy.
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        topk=(1, 5)),
    # --mixup 0.8 --cutmix 1.0 --mixup-switch-prob 0.5: one of the two on every batch.
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]))
# timm converts BN to SyncBN when training on several GPUs (train.py unless --no-sync-bn).
sync_bn = 'torch'

# --auto-lr: lr = total batch / 1024 * 1e-3 (4e-3 for T's 8 x 512, 2e-3 for S/B's 8 x 256).
# mmengine applies the same linear rule from base_batch_size (enabled here, as in the scripts).
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
    # timm's optimizer factory: no weight decay for biases and other 1-D parameters (norms).
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0, flat_decay_mult=0.0),
    clip_grad=dict(max_norm=5.0))
auto_scale_lr = dict(base_batch_size=1024, enable=True)

# timm's cosine schedule steps once per epoch: linear warm-up from 1e-6 over 5 epochs (start
# factor = 1e-6 / lr at the official batch: 2.5e-4 for T, 5e-4 for S/B/L), cosine to 1e-5 at
# epoch 300, then 10 cool-down epochs at 1e-5 (timm trains 300 + 10 epochs). timm's cosine
# also runs during the warm-up, which shifts it by 5 of 300 epochs (< 0.1% of the lr).
param_scheduler = [
    dict(type='LinearLR', start_factor=5e-4, by_epoch=True, begin=0, end=5),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=5, end=300),
]
train_cfg = dict(by_epoch=True, max_epochs=310, val_interval=1)
val_cfg = dict()
test_cfg = dict()

# --model-ema-decay 0.99984 (timm ModelEmaV2, per optimizer step, buffers included); mmengine's
# momentum is 1 - decay. Validation and the saved state_dict use the averaged weights, as the
# released files' state_dict_ema.
custom_hooks = [
    dict(type='EMAHook', momentum=1.6e-4, update_buffers=True, priority='ABOVE_NORMAL')
]
