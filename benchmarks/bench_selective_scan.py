"""Speed of the pure-PyTorch selective scan at SegMAN-T stage-1 sizes (CPU).

Compares, in one run on one machine:

- ``selective_scan_chunked`` (this package) forward and forward+backward;
- mamba-ssm's ``selective_scan_ref`` forward (one Python step per token), if it imports;
- a straightforward odd/even parallel scan in pure PyTorch with autograd (the usual
  pure-PyTorch alternative), forward and forward+backward;
- the memory-bandwidth floor: the bytes a fused kernel must read and write once (forward:
  u, delta, B, C in and y out; backward: dout, u, delta, B, C in and du, ddelta, dB, dC out)
  divided by the bandwidth of ``dst.copy_(src)`` on a 256 MiB buffer, measured in this run.
  Copy bandwidth is quoted two ways: buffer size / time (what a copy "moves") and
  (read + written bytes) / time (STREAM convention, twice as large).

Usage::

    python benchmarks/bench_selective_scan.py [--length 16384] [--repeats 9] [--threads 2]

Timings are medians of ``--repeats`` interleaved rounds after one warm-up (the copy is
timed in the same rounds). Other processes on the machine slow some rounds; the medians and
the same-run ratios are what to quote. With ``--threads 2`` on a machine where another process
is busy, set ``OMP_WAIT_POLICY=PASSIVE``: spinning OpenMP workers otherwise wait for each other
through whole scheduler time slices.
"""
import argparse
import importlib.util
import math
import os
import resource
import statistics
import sys
import time
import types

import torch
import torch.nn.functional as F

from mmseg_segman.ops.selective_scan import selective_scan_chunked

_LOG2E = 1.0 / math.log(2.0)


def minor_faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def interleaved_times(fns, repeats, limited=None):
    """Wall time of each function over ``repeats`` rounds, one call of each per round (after a
    warm-up call), so that load from other processes hits all of them alike. Functions named
    in ``limited`` (name -> count) run only in the first ``count`` rounds.
    Returns three dicts name -> list: wall seconds, process CPU seconds, and minor page faults
    (each costs about 2 us here: a fresh multi-megabyte buffer from glibc can cost more than
    the arithmetic done in it)."""
    limited = limited or {}
    for fn in fns.values():
        fn()
    wall = {name: [] for name in fns}
    cpu = {name: [] for name in fns}
    faults = {name: [] for name in fns}
    for round_ in range(repeats):
        for name, fn in fns.items():
            if round_ >= limited.get(name, repeats):
                continue
            start, start_cpu = time.perf_counter(), time.process_time()
            start_faults = minor_faults()
            fn()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
            faults[name].append(minor_faults() - start_faults)
    return wall, cpu, faults


