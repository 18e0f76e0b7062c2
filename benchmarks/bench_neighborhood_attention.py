"""Speed and peak memory of 2-D neighborhood attention, split form, forward + backward.

Compares the tiled backend of ``mmseg_segman.ops`` (halo formulation, what ``na2d_qk`` /
``na2d_av`` run on CPU) with the gather reference backend
(``mmseg_segman.ops.neighborhood_attention.reference``), which materialises every query's
k x k keys and values and lets autograd save them. Default
shape: SegMAN-T stage 1 (batch 1, 1 head, head dim 32, 128 x 128, kernel 11, with rpb).

Each measurement runs in a fresh subprocess: the extra peak memory is the growth of the
process's max RSS over the first forward + backward call (inputs already allocated), and
the times (wall clock and process CPU time, the steadier clock on a shared machine) are
medians over repeated calls in that process. Variants alternate so that background load hits
them alike. Usage::

    python benchmarks/bench_neighborhood_attention.py [--size 128] [--rounds 3] [--tiles 8]
        [--threads 1]
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch


def maxrss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run_variant(variant, size, dim, kernel_size, repeats, tile, threads):
    """Body of one subprocess; prints a JSON line with the peak growth and the timings."""
    from mmseg_segman.ops import neighborhood_attention as na
    from mmseg_segman.ops.neighborhood_attention import tiled
    if threads:
        torch.set_num_threads(threads)
    if tile:
        tiled._TILE = tile
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 1, size, size, dim, requires_grad=True) for _ in range(3))
    rpb = torch.randn(1, 2 * kernel_size - 1, 2 * kernel_size - 1, requires_grad=True)
    grad = torch.randn(1, 1, size, size, dim)
    if variant == 'gather':
        qk, av = (lambda a, b: na.na2d_qk_reference(a, b, kernel_size, rpb=rpb)), (
            lambda a, b: na.na2d_av_reference(a, b, kernel_size))
    else:
        qk, av = (lambda a, b: na.na2d_qk(a, b, kernel_size, rpb=rpb)), (
            lambda a, b: na.na2d_av(a, b, kernel_size))

    def step():
        attn = qk(q * dim**-0.5, k).softmax(dim=-1)
        av(attn, v).backward(grad)

    before = maxrss_mb()
    step()
    extra = maxrss_mb() - before
    times, cpu_times = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    print(json.dumps({'extra_mb': extra, 'times': times, 'cpu_times': cpu_times,
                      'threads': torch.get_num_threads()}))


def measure(variant, args, tile=None):
    cmd = [sys.executable, __file__, '--child', variant, '--size', str(args.size), '--dim',
           str(args.dim), '--kernel', str(args.kernel), '--repeats', str(args.repeats),
           '--threads', str(args.threads)]
    if tile:
        cmd += ['--tiles', str(tile)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=os.environ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--size', type=int, default=128)
    parser.add_argument('--dim', type=int, default=32)
    parser.add_argument('--kernel', type=int, default=11)
    parser.add_argument('--repeats', type=int, default=5, help='timed calls per subprocess')
    parser.add_argument('--rounds', type=int, default=3, help='subprocesses per variant')
    parser.add_argument('--tiles', type=int, nargs='+', default=[8], help='tile edges to try')
    parser.add_argument('--threads', type=int, default=0, help='torch threads (0: default)')
    parser.add_argument('--child', help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return run_variant(args.child, args.size, args.dim, args.kernel, args.repeats,
                           args.tiles[0], args.threads)

    variants = [('gather', None)] + [(f'tiled T={t}', t) for t in args.tiles]
    results = {name: {'extra_mb': [], 'times': [], 'cpu_times': []} for name, _ in variants}
    for _ in range(args.rounds):
        for name, tile in variants:
            res = measure(name.split()[0], args, tile)
            results[name]['extra_mb'].append(res['extra_mb'])
            results[name]['times'].extend(res['times'])
            results[name]['cpu_times'].extend(res['cpu_times'])
    print(f'torch {torch.__version__}, threads {res["threads"]}, '
          f'shape 1x1x{args.size}x{args.size}x{args.dim}, kernel {args.kernel}, rpb, '
          f'split form fwd+bwd, {args.rounds} subprocesses x {args.repeats} calls')
    medians = {name: {key: statistics.median(vals) for key, vals in res.items()}
               for name, res in results.items()}
    base = medians['gather']
    print(f'{"variant":<12} {"wall s":>8} {"/gather":>8} {"CPU s":>8} {"/gather":>8} '
          f'{"extra MB":>9} {"/gather":>8}')
    for name, med in medians.items():
        print(f'{name:<12} {med["times"]:8.3f} {med["times"] / base["times"]:8.3f} '
              f'{med["cpu_times"]:8.3f} {med["cpu_times"] / base["cpu_times"]:8.3f} '
              f'{med["extra_mb"]:9.1f} {med["extra_mb"] / base["extra_mb"]:8.3f}')


if __name__ == '__main__':
    main()
