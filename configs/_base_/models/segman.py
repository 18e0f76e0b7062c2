# SegMAN (SegMANEncoder + SegMANDecoder with MMSCopE), SegMAN-T settings.
# Variant configs in configs/segman/ override arch, drop_path_rate,
# in_channels, channels and feat_proj_dim. SyncBN in encoder and decoder as in
# the official code (the official encoder converts itself to SyncBN under
# distributed training); MMEngine's Runner reverts it to BN when training is
# not distributed.
norm_cfg = dict(type='SyncBN', requires_grad=True)
# ImageNet mean/std in RGB order, as the official pipeline.
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='SegMANEncoder',
        arch='t',
        drop_path_rate=0.0,
        norm_cfg=norm_cfg),
    decode_head=dict(
        type='SegMANDecoder',
        # All four stages are selected as in the official configs; the stride-4
        # map is unused.
        in_channels=[32, 64, 144, 192],
        in_index=[0, 1, 2, 3],
        channels=128,
        feat_proj_dim=192,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    # Any input size works; the ADE20K/COCO-Stuff test pipelines resize images to
    # multiples of 32 as the official AlignedResize does.
    test_cfg=dict(mode='whole'))