def eager_pass_costs(length, channels, repeats, clock='wall'):
    """Median time of single ATen passes over one (channels, length) float32 tensor, into
    preallocated buffers: the building blocks any eager (one kernel per op) scan is made of.
    A forward needs at least exp2 twice (exp(s) inside softplus, and the decay), log1p once
    (softplus), a prefix product and a prefix sum (chunk length SCAN_CHUNK). Also times the
    alternatives the scan decided against: exp, longer chunks, F.softplus."""
    from mmseg_segman.ops.selective_scan import SCAN_CHUNK
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(channels, length, generator=gen) * 0.5 + 0.5
    y = torch.rand(channels, length, generator=gen)
    out = torch.empty_like(x)
    x_log2e = x * _LOG2E
    chunks = (channels, length // SCAN_CHUNK, SCAN_CHUNK)
    long_chunks = (channels, length // 64, 64)
    ops = {
        'exp2': lambda: torch.exp2(x, out=out),
        'exp': lambda: torch.exp(x, out=out),
        'log1p': lambda: torch.log1p(x, out=out),
        'cumprod (chunks)': lambda: torch.cumprod(x.view(chunks), -1, out=out.view(chunks)),
        'cumprod (64-step chunks)': lambda: torch.cumprod(x.view(long_chunks), -1,
                                                          out=out.view(long_chunks)),
        'cumsum (chunks)': lambda: torch.cumsum(x.view(chunks), -1, out=out.view(chunks)),
        'cumsum (64-step chunks)': lambda: torch.cumsum(x.view(long_chunks), -1,
                                                        out=out.view(long_chunks)),
        'mul': lambda: torch.mul(x, y, out=out),
        # the two forms of dt = softplus(delta + bias) (ops/selective_scan_common.py)
        'F.softplus': lambda: torch._C._nn.softplus(x, out=out),
        # (the scan folds the * log2(e) into the bias addition, so it is not timed here)
        'softplus, exp2 form': lambda: torch.exp2(x_log2e, out=out).log1p_(),
    }
    wall, cpu, _ = interleaved_times(ops, repeats)
    times = cpu if clock == 'cpu' else wall
    return {name: statistics.median(t) for name, t in times.items()}


def segman_inputs(batch, groups, channels_per_group, length, seed=0):
    """SegMAN-T stage 1: 4 scan directions x 32 channels, d_state 1, grouped B/C."""
    gen = torch.Generator().manual_seed(seed)
    d = groups * channels_per_group
    u = torch.randn(batch, d, length, generator=gen)
    delta = 0.5 * torch.randn(batch, d, length, generator=gen)
    A = -torch.exp(0.5 * torch.randn(d, 1, generator=gen))
    B = torch.randn(batch, groups, 1, length, generator=gen)
    C = torch.randn(batch, groups, 1, length, generator=gen)
    D = torch.ones(d)
    # SegMAN's dt init: softplus(delta_bias) log-uniform in [1e-3, 0.1].
    dt0 = torch.exp(torch.rand(d, generator=gen) * (math.log(0.1) - math.log(1e-3)) +
                    math.log(1e-3))
    delta_bias = dt0 + torch.log(-torch.expm1(-dt0))
    return [u, delta, A, B, C, D, None, delta_bias]


def oddeven_scan(a, b):
    """x_t = a_t x_{t-1} + b_t along the last dim by recursive odd/even pairing (autograd)."""
    length = a.shape[-1]
    if length == 1:
        return b
    if length % 2:
        a = F.pad(a, (0, 1), value=1.0)
        b = F.pad(b, (0, 1))
    a_even, a_odd = a[..., 0::2], a[..., 1::2]
    b_even, b_odd = b[..., 0::2], b[..., 1::2]
    x_odd = oddeven_scan(a_odd * a_even, a_odd * b_even + b_odd)
    x_even = torch.cat([b_even[..., :1], a_even[..., 1:] * x_odd[..., :-1] + b_even[..., 1:]], -1)
    return torch.stack([x_even, x_odd], -1).flatten(-2)[..., :length]


def selective_scan_oddeven(u, delta, A, B, C, D, z, delta_bias, delta_softplus=True):
    """Plain autograd selective scan (d_state 1, grouped B/C) built on oddeven_scan."""
    b, d, length = u.shape
    g = B.shape[1]
    dt = F.softplus(delta + delta_bias[:, None]) if delta_softplus else delta
    decay = torch.exp(dt * A[:, 0, None])
    inp = (dt * u).view(b, g, d // g, length) * B[:, :, 0, None]
    x = oddeven_scan(decay, inp.view(b, d, length))
    return (x.view(b, g, d // g, length) * C[:, :, 0, None]).view(b, d, length) + u * D[:, None]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--length', type=int, default=16384)
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--repeats', type=int, default=9)
    parser.add_argument('--ref-repeats', type=int, default=3)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--skip-ref', action='store_true', help='skip mamba-ssm selective_scan_ref')
    parser.add_argument('--passes-only', action='store_true',
                        help='only time the single eager passes (exp2, cumprod, softplus, ...)')
    parser.add_argument('--decay-scale', type=float, default=1.0,
                        help='multiply A by this (e.g. 1000: most chunks leave the float range '
                        'and take the step-by-step path)')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    groups, per_group = 4, 32
    if args.passes_only:
        for clock in ('wall', 'cpu'):
            print_passes(eager_pass_costs(args.length, args.batch * groups * per_group,
                                          args.repeats, clock), clock)
        return
    inputs = segman_inputs(args.batch, groups, per_group, args.length)
    inputs[2] = inputs[2] * args.decay_scale
    u, delta, A, B, C, D, z, delta_bias = inputs
    grad_inputs = [t.clone().requires_grad_() if t is not None else None for t in inputs]
    dout = torch.randn_like(u)

    def chunked_fwd():
        with torch.no_grad():
            selective_scan_chunked(*inputs, delta_softplus=True)

    def chunked_fwd_bwd():
        out = selective_scan_chunked(*grad_inputs, delta_softplus=True)
        out.backward(dout)

    def oddeven_fwd():
        with torch.no_grad():
            selective_scan_oddeven(*inputs)

    def oddeven_fwd_bwd():
        selective_scan_oddeven(*grad_inputs).backward(dout)

    copy_src = torch.randn(256 * 2**20 // 4)
    copy_dst = torch.empty_like(copy_src)
    fns = {
        'copy 256 MiB': lambda: copy_dst.copy_(copy_src),
        'chunked fwd': chunked_fwd,
        'chunked fwd+bwd': chunked_fwd_bwd,
        'odd/even fwd': oddeven_fwd,
        'odd/even fwd+bwd': oddeven_fwd_bwd,
    }
    limited = {}
    ref = None if args.skip_ref else load_mamba_ref()
    if ref is not None:
        def ref_fwd():
            with torch.no_grad():
                ref(*inputs, delta_softplus=True)
        fns['mamba selective_scan_ref fwd'] = ref_fwd
        limited['mamba selective_scan_ref fwd'] = args.ref_repeats
    elif not args.skip_ref:
        print('mamba-ssm not installed: skipping selective_scan_ref')
    wall, cpu, faults = interleaved_times(fns, args.repeats, limited)
    elem = 4
    big = u.numel() * elem  # one (b, d, l) float32 tensor
    small = B.numel() * elem  # one (b, g, 1, l) B or C tensor
    floor_bytes = (3 * big + 2 * small) + (5 * big + 4 * small)
    load = os.getloadavg()
    print(f'torch {torch.__version__}, threads {torch.get_num_threads()}, '
          f'load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}')
    print(f'shape: batch {args.batch}, channels {groups}x{per_group}, length {args.length}, '
          f'd_state 1, B/C groups {groups}, softplus + delta_bias, D, '
          f'A scaled by {args.decay_scale:g}')
    for label, times in (('wall time', wall), ('process CPU time', cpu)):
        report(label, times, copy_src.numel() * 4, floor_bytes)
    print('minor page faults per call (medians): ' +
          ', '.join(f'{name} {statistics.median(f):.0f}' for name, f in faults.items()))
    if 'mamba selective_scan_ref fwd' in wall:
        passes = eager_pass_costs(args.length, u.numel() // args.length, args.repeats)
        print_passes(passes)
        floor = (2 * passes['exp2'] + passes['log1p'] + passes['cumprod (chunks)'] +
                 passes['cumsum (chunks)'])
        budget = statistics.median(wall['mamba selective_scan_ref fwd']) / 50
        print(f'unavoidable forward passes (2 exp2 + log1p + cumprod + cumsum): '
              f'{floor * 1e3:.2f} ms; 1/50 of selective_scan_ref: {budget * 1e3:.2f} ms, '
              f'leaving {(budget - floor) * 1e3:.2f} ms = {(budget - floor) / passes["mul"]:.1f} '
              f'mul passes for everything else')
    errors = float32_errors(inputs, dout)
    print('float32 vs float64 (max |error| / max |value|): ' +
          ', '.join(f'{name} {err:.1e}' for name, err in errors.items()))


def print_passes(passes, clock='wall'):
    print(f'--- single eager passes over one (b*d, l) float32 tensor ({clock} time medians), '
          f'threads {torch.get_num_threads()} ---')
    print(', '.join(f'{name} {sec * 1e3:.2f} ms' for name, sec in passes.items()))


def float32_errors(inputs, dout):
    """Relative error of the chunked scan's float32 output and gradients vs float64."""
    names = ('u', 'delta', 'A', 'B', 'C', 'D', 'z', 'delta_bias')
    results = []
    for dtype in (torch.float32, torch.float64):
        leaves = [t.detach().to(dtype).requires_grad_() if t is not None else None
                  for t in inputs]
        out = selective_scan_chunked(*leaves, delta_softplus=True)
        out.backward(dout.to(dtype))
        results.append({'out': out.detach().double(),
                        **{'d' + n: t.grad.double() for n, t in zip(names, leaves)
                           if t is not None}})
    return {k: ((results[0][k] - v).abs().max() / v.abs().max()).item()
            for k, v in results[1].items()}


def report(label, times, copy_bytes, floor_bytes):
    """Print medians, the bandwidth floor and the same-run ratios for one clock."""
    med = {name: statistics.median(t) for name, t in times.items()}
    bw = copy_bytes / med.pop('copy 256 MiB')  # bytes copied per second
    floor = floor_bytes / bw
    floor_stream = floor_bytes / (2 * bw)
    print(f'--- {label} (medians) ---')
    print(f'copy bandwidth (256 MiB copy_): {bw / 1e9:.2f} GB/s copied '
          f'({2 * bw / 1e9:.2f} GB/s read+written)')
    print(f'floor: {floor_bytes / 2**20:.1f} MiB -> {floor * 1e3:.2f} ms '
          f'({floor_stream * 1e3:.2f} ms in the read+written convention)')
    for name, sec in med.items():
        line = (f'{name:30s} median {sec * 1e3:9.2f} ms  min {min(times[name]) * 1e3:9.2f} ms '
                f'({len(times[name])} runs)')
        if 'fwd+bwd' in name:
            line += f'  {sec / floor:5.2f}x floor ({sec / floor_stream:5.2f}x read+written floor)'
        print(line)
    if 'mamba selective_scan_ref fwd' in med:
        print(f"forward speed-up over mamba selective_scan_ref: "
              f"{med['mamba selective_scan_ref fwd'] / med['chunked fwd']:.0f}x")
    print(f"fwd+bwd speed-up over odd/even scan: "
          f"{med['odd/even fwd+bwd'] / med['chunked fwd+bwd']:.2f}x")


def load_mamba_ref():
    """mamba-ssm's selective_scan_ref, or None if mamba-ssm is not installed. Its module
    imports the CUDA extension unconditionally, so a placeholder stands in for it when absent
    (the reference never calls it)."""
    if importlib.util.find_spec('mamba_ssm') is None:
        return None
    if importlib.util.find_spec('selective_scan_cuda') is None:
        sys.modules.setdefault('selective_scan_cuda', types.ModuleType('selective_scan_cuda'))
    from mamba_ssm.ops.selective_scan_interface import selective_scan_ref
    return selective_scan_ref


if __name__ == '__main__':
    main()
