# 1 process x 8 images per process = 8 total, 500 iterations (CPU)
# SegMAN-T (no ImageNet pre-training) on the toy dataset: the same data and CPU
# schedule as fcn-r18-narrow_toy.py, with the SegMAN model of configs/_base_/models.
_base_ = [
    '../_base_/models/segman.py', '../_base_/default_runtime.py',
    '../_base_/datasets/toy.py', '../_base_/schedules/schedule_toy.py'
]
model = dict(
    data_preprocessor=dict(size=(64, 64)),  # the toy crop size: batches stack
    decode_head=dict(num_classes=4))
# A fixed seed: the quickstart reports the same mIoU on every run.
randomness = dict(seed=0)
total_batch_size = 8  # the recipe's total, checked by BatchSizeCheckHook
