"""Prepare a training checkpoint for release: weights and meta only, named by its hash.

    python tools/misc/publish_model.py work_dirs/segman-t_ade20k/iter_160000.pth segman-t.pth

As MMSeg's ``tools/misc/publish_model.py`` (optimizer and logging state dropped, the
output renamed ``<name>-<first 8 hex of its sha256>.pth``), but the input is read
weights-only: MMSeg's script calls ``torch.load``, which refuses mmengine training
checkpoints on torch >= 2.6 with mainline mmengine (mmengine#1655). Prints the final path.
"""
import argparse
import hashlib
import os
import sys

import torch

from mmseg_segman.errors import PluginError
from mmseg_segman.utils.checkpoint_io import load_checkpoint_file


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('in_file', help='training checkpoint')
    parser.add_argument('out_file', help='output name (the hash is added before .pth)')
    args = parser.parse_args(argv)
    try:
        checkpoint = load_checkpoint_file(args.in_file, map_location='cpu')
    except PluginError as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    kept = {k: checkpoint[k] for k in ('meta', 'state_dict') if k in checkpoint}
    if 'state_dict' not in kept:
        print(f'error: {args.in_file}: no state_dict in the checkpoint; is it a checkpoint '
              f'written by mmengine?', file=sys.stderr)
        return 1
    torch.save(kept, args.out_file)
    with open(args.out_file, 'rb') as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    stem = args.out_file[:-4] if args.out_file.endswith('.pth') else args.out_file
    final = f'{stem}-{sha[:8]}.pth'
    os.replace(args.out_file, final)
    print(final)
    return 0


if __name__ == '__main__':
    sys.exit(main())
