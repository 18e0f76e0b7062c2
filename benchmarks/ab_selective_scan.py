"""A/B timing of two versions of the selective scan module in one process.

Loads a baseline copy of ``mmseg_segman/ops/selective_scan.py`` (e.g. from an older commit)
next to the installed one and times both on SegMAN-T stage-1 inputs (see
bench_selective_scan.py), forward without grad and forward + backward, in interleaved rounds.
It first checks that both give the same output and gradients.

Usage::

    git show <commit>:mmseg_segman/ops/selective_scan.py > /tmp/scan_old.py
    python benchmarks/ab_selective_scan.py --baseline /tmp/scan_old.py [--threads 1]
        [--decay-scale 1] [--repeats 15]

Page faults (a fresh 8 MiB buffer can cost more than the arithmetic done in it, depending on
glibc's heap state) are printed per call; to compare arithmetic only, run with glibc's heap
trimming off: ``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=68719476736``.
"""
import argparse
import importlib.util
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_selective_scan import minor_faults, segman_inputs  # noqa: E402
from mmseg_segman.ops import selective_scan as current  # noqa: E402


def load_module(path):
    if not os.path.isfile(path):
        raise SystemExit(f'--baseline: no such file: {path}')
    spec = importlib.util.spec_from_file_location('selective_scan_baseline', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--baseline', required=True, help='path of the baseline module file')
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--repeats', type=int, default=15)
    parser.add_argument('--length', type=int, default=16384)
    parser.add_argument('--decay-scale', type=float, default=1.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    baseline = load_module(args.baseline)
    inputs = segman_inputs(1, 4, 32, args.length)
    inputs[2] = inputs[2] * args.decay_scale
    leaves = [t.clone().requires_grad_() if t is not None else None for t in inputs]
    dout = torch.randn_like(inputs[0])

    def results(module):
        for t in leaves:
            if t is not None:
                t.grad = None
        out = module.selective_scan_chunked(*leaves, delta_softplus=True)
        out.backward(dout)
        return [out.detach()] + [t.grad.clone() for t in leaves if t is not None]

    diff = max(((a - b).abs().max() / b.abs().max()).item()
               for a, b in zip(results(current), results(baseline)))
    print(f'max |difference| / max |value|, outputs and gradients: {diff:.1e}')

    def timed(module):
        def fwd():
            with torch.no_grad():
                module.selective_scan_chunked(*inputs, delta_softplus=True)

        def fwd_bwd():
            module.selective_scan_chunked(*leaves, delta_softplus=True).backward(dout)
        return fwd, fwd_bwd

    fns = {}
    for name, module in (('baseline', baseline), ('current', current)):
        fwd, fwd_bwd = timed(module)
        fns[f'{name} fwd'] = fwd
        fns[f'{name} fwd+bwd'] = fwd_bwd
    for fn in fns.values():
        fn()
    wall = {k: [] for k in fns}
    faults = {k: [] for k in fns}
    for _ in range(args.repeats):
        for name, fn in fns.items():
            start, start_faults = time.perf_counter(), minor_faults()
            fn()
            wall[name].append(time.perf_counter() - start)
            faults[name].append(minor_faults() - start_faults)
    print(f'threads {args.threads}, length {args.length}, A scaled by {args.decay_scale:g}, '
          f'{args.repeats} interleaved rounds (wall medians)')
    for name in fns:
        print(f'{name:18s} {statistics.median(wall[name]) * 1e3:8.2f} ms  '
              f'(min {min(wall[name]) * 1e3:.2f})  page faults {statistics.median(faults[name]):.0f}')


if __name__ == '__main__':
    main()
