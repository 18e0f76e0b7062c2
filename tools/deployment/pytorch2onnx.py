"""Export a segmentor to ONNX: normalised image (1, 3, H, W) -> logits (1, classes, H, W).

    python tools/deployment/pytorch2onnx.py CONFIG [CHECKPOINT] --shape H W --output FILE.onnx \\
        [--dynamic] [--opset N] [--verify] [--tolerance REL] [--cfg-options k=v ...]

Without CHECKPOINT the weights are random (useful to check that a config exports). The graph
is MMSeg's whole-image ``encode_decode`` (no data preprocessor, no sliding window); see
docs/deployment.md. ``--verify`` runs the file with onnxruntime on a random input and exits
with status 1 when ``max |onnx - torch| / max |torch|`` exceeds ``--tolerance``.
``--dynamic`` keeps H and W symbolic (``--shape`` is then the example size; SegNeXt only:
SegMAN and LRFormer graphs are right only at their example size and are refused).
Needs ``onnxscript`` and ``onnx`` (and ``onnxruntime`` for ``--verify``):
``pip install -e ".[deploy]"``.
"""
import argparse
import sys

from mmengine.config import DictAction

import mmseg_segman  # noqa: F401  (registers the plugin's modules)
from mmseg_segman.deploy import onnx_export


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Export an MMSeg segmentor to ONNX')
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', nargs='?', default=None,
                        help='checkpoint file (default: random weights)')
    parser.add_argument('--shape', type=int, nargs=2, required=True, metavar=('H', 'W'),
                        help='input height and width of the exported graph')
    parser.add_argument('--output', required=True, help='ONNX file to write')
    parser.add_argument('--opset', type=int, default=onnx_export.DEFAULT_OPSET,
                        help=f'ONNX opset (default {onnx_export.DEFAULT_OPSET})')
    parser.add_argument('--verify', action='store_true',
                        help='compare onnxruntime with PyTorch on a random input')
    parser.add_argument('--tolerance', type=float, default=1e-4,
                        help='--verify fails above this max |error| / max |logit| '
                             '(default 1e-4)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the --verify input')
    parser.add_argument('--dynamic', action='store_true',
                        help='keep H and W symbolic (SegNeXt; --shape is the example size)')
    parser.add_argument('--no-optimize', action='store_true',
                        help="skip the exporter's graph optimisation (faster export)")
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, key=value pairs as in tools/train.py')
    args = parser.parse_args(argv)
    if min(args.shape) < 1:
        parser.error(f'--shape takes two positive sizes, got {args.shape}')
    if args.tolerance <= 0:
        parser.error(f'--tolerance must be positive, got {args.tolerance}')
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        model, cfg = onnx_export.build_segmentor(args.config, args.checkpoint, args.cfg_options)
        onnx_export.require_packages('onnxscript', 'onnx',
                                     *(('onnxruntime', ) if args.verify else ()))
    except (FileNotFoundError, ImportError, KeyError, ValueError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    test_mode = cfg.model.get('test_cfg', {}).get('mode', 'whole')
    if test_mode != 'whole':
        print(f'note: the config tests in {test_mode!r} mode; the graph runs whole-image '
              'inference on one (H, W) input', file=sys.stderr)
    h, w = args.shape
    try:
        wrapper = onnx_export.export_onnx(model, (h, w), args.output, opset=args.opset,
                                          optimize=not args.no_optimize, dynamic=args.dynamic)
    except ValueError as err:  # a family whose graph cannot be dynamic
        print(f'error: {err}', file=sys.stderr)
        return 2
    pre = onnx_export.preprocess_summary(cfg)
    print(f'wrote {args.output} ({onnx_export.file_size_mb(args.output):.1f} MiB, opset '
          f'{args.opset}): input (1, 3, {h}, {w}) normalised with mean={pre["mean"]} '
          f'std={pre["std"]} bgr_to_rgb={pre["bgr_to_rgb"]}')
    if not args.verify:
        return 0
    stats = onnx_export.verify_onnx(wrapper, args.output, seed=args.seed)
    ok = stats['rel'] <= args.tolerance
    print(f'verify: logits {stats["shape"]}, max abs error {stats["max_abs"]:.3e}, '
          f'max |logit| {stats["max_ref"]:.3e}, relative error {stats["rel"]:.3e} '
          f'(tolerance {args.tolerance:.1e}): {"OK" if ok else "FAILED"}')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
