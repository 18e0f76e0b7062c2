default_scope = 'mmseg'
# Registers SegMAN / SegNeXt / LRFormer modules (and applies the CPU compatibility
# shims of mmseg_segman.compat) as soon as the config is loaded, so MMSeg's own
# tools/train.py and tools/test.py work with these configs unchanged.
custom_imports = dict(imports=['mmseg_segman'], allow_failed_imports=False)
# The recipe's total batch (GPUs x images per GPU), stated by every leaf config (see its
# first line). BatchSizeCheckHook warns at training start when world size x
# train_dataloader.batch_size (x gradient accumulation) differs from it, the most common cause
# of failed reproductions; None turns the check off.
total_batch_size = None
# RandomStateHook saves the random state in each checkpoint so --resume repeats an
# uninterrupted run exactly. Leaf configs set total_batch_size, not custom_hooks, so both
# hooks stay on everywhere.
custom_hooks = [dict(type='BatchSizeCheckHook'), dict(type='RandomStateHook')]
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
