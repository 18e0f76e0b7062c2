"""FLOPs and parameters of a segmentor, counted as in the SegMAN paper.

Same arguments as MMSeg's ``tools/analysis_tools/get_flops.py``; unlike it, this imports
``mmseg_segman`` before anything else (so it runs on mmcv-lite) and counts our operators
(selective scan, neighborhood attention) with the closed forms of :mod:`mmseg_segman.utils.flops`.
One multiply-add is one FLOP (fvcore's convention); element-wise ops are not counted.

The model is built from the config without pretrained weights, the auxiliary head is dropped,
and ``backbone + decode_head`` runs in eval mode on CPU on a random ``1x3xHxW`` image (MMSeg's
tensor mode: logits at the head's stride). ``--resize-logits`` also counts the bilinear resize
of the logits to the input size (4 FLOPs per output value), as the MMSeg 0.x
``forward_dummy`` that the papers' scripts traced did::

    python tools/analysis/get_flops.py configs/segman/segman-t_ade20k.py --shape 512 512
"""
import argparse

import torch
import torch.nn as nn
from mmengine.analysis import parameter_count
from mmengine.analysis.print_helper import complexity_stats_table
from mmengine.config import Config, DictAction
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope
from mmseg.models.utils import resize
from mmseg.registry import MODELS

import mmseg_segman  # noqa: F401  (registers the plugin's modules)
from mmseg_segman.utils import flop_analyzer


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Get the FLOPs of a segmentor')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--shape', type=int, nargs='+', default=[2048, 1024],
                        help='input size: H [W] (one value: square)')
    parser.add_argument('--resize-logits', action='store_true',
                        help='also count the final resize of the logits to the input size')
    parser.add_argument('--breakdown', type=int, default=0, metavar='DEPTH',
                        help='also print a per-module table down to this depth (0: none)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, key=value pairs as in tools/train.py')
    args = parser.parse_args(argv)
    if len(args.shape) not in (1, 2) or min(args.shape) < 1:
        parser.error(f'--shape takes one or two positive sizes, got {args.shape}')
    return args


def _drop_init_cfg(cfg):
    """Remove every ``init_cfg``/``pretrained`` so no weights are loaded."""
    if isinstance(cfg, dict):
        for key in ('init_cfg', 'pretrained'):
            cfg.pop(key, None)
        for value in cfg.values():
            _drop_init_cfg(value)
    elif isinstance(cfg, (list, tuple)):
        for value in cfg:
            _drop_init_cfg(value)


def build_model(cfg):
    """Segmentor in eval mode on CPU, no pretrained weights, no auxiliary head, plain BN."""
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model_cfg = cfg.model.copy()
    _drop_init_cfg(model_cfg)
    model_cfg.pop('auxiliary_head', None)
    return revert_sync_batchnorm(MODELS.build(model_cfg)).eval()


class _ResizedLogits(nn.Module):
    """``segmentor(x)`` resized to the input size, as MMSeg's inference does."""

    def __init__(self, segmentor):
        super().__init__()
        self.segmentor = segmentor

    def forward(self, inputs):
        return resize(self.segmentor(inputs), size=inputs.shape[2:], mode='bilinear',
                      align_corners=self.segmentor.align_corners)


def get_flops(cfg, shape, resize_logits=False):
    """Count one forward of ``cfg``'s model on a ``1x3xHxW`` input.

    Args:
        cfg (Config): Config with a ``model`` entry.
        shape (tuple[int]): (H, W).
        resize_logits (bool): Also count the resize of the logits to (H, W).

    Returns:
        tuple[FlopAnalyzer, int]: the analyzer (totals and per-module counts) and the
        parameter count.
    """
    model = build_model(cfg)
    inputs = torch.randn(1, 3, *shape)
    with torch.no_grad():
        analyzer = flop_analyzer(_ResizedLogits(model) if resize_logits else model, (inputs, ))
    return analyzer, parameter_count(model)['']


def main(argv=None):
    args = parse_args(argv)
    shape = tuple(args.shape) * (3 - len(args.shape))
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    analyzer, params = get_flops(cfg, shape, args.resize_logits)
    line = '=' * 30
    print(f'{line}\nInput shape: (3, {shape[0]}, {shape[1]})\n'
          f'Flops: {analyzer.total() / 1e9:.3f} G (multiply-adds)\n'
          f'Params: {params / 1e6:.3f} M\n{line}')
    if args.breakdown > 0:
        print(complexity_stats_table(analyzer, max_depth=args.breakdown,
                                     show_param_shapes=False))


if __name__ == '__main__':
    main()
