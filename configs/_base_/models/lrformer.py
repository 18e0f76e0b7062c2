# LRFormer encoder + LRHead, LRFormer-T settings. The variant configs in configs/lrformer/
# override arch, drop_path_rate, in_channels and channels. As in the official code the head
# uses SyncBN (MMEngine's Runner reverts it to BN when training is not distributed) and the
# backbone stem plain BN; the backbone's token norms are LayerNorms fixed by the architecture.
norm_cfg = dict(type='SyncBN', requires_grad=True)
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
        type='LRFormer',
        arch='t',
        q_pooled_sizes=16,
        drop_path_rate=0.1,
        use_layer_scale=True,
        norm_cfg=dict(type='BN', requires_grad=True)),
    decode_head=dict(
        type='LRHead',
        in_channels=[96, 240, 384],
        in_index=[1, 2, 3],
        channels=256,
        num_heads=8,
        mlp_ratio=4,
        q_pooled_size=32,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
