# A short CPU schedule for the toy dataset: a larger learning rate than the papers'
# 6e-5 (there is no pre-training to preserve), short warm-up, poly decay to zero.
# To change the length, override both `train_cfg.max_iters` and the PolyLR `end`
# (param_scheduler.1.end): a scheduler's end is not derived from the loop.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=2e-3, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=20),
    dict(
        type='PolyLR',
        power=1.0,
        eta_min=0.0,
        begin=20,
        end=500,
        by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=500, val_interval=250)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=20, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # Written atomically (mmseg_segman's `atomic_local` file backend).
    checkpoint=dict(
        type='CheckpointHook', by_epoch=False, interval=250, max_keep_ckpts=2,
        backend_args=dict(backend='atomic_local')),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    # Drawn only with `tools/test.py --show-dir`; then every image, not every 50th.
    visualization=dict(type='SegVisualizationHook', interval=1))
