# 8 GPUs x 128 images per GPU = 1024 total, 310 epochs (300 + 10 cool-down)
# MSCAN-S (SegNeXt encoder) on ImageNet-1k with VAN's recipe; depths 2, 2, 4, 2 (VAN-B1), drop path
# 0.1 (VAN-Classification train.sh). Evaluation crop_pct 0.9 (timm default cfg of VAN).
_base_ = ['./_base_/segnext_in1k.py']
model = dict(backbone=dict(arch='s', drop_path_rate=0.1), head=dict(in_channels=512))
train_dataloader = dict(batch_size=128)
