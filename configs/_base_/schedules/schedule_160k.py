# The recipe shared by SegMAN, SegNeXt and LRFormer: AdamW, 1500-iteration linear warm-up,
# then linear (poly, power 1) decay to zero; 160k iterations.
#
# custom_keys are matched longest key first, then alphabetically, against parameter
# names: every parameter of `decode_head` gets 10x lr (the `head` key wins over `norm`
# there), backbone LayerNorm/GroupNorm parameters named `*norm*` and `pos_block`
# parameters get no weight decay.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
        custom_keys={
            'pos_block': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.),
            'head': dict(lr_mult=10.)
        }))
param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(
        type='PolyLR',
        power=1.0,
        eta_min=0.0,
        begin=1500,
        end=160000,
        by_epoch=False)
]
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=160000, val_interval=16000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # Checkpoints are written atomically (mmseg_segman's `atomic_local` file backend):
    # a kill during a write never leaves a truncated iter_N.pth for --resume to pick.
    checkpoint=dict(
        type='CheckpointHook', by_epoch=False, interval=16000,
        backend_args=dict(backend='atomic_local')),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
