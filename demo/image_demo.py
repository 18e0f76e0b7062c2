"""Segment one image and save it with the predicted mask overlaid in the dataset's palette.

MMSeg's ``demo/image_demo.py`` with mmseg_segman loaded and the checkpoint optional::

    python demo/image_demo.py demo.jpg configs/segman/segman-t_ade20k.py segman_t_ade.pth \\
        --out-file result.png --device cpu

Without a checkpoint the model has random weights (a warning says so): useful to check an
installation, not the predictions.
"""
import argparse
import os.path as osp
import warnings

import torch
from mmseg.apis import inference_model, init_model, show_result_pyplot

import mmseg_segman  # noqa: F401  (registers the plugin's modules)
from mmseg_segman.apis import dataset_meta_from_config


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Segment an image and save the overlay')
    parser.add_argument('img', help='image file')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', nargs='?', default=None,
                        help='checkpoint file (omit for random weights)')
    parser.add_argument('--out-file', default=None, help='where to write the overlay image')
    parser.add_argument(
        '--device', default='cuda:0' if torch.cuda.is_available() else 'cpu',
        help='device for inference, e.g. cpu or cuda:0 (default: cuda:0 if available)')
    parser.add_argument('--opacity', type=float, default=0.5,
                        help='opacity of the painted mask, in (0, 1]')
    parser.add_argument('--with-labels', action='store_true', default=False,
                        help='write the class names on the mask')
    parser.add_argument('--title', default='result', help='title of the window or image')
    args = parser.parse_args(argv)
    if not 0 < args.opacity <= 1:
        parser.error(f'--opacity must be in (0, 1], got {args.opacity}')
    for name in ('img', 'config') + (('checkpoint', ) if args.checkpoint else ()):
        if not osp.isfile(getattr(args, name)):
            parser.error(f'{name} {getattr(args, name)!r} does not exist')
    return args


def main(argv=None):
    args = parse_args(argv)
    model = init_model(args.config, args.checkpoint, device=args.device)
    if args.checkpoint is None:
        warnings.warn('No checkpoint given: the model has random weights and the mask is '
                      'meaningless; pass the trained checkpoint as the third argument.')
    if not getattr(model, 'dataset_meta', None):
        # No checkpoint (or one without class names): the config's dataset names the
        # classes and palette, where MMSeg's init_model would leave none.
        model.dataset_meta = dataset_meta_from_config(model.cfg)
    result = inference_model(model, args.img)
    show_result_pyplot(model, args.img, result, title=args.title, opacity=args.opacity,
                       with_labels=args.with_labels, draw_gt=False,
                       show=args.out_file is None, out_file=args.out_file)
    if args.out_file:
        print(f'Wrote {args.out_file}')


if __name__ == '__main__':
    main()
