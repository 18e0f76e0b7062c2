# 8 GPUs x 512 images per GPU = 4096 total, 310 epochs (300 + 10 cool-down)
# SegMAN encoder T on ImageNet-1k, scripts/train_tiny.sh of yunxiangfu2001/SegMAN:
# --batch-size 512 --drop-path 0.0 (no --amp); lr 4e-3 by --auto-lr; reported top-1 76.2
# (README). Evaluation crop_pct 0.9 (SegMANEncoder_t default cfg).
_base_ = ['./_base_/segman_in1k.py']
model = dict(backbone=dict(arch='t', drop_path_rate=0.0), head=dict(in_channels=192))
train_dataloader = dict(batch_size=512)
# Warm-up from 1e-6 to the 4e-3 of the official 4096 batch.
param_scheduler = [
    dict(type='LinearLR', start_factor=2.5e-4, by_epoch=True, begin=0, end=5),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=5, end=300),
]
