"""A/B timing of two versions of the selective scan module in one process.

Loads a baseline copy of the scan (e.g. from an older commit) next to the installed one and
times both on SegMAN-T stage-1 inputs (see bench_selective_scan.py), forward without grad and
forward + backward, in interleaved rounds. It first checks that both give the same outputs
(with and without grad) and gradients.

The baseline is either a copy of the ``mmseg_segman/ops`` directory (the scan is spread over
several modules of it since the split into ``linear_recurrence`` and
``selective_scan_common``) or, for commits before that split, the single file
``mmseg_segman/ops/selective_scan.py``. Usage::

    mkdir /tmp/old && git archive <commit> mmseg_segman/ops | tar -x -C /tmp/old
    git show <commit>:mmseg_segman/ops/selective_scan.py > /tmp/scan_old.py  # older commits
    python benchmarks/ab_selective_scan.py --baseline /tmp/old/mmseg_segman/ops [--threads 1]
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

# bench_selective_scan sits beside this script (Python puts the script's folder on sys.path).
from bench_selective_scan import minor_faults, segman_inputs

from mmseg_segman.ops import selective_scan as current


def load_module(path):
    """The baseline's selective scan module, from a copy of the ops directory or one file."""
    if os.path.isdir(path):  # a package copy: its modules import each other relatively
        init = os.path.join(path, '__init__.py')
        if not os.path.isfile(os.path.join(path, 'selective_scan.py')):
            raise SystemExit(f'--baseline: {path} holds no selective_scan.py; pass a copy of '
                             'mmseg_segman/ops')
        spec = importlib.util.spec_from_file_location('scan_baseline', init,
                                                      submodule_search_locations=[path])
        package = importlib.util.module_from_spec(spec)
        sys.modules['scan_baseline'] = package
        spec.loader.exec_module(package)
        return importlib.import_module('scan_baseline.selective_scan')
    if not os.path.isfile(path):
        raise SystemExit(f'--baseline: no such file or directory: {path}')
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

    def no_grad_output(module):
        with torch.no_grad():
            return [module.selective_scan_chunked(*inputs, delta_softplus=True)]

    for what, fn in (('outputs and gradients', results), ('no-grad outputs', no_grad_output)):
        diff = max(((a - b).abs().max() / b.abs().max()).item()
                   for a, b in zip(fn(current), fn(baseline)))
        print(f'max |difference| / max |value|, {what}: {diff:.1e}')

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
    cpu = {k: [] for k in fns}
    faults = {k: [] for k in fns}
    for _ in range(args.repeats):
        for name, fn in fns.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            start_faults = minor_faults()
            fn()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
            faults[name].append(minor_faults() - start_faults)
    print(f'threads {args.threads}, length {args.length}, A scaled by {args.decay_scale:g}, '
          f'{args.repeats} interleaved rounds (medians; process CPU time is the steadier clock '
          f'on a busy machine)')
    for name in fns:
        print(f'{name:18s} wall {statistics.median(wall[name]) * 1e3:8.2f} ms  '
              f'(min {min(wall[name]) * 1e3:.2f})  CPU {statistics.median(cpu[name]) * 1e3:8.2f} ms'
              f'  page faults {statistics.median(faults[name]):.0f}')


if __name__ == '__main__':
    main()
