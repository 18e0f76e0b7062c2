"""Pre-flight check of every sample of a config's datasets, before a long run finds a bad
file hours in.

Usage::

    python tools/misc/check_dataset.py CONFIG [--splits train val] [--nproc N] [--out FILE]
        [--cfg-options KEY=VALUE ...] [--no-progress]

Each image/annotation pair of the chosen splits is checked in ``--nproc`` processes
(missing, empty, truncated or undecodable files; NaN pixels; an annotation of another size
than its image or with more than one channel; label values outside the classes that are
not the ignore index). Every bad file is printed with its cause, a JSON summary with the
per-class pixel counts is written (default ``work_dirs/<config name>/dataset_check.json``),
and the exit status is 1 if anything is wrong, 0 otherwise. The checks are those of
:mod:`mmseg_segman.datasets.scan`.
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(
        description='Check every image/annotation pair of a config\'s datasets.')
    parser.add_argument('config', help='config file')
    parser.add_argument('--splits', nargs='+', default=['train', 'val'],
                        help='dataloaders to scan (train, val, test); default: train val')
    parser.add_argument('--nproc', type=int, default=2, help='worker processes (default 2)')
    parser.add_argument('--out', help='summary JSON (default: '
                        'work_dirs/<config name>/dataset_check.json)')
    parser.add_argument('--no-progress', action='store_true', help='no progress bar')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, as in tools/train.py')
    args = parser.parse_args(argv)
    if args.nproc < 1:
        parser.error(f'--nproc must be >= 1, got {args.nproc}')
    return args


def main(argv: Optional[List[str]] = None) -> int:
    try:
        import mmseg_segman  # noqa: F401  (registers the plugin's transforms and scope)
    except ImportError as err:
        print(f'error: mmseg_segman cannot be imported ({err}); install the plugin in this '
              'Python environment (pip install -e .)', file=sys.stderr)
        return 1
    from mmengine.config import Config

    from mmseg_segman.datasets.scan import scan_config
    from mmseg_segman.errors import PluginError

    args = parse_args(argv)
    if not osp.isfile(args.config):
        print(f'error: {args.config}: no such config file; pass the path of a config, e.g. '
              'configs/toy/segman-t_toy.py', file=sys.stderr)
        return 1
    try:
        cfg = Config.fromfile(args.config)
    except Exception as err:
        print(f'error: {args.config}: the config cannot be read ({type(err).__name__}: {err})',
              file=sys.stderr)
        return 1
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    out = args.out or osp.join('work_dirs', osp.splitext(osp.basename(args.config))[0],
                               'dataset_check.json')
    try:
        report = scan_config(cfg, args.splits, args.nproc, progress=not args.no_progress)
    except PluginError as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    print()
    for split, summary in report.splits.items():
        pixels = ', '.join(f'{c} {n}' for c, n in summary.class_pixels.items())
        print(f'{split}: {summary.samples} samples, {summary.bad_samples} bad; pixels per '
              f'class: {pixels}; ignored ({summary.ignore_index}): {summary.ignored_pixels}')
    report.write(out)
    if report.ok:
        print(f'all files OK ({report.seconds:.1f} s, {report.nproc} process'
              f'{"es" if report.nproc > 1 else ""}); '
              f'summary: {out}')
        return 0
    files = sorted({p.file for p in report.problems})
    print(f'{len(files)} bad file(s), {len(report.problems)} problem(s):', file=sys.stderr)
    for problem in report.problems:
        print(f'  {problem}', file=sys.stderr)
    print(f'summary: {out}', file=sys.stderr)
    return 1


if __name__ == '__main__':
    sys.exit(main())
