# 1 process x 8 images per process = 8 total, 500 iterations (CPU)
# Quickstart model for the toy dataset: a narrow ResNet-18 (16 base channels, output
# stride 8) with an FCN head, an MMSeg built-in that trains in minutes on a CPU.
# A toy config for another model keeps the three `_base_` lines and replaces `model`.
# SyncBN as in the paper configs: a single process reverts it to BN, and CPU
# multi-process runs convert it to BN (mmseg.CPUAwareDistributedDataParallel).
_base_ = [
    '../_base_/default_runtime.py', '../_base_/datasets/toy.py',
    '../_base_/schedules/schedule_toy.py'
]
norm_cfg = dict(type='SyncBN', requires_grad=True)
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size_divisor=8)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='ResNetV1c',
        depth=18,
        stem_channels=16,
        base_channels=16,
        out_indices=(3, ),
        strides=(1, 2, 1, 1),
        dilations=(1, 1, 2, 4),
        norm_cfg=norm_cfg,
        contract_dilation=True),
    decode_head=dict(
        type='FCNHead',
        in_channels=128,
        in_index=0,
        channels=64,
        num_convs=2,
        concat_input=True,
        dropout_ratio=0.1,
        num_classes=4,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
# A fixed seed: the quickstart reports the same mIoU on every run.
randomness = dict(seed=0)
total_batch_size = 8  # the recipe's total, checked by BatchSizeCheckHook
