"""Plot training curves (loss, mIoU, ...) from mmengine's JSON logs as a PNG.

Replaces MMSeg's ``tools/analysis_tools/analyze_logs.py`` (MMSeg 1.2.2 and
onedl-mmsegmentation 1.4.2), which

* imports seaborn at the top, although neither MMSeg nor this plugin installs it (a bare
  ``ModuleNotFoundError: No module named 'seaborn'``; seaborn also needs pandas);
* draws every key on one axis, so a loss near 1 is a flat line under an mIoU near 50, and
  sets the x ticks of that shared axis to the validation steps only;
* carries the last step of one log into the next when several logs are given.

This one needs only matplotlib: one panel per key, one line per log, x = the iteration
(mmengine's ``step``), validation metrics with markers.

Usage::

    python tools/analysis/analyze_logs.py WORK_DIR/<timestamp>/vis_data/scalars.json \
        [more logs or work dirs] [--keys loss mIoU] [--legend A B] [--title T] [--out curves.png]

A work dir stands for the ``vis_data/scalars.json`` of its latest run.
"""
import argparse
import glob
import json
import os.path as osp
import sys
from typing import Dict, List, Optional, Sequence, Tuple

Curve = List[Tuple[int, float]]
VAL_KEYS = ('mIoU', 'mAcc', 'aAcc', 'mDice', 'mFscore', 'mPrecision', 'mRecall')


def find_log(path: str) -> str:
    """``path`` itself, or for a work dir the ``vis_data/scalars.json`` of its latest run."""
    if osp.isdir(path):
        runs = sorted(glob.glob(osp.join(path, '*', 'vis_data', 'scalars.json')))
        if not runs:
            raise FileNotFoundError(f'{path}: no <timestamp>/vis_data/scalars.json in this work '
                                    'dir; pass the JSON log of a training run')
        return runs[-1]
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path}: no such log file; pass vis_data/scalars.json (or '
                                'the <timestamp>.json next to it) of a training run')
    return path


def load_log(path: str) -> Dict[str, Curve]:
    """{key: [(step, value), ...]} from one mmengine JSON log (one JSON object per line).

    Every numeric entry of a line is a point at that line's ``step`` (the iteration, for
    training and validation lines alike); ``iter``, ``step`` and ``epoch`` are not keys.
    """
    curves: Dict[str, Curve] = {}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f'{path}:{number}: not a JSON line ({err}); pass mmengine\'s '
                                 'JSON log, not the text .log') from None
            step = record.get('step', record.get('iter'))
            if step is None:
                continue
            for key, value in record.items():
                if key in ('step', 'iter', 'epoch') or isinstance(value, bool) or \
                        not isinstance(value, (int, float)):
                    continue
                curves.setdefault(key, []).append((int(step), float(value)))
    return curves


def plot_curves(logs: Sequence[Dict[str, Curve]], keys: Sequence[str], out: str,
                legend: Optional[Sequence[str]] = None, title: Optional[str] = None) -> str:
    """One panel per key (shared x), one line per log; saves ``out`` and returns it."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    missing = [k for k in keys if not any(k in log for log in logs)]
    if missing:
        available = sorted({k for log in logs for k in log})
        raise KeyError(f'--keys {" ".join(missing)}: not in the log(s); available: '
                       f'{", ".join(available)}')
    legend = list(legend) if legend else [f'log {i}' for i in range(len(logs))]
    fig, axes = plt.subplots(len(keys), 1, figsize=(8, 3 * len(keys)), sharex=True,
                             squeeze=False)
    for ax, key in zip(axes[:, 0], keys):
        for name, log in zip(legend, logs):
            points = sorted(log.get(key, []))
            if not points:
                continue
            steps, values = zip(*points)
            is_val = key in VAL_KEYS or len(points) <= 20
            ax.plot(steps, values, marker='o' if is_val else None,
                    linewidth=1.5 if is_val else 0.8, label=name)
        ax.set_ylabel(key)
        ax.grid(True, alpha=0.3)
        if len(logs) > 1:
            ax.legend()
    axes[-1, 0].set_xlabel('iteration')
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description='Plot training curves from JSON logs')
    parser.add_argument('json_logs', nargs='+',
                        help='vis_data/scalars.json (or <timestamp>.json) or a work dir')
    parser.add_argument('--keys', nargs='+', default=['loss', 'mIoU'],
                        help='keys to plot, one panel each (default: loss mIoU)')
    parser.add_argument('--legend', nargs='+', help='one name per log')
    parser.add_argument('--title', help='figure title')
    parser.add_argument('--out', default='curves.png', help='PNG to write (default curves.png)')
    args = parser.parse_args(argv)
    if args.legend and len(args.legend) != len(args.json_logs):
        print(f'error: --legend: {len(args.legend)} names for {len(args.json_logs)} logs; '
              'give one per log', file=sys.stderr)
        return 1
    try:
        logs = [load_log(find_log(p)) for p in args.json_logs]
        plot_curves(logs, args.keys, args.out, args.legend, args.title)
    except (OSError, ValueError, KeyError) as err:
        print(f'error: {err.args[0] if err.args else err}', file=sys.stderr)
        return 1
    print(f'curves of {", ".join(args.keys)} saved to {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
