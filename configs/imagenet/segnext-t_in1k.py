# 8 GPUs x 128 images per GPU = 1024 total, 310 epochs (300 + 10 cool-down)
# MSCAN-T (SegNeXt encoder) on ImageNet-1k with VAN's recipe; depths 3, 3, 5, 2 (VAN-B0),
# drop path 0.1 (VAN-Classification train.sh). Evaluation crop_pct 0.9 (timm default cfg of
# VAN).
_base_ = ['./_base_/segnext_in1k.py']
model = dict(backbone=dict(arch='t', drop_path_rate=0.1), head=dict(in_channels=256))
train_dataloader = dict(batch_size=128)
