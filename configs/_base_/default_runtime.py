default_scope = 'mmseg'
# Registers SegMAN / SegNeXt / LRFormer modules (and applies the CPU compatibility
# shims of mmseg_segman.compat) as soon as the config is loaded, so MMSeg's own
# tools/train.py and tools/test.py work with these configs unchanged.
custom_imports = dict(imports=['mmseg_segman'], allow_failed_imports=False)
# Warns at training start when world size x train_dataloader.batch_size (x gradient
# accumulation) differs from the recipe's total batch, the most common cause of failed
# reproductions. Every leaf config sets its recipe's total here (see its first line);
# None turns the check off.
# RandomStateHook saves the random state in each checkpoint so --resume repeats an
# uninterrupted run exactly (a leaf config that sets custom_hooks must list it too).
custom_hooks = [
    dict(type='BatchSizeCheckHook', total_batch_size=None),
    dict(type='RandomStateHook')
]
env_cfg = dict(
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    # Without CUDA, mmseg_segman.compat switches this to 'gloo'.
    dist_cfg=dict(backend='nccl'),
)
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(
    type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False

tta_model = dict(type='SegTTAModel')
