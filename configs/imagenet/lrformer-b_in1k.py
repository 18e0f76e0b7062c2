# 8 GPUs x 128 images per GPU = 1024 total, 300 epochs
# LRFormer-B encoder on ImageNet-1k with P2T's recipe (see the base); drop path 0.3, P2T's
# value for P2T-Base (README: 0.1/0.1/0.3/0.3 for tiny/small/base/large).
_base_ = ['./_base_/lrformer_in1k.py']
model = dict(backbone=dict(arch='b', drop_path_rate=0.3), head=dict(in_channels=512))
train_dataloader = dict(batch_size=128)
