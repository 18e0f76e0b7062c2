"""GPU benchmark of issue 13: training step and inference of SegMAN-T/S/B beside SegNeXt-T and
LRFormer-T, peak memory, and which backend each operator used.

For every model: an AMP training step (``AmpOptimWrapper``, as ``tools/train.py --amp``) and
inference (``test_step``) images per second, both through ``tools/analysis/benchmark.py``; the
neighbourhood-attention and selective-scan calls are counted per backend while they run. The
results go to stdout as a table and to ``--json``.

    python benchmarks/gpu_check.py --json work_dirs/gpu_check.json          # on a GPU
    python benchmarks/gpu_check.py --device cpu --tiny                      # checks the script

``--tiny`` shrinks everything (64 x 64, batch 2, one timed step) so that the script itself can
be checked on CPU; its figures mean nothing.
"""
import argparse
import collections
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

import mmseg_segman  # noqa: E402,F401  (registers the plugin's modules)

# isort: split
import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402

from mmseg_segman.ops import selective_scan as ss  # noqa: E402
from mmseg_segman.ops.neighborhood_attention import api, flex  # noqa: E402

MODELS = ['segman-t', 'segman-s', 'segman-b', 'segnext-t', 'lrformer-t']


def _benchmark_tool():
    spec = importlib.util.spec_from_file_location('segman_benchmark_tool',
                                                  REPO / 'tools' / 'analysis' / 'benchmark.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BackendCounter:
    """Counts the backends :func:`na2d` and :func:`selective_scan_fn` choose while active."""

    def __init__(self):
        self.counts = collections.Counter()
        self._saved = []

    def __enter__(self):
        for module, name, prefix in ((api, 'na2d_backend', 'na2d'),
                                     (ss, 'scan_backend', 'scan')):
            original = getattr(module, name)

            def counted(*args, _original=original, _prefix=prefix, **kwargs):
                backend = _original(*args, **kwargs)
                self.counts[f'{_prefix}:{backend}'] += 1
                return backend

            self._saved.append((module, name, original))
            setattr(module, name, counted)
        return self

    def __exit__(self, *exc):
        for module, name, original in reversed(self._saved):
            setattr(module, name, original)
        self._saved.clear()


def _config(name, amp_dtype):
    family = name.split('-')[0]
    cfg = Config.fromfile(str(REPO / 'configs' / family / f'{name}_ade20k.py'))
    if amp_dtype is not None:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
        cfg.optim_wrapper.dtype = amp_dtype
    return cfg


def run(models, device, size, train_batch, infer_batch, repeats, warmup, amp_dtype):
    """Benchmark each model; returns a list of result dicts."""
    tool = _benchmark_tool()
    results = []
    for name in models:
        row = dict(model=name)
        for task, batch in (('train', train_batch), ('infer', infer_batch)):
            cfg = _config(name, amp_dtype if task == 'train' and device == 'cuda' else None)
            if device == 'cuda':
                torch.cuda.empty_cache()
            start = time.perf_counter()
            with BackendCounter() as counter:
                res = tool.benchmark(cfg, (size, size), batch=batch, repeats=repeats,
                                     warmup=warmup, device=device, train=task == 'train')
            row[task] = dict(latency_ms=res['latency_ms']['median'],
                             images_per_s=res['images_per_s'],
                             peak_memory_mib=res['peak_memory_mib'], batch=batch,
                             wall_s=time.perf_counter() - start,
                             backends=dict(sorted(counter.counts.items())))
        results.append(row)
        print(f"{name:<11} train {row['train']['latency_ms']:9.1f} ms/step "
              f"{row['train']['images_per_s']:7.1f} img/s {row['train']['peak_memory_mib']:8.0f}"
              f" MiB | infer {row['infer']['images_per_s']:7.1f} img/s "
              f"{row['infer']['peak_memory_mib']:8.0f} MiB | "
              f"{row['train']['backends']}", flush=True)
    return results


def ratios(results):
    """The issue's goals as ratios to SegNeXt-T (train step time, inference time)."""
    by = {r['model']: r for r in results}
    if 'segman-t' not in by or 'segnext-t' not in by:
        return {}
    s, n = by['segman-t'], by['segnext-t']
    return dict(train_step_vs_segnext_t=s['train']['latency_ms'] / n['train']['latency_ms'],
                inference_vs_segnext_t=n['infer']['images_per_s'] / s['infer']['images_per_s'])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', choices=['cuda', 'cpu'], default='cuda')
    parser.add_argument('--tiny', action='store_true',
                        help='64x64, batch 2, one step: checks the script, figures meaningless')
    parser.add_argument('--models', nargs='+', default=MODELS, choices=MODELS)
    parser.add_argument('--size', type=int, default=512)
    parser.add_argument('--train-batch', type=int, default=8)
    parser.add_argument('--infer-batch', type=int, default=8)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=2,
                        help='untimed steps first (they include Triton/flex compilation)')
    parser.add_argument('--amp-dtype', choices=['float16', 'bfloat16'], default='float16')
    parser.add_argument('--rpb-grad', choices=['window', 'flex'], default=None,
                        help='flex backend: how the rpb gradient is formed (default: module)')
    parser.add_argument('--json', help='write the results here')
    args = parser.parse_args(argv)
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: torch sees no CUDA device; use --device cpu --tiny to '
                     'check the script on CPU')
    if args.tiny:
        args.size, args.train_batch, args.infer_batch = 64, 2, 1
        args.repeats, args.warmup = 1, 0
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.rpb_grad:
        flex.RPB_GRAD = args.rpb_grad
    env = dict(torch=torch.__version__, cuda=torch.version.cuda,
               gpu=torch.cuda.get_device_name() if args.device == 'cuda' else None,
               triton_scan=ss.selective_scan_triton.available(),
               mamba_ssm=ss._mamba_kernel() is not None if args.device == 'cuda' else None,
               rpb_grad=flex.RPB_GRAD, date=time.strftime('%Y-%m-%d'),
               command=' '.join([os.path.basename(sys.argv[0]), *sys.argv[1:]]))
    print(json.dumps(env), flush=True)
    results = run(args.models, args.device, args.size, args.train_batch, args.infer_batch,
                  args.repeats, args.warmup, args.amp_dtype)
    summary = dict(env=env, settings=dict(size=args.size, train_batch=args.train_batch,
                                          infer_batch=args.infer_batch, amp=args.amp_dtype,
                                          repeats=args.repeats, warmup=args.warmup),
                   results=results, ratios=ratios(results))
    print(json.dumps(summary['ratios']), flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == '__main__':
    main()
