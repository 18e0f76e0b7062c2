# 8 GPUs x 256 images per GPU = 2048 total, 310 epochs (300 + 10 cool-down)
# SegMAN encoder S on ImageNet-1k, scripts/train_small.sh of yunxiangfu2001/SegMAN:
# --batch-size 256 --drop-path 0.15 --amp (pass --amp to tools/train_cls.py on GPUs); lr 2e-3
# by --auto-lr; reported top-1 84.0 (README). Evaluation crop_pct 0.9.
_base_ = ['./_base_/segman_in1k.py']
model = dict(backbone=dict(arch='s', drop_path_rate=0.15), head=dict(in_channels=512))
train_dataloader = dict(batch_size=256)
