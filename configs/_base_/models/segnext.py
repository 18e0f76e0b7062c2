# SegNeXt (MSCAN encoder + light Hamburger head), MSCAN-T settings. Variant
# configs in configs/segnext/ override arch, drop_path_rate, in_channels,
# channels / ham_channels and ham_kwargs. SyncBN as in the official code;
# MMEngine's Runner turns it into BN when training is not distributed.
norm_cfg = dict(type='SyncBN', requires_grad=True)
ham_norm_cfg = dict(type='GN', num_groups=32, requires_grad=True)
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
        type='SegNeXtMSCAN',
        arch='t',
        drop_rate=0.0,
        drop_path_rate=0.1,
        act_cfg=dict(type='GELU'),
        norm_cfg=norm_cfg),
    decode_head=dict(
        type='SegNeXtHamHead',
        in_channels=[64, 160, 256],
        in_index=[1, 2, 3],
        channels=256,
        ham_channels=256,
        # NMF rank MD_R: 16 for T/S, 64 for B/L. Evaluation uses fixed NMF
        # bases (deterministic_eval=True by default); see docs/segnext.md.
        ham_kwargs=dict(MD_R=16),
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=ham_norm_cfg,
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
