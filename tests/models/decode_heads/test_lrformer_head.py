"""LRHead (models/decode_heads/lrformer_head.py): output level and pooled sizes."""
import torch
from _family_helpers import BN

import mmseg_segman  # noqa: F401  (registers the plugin's modules)
from mmseg_segman.models.decode_heads.lrformer_head import LRHead


def test_head_output_at_first_selected_level():
    head = LRHead(in_channels=[32, 40, 64], in_index=[1, 2, 3], channels=32, num_classes=5,
                  norm_cfg=BN).eval()
    feats = [torch.randn(1, 16, 52, 40), torch.randn(1, 32, 26, 20), torch.randn(1, 40, 13, 10),
             torch.randn(1, 64, 7, 5)]
    assert head(feats).shape == (1, 5, 26, 20)
    assert head.fuse_block1.attn.kv_pooled_sizes == [22, 16, 12, 8]  # q pool 32 by default
