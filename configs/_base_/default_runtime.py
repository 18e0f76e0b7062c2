default_scope = 'mmseg'
# Registers the SegMAN / SegNeXt / LRFormer modules and the hooks below as soon as the
# config is loaded, so MMSeg's own tools/train.py and tools/test.py run these configs.
# Importing mmseg_segman changes nothing else: what the plugin adds to a run is listed here.
custom_imports = dict(imports=['mmseg_segman'], allow_failed_imports=False)
# The recipe's total batch (GPUs x images per GPU), stated by every leaf config (see its
# first line). BatchSizeCheckHook warns at training start when world size x
# train_dataloader.batch_size (x gradient accumulation) differs from it, the most common cause
# of failed reproductions; None turns the check off.
total_batch_size = None
# - CheckpointGuardHook: checkpoints are read weights-only during the run (load_from,
#   --resume, pretrained init_cfg, the test checkpoint); evaluation refuses a checkpoint
#   that does not fit the model (set strict_load = False to allow it); --resume skips
#   damaged checkpoints.
# - DataCheckHook: LoadCheckedAnnotations refuses labels outside the dataset's classes.
# - RandomStateHook saves the random state in each checkpoint so --resume repeats an
#   uninterrupted run exactly.
# - PlainParamGroupsHook: with compile=True, plain-dict optimizer groups (dynamo cannot
#   trace MMEngine's ConfigDict groups in the optimizer step); nothing otherwise.
# Leaf configs set total_batch_size, not custom_hooks, so all of them stay on everywhere.
custom_hooks = [
    dict(type='CheckpointGuardHook'),
    dict(type='DataCheckHook'),
    dict(type='BatchSizeCheckHook'),
    dict(type='RandomStateHook'),
    dict(type='PlainParamGroupsHook'),
]
# Multi-process training: mmengine's DDP wrapper, which on a CPU-only machine (gloo)
# also drops device_ids and turns SyncBN into BN (mmengine passes device_ids=[LOCAL_RANK]).
model_wrapper_cfg = dict(
    type='mmseg.CPUAwareDistributedDataParallel',
    broadcast_buffers=False,
    find_unused_parameters=False)
env_cfg = dict(
    cudnn_benchmark=True,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    # Without CUDA, mmseg_segman's tools/train.py starts the process group on 'gloo'.
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
