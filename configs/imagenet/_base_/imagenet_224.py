# ImageNet-1k at 224x224 with the augmentation all three official recipes use: timm's ImageNet
# training transforms (SegMAN train.py and VAN train.py are timm's script; P2T, whose recipe
# LRFormer's encoder comes from, uses DeiT's main.py, which calls the same timm functions):
# RandomResizedCrop 224 (scale 0.08-1), horizontal flip, RandAugment 'rand-m9-mstd0.5-inc1',
# random erasing 0.25 in 'pixel' mode; mixup / cutmix / label smoothing are in the family bases.
# timm's default train interpolation ('random' bilinear/bicubic in the SegMAN and VAN scripts)
# is replaced by bicubic, the one mmpretrain offers (DeiT's default).
#
# Data layout (mmpretrain's ImageNet dataset): data/imagenet/{train,val}/<class>/*.JPEG, or
# data/imagenet/meta/{train,val}.txt listing 'relative/path.JPEG label'.
dataset_type = 'ImageNet'
data_root = 'data/imagenet'
data_preprocessor = dict(
    num_classes=1000,
    mean=[123.675, 116.28, 103.53],  # timm IMAGENET_DEFAULT_MEAN x 255, RGB
    std=[58.395, 57.12, 57.375],
    to_rgb=True)
bgr_mean = data_preprocessor['mean'][::-1]
bgr_std = data_preprocessor['std'][::-1]

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=224, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    # 'rand-m9-mstd0.5-inc1': 2 ops, magnitude 9 of 10 with std 0.5, increasing severity.
    dict(
        type='RandAugment',
        policies='timm_increasing',
        num_policies=2,
        total_level=10,
        magnitude_level=9,
        magnitude_std=0.5,
        hparams=dict(pad_val=[round(x) for x in bgr_mean], interpolation='bicubic')),
    # --reprob 0.25 --remode pixel: per-pixel normal noise in one box of 2-33% of the image.
    dict(
        type='RandomErasing',
        erase_prob=0.25,
        mode='rand',
        min_area_ratio=0.02,
        max_area_ratio=1 / 3,
        fill_color=bgr_mean,
        fill_std=bgr_std),
    dict(type='PackInputs'),
]

# Evaluation as timm's with crop_pct 0.9 (the default of SegMANEncoder_t/s and of VAN):
# short side resized to floor(224 / 0.9) = 248, bicubic, then the centre 224x224. Families and
# variants with another crop_pct override `test_pipeline` and both evaluation dataloaders.
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=248, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]

train_dataloader = dict(
    batch_size=128,
    num_workers=8,
    persistent_workers=True,
    dataset=dict(type=dataset_type, data_root=data_root, split='train', pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True))
val_dataloader = dict(
    batch_size=128,
    num_workers=8,
    persistent_workers=True,
    dataset=dict(type=dataset_type, data_root=data_root, split='val', pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False))
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
