# 8 GPUs x 256 images per GPU = 2048 total, 310 epochs (300 + 10 cool-down)
# SegMAN encoder L on ImageNet-1k. The official repository has no L training script
# (scripts/ covers T, S and B); this config uses the B script's settings (batch 8 x 256,
# --drop-path 0.3, --amp on GPUs) as the closest published recipe - an assumption, not the
# authors' L recipe. Reported top-1 85.5 (README). Evaluation crop_pct 0.95 (SegMANEncoder_l
# default cfg): short side floor(224 / 0.95) = 235.
_base_ = ['./segman-b_in1k.py']
model = dict(backbone=dict(arch='l'), head=dict(in_channels=640))
