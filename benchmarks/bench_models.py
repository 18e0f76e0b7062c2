"""Whole-model CPU speed and memory, every model against MMSeg's SegNeXt-T in the same run.

Models (random weights; every ``init_cfg`` dropped, SyncBN reverted to BN, through
``tools/analysis/benchmark.py``'s ``build_model``):

- ``segman-t``, ``segman-s``, ``segman-b``, ``segnext-t``, ``lrformer-t``: this plugin's
  ADE20K configs (``configs/<family>/<name>_ade20k.py``).
- ``mmseg-segnext-t`` (the baseline every ratio refers to): MMSeg's own packaged config
  ``mmseg/.mim/configs/segnext/segnext_mscan-t_1xb16-adamw-160k_ade20k-512x512.py`` (MSCAN +
  LightHamHead, BN in the backbone).
- ``mmseg-segformer-b0``: MMSeg's packaged SegFormer-B0 (MiT-B0) ADE20K config.

Tasks:

- ``eval``: ``model(x, mode='tensor')`` (backbone + decode head logits, no pre/post
  processing) under ``torch.no_grad()`` in eval mode, batch 1, one random image of each
  ``--sizes`` entry.
- ``train``: ``model.train_step`` (data preprocessor, forward with the loss, backward, one
  AdamW step: lr 6e-5, weight decay 0.01, the same optimiser for every model) on a batch of
  ``--train-batch`` random uint8 images of ``--train-size`` with random labels.

Timing: every model is built once; then ``--rounds`` rounds, each running every (task, size,
thread count, model) once, so load from other processes hits all candidates alike. One
untimed warm-up call per combination comes first. Reported: median wall time of the rounds,
min-max, median process CPU time, and the ratio of the median to MMSeg's SegNeXt-T median of
the same task, size and thread count (the baseline is always added). Threads are set with
``torch.set_num_threads`` between calls in the same process.

Memory (``--memory``): each (model, task, size) runs in a fresh subprocess (1 thread) that
builds the model, makes the inputs, reads its resident set size, runs two calls (warm-up and
one more) and reads its RSS high-water mark (``VmHWM`` of ``/proc/self/status``; ``getrusage``'s
``ru_maxrss`` would report the parent's, which Linux carries over fork and exec). Reported are the
peak RSS of that process (imports and model included) and the growth of the high-water mark
over the RSS before the first call ("extra": what the forward or training step itself needs).
No tracemalloc: it does not see torch's allocations.

``--baseline DIR`` (A/B against an older commit in the same process): DIR holds a copy of
that commit's package (``git archive <commit> mmseg_segman | tar -x -C DIR``). Every module
file of it that differs from this checkout is loaded beside the live one, and each model also
runs as ``<model>@base`` with the old module functions and the old methods of its classes
swapped in for the duration of its calls (instances, weights and inputs are shared). Before
timing, both variants' eval outputs are compared (max absolute difference, bitwise equality).
Ratios in this mode are also given against ``<model>@base``.

``--profile``: torch.profiler on SegMAN-T's eval forward (first size, first thread count):
its top operators by self CPU time, and the inclusive time of the selective scan and the
neighbourhood-attention autograd functions.

Usage::

    python benchmarks/bench_models.py                               # 512 and 1024, eval+train
    python benchmarks/bench_models.py --models segman-t --sizes 512 --threads 1 --rounds 3
    python benchmarks/bench_models.py --sizes 512 1024 1024x2048 --memory --json out.json
    python benchmarks/bench_models.py --profile --sizes 512 --threads 1
    git archive HEAD~1 mmseg_segman | tar -x -C /tmp/old
    python benchmarks/bench_models.py --models segman-t --tasks eval --baseline /tmp/old

On a shared 2-core machine a second OpenMP thread waits for a descheduled one when the other
core is busy (docs/benchmarks.md); check ``uptime`` and prefer quiet periods.
"""
import argparse
import contextlib
import copy
import importlib.util
import inspect
import json
import math
import os
import os.path as osp
import resource
import statistics
import subprocess
import sys
import time

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))

import mmseg_segman  # noqa: E402,F401  (registers the plugin's modules)

# isort: split
import mmseg  # noqa: E402
import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.optim import build_optim_wrapper  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    'mmseg_segman_benchmark_tool', osp.join(REPO_ROOT, 'tools', 'analysis', 'benchmark.py'))
_tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_tool)

BASELINE = 'mmseg-segnext-t'
_MMSEG_CONFIGS = osp.join(osp.dirname(mmseg.__file__), '.mim', 'configs')
MODEL_CONFIGS = {
    'segman-t': osp.join(REPO_ROOT, 'configs', 'segman', 'segman-t_ade20k.py'),
    'segman-s': osp.join(REPO_ROOT, 'configs', 'segman', 'segman-s_ade20k.py'),
    'segman-b': osp.join(REPO_ROOT, 'configs', 'segman', 'segman-b_ade20k.py'),
    'segnext-t': osp.join(REPO_ROOT, 'configs', 'segnext', 'segnext-t_ade20k.py'),
    'lrformer-t': osp.join(REPO_ROOT, 'configs', 'lrformer', 'lrformer-t_ade20k.py'),
    BASELINE: osp.join(_MMSEG_CONFIGS, 'segnext',
                       'segnext_mscan-t_1xb16-adamw-160k_ade20k-512x512.py'),
    'mmseg-segformer-b0': osp.join(_MMSEG_CONFIGS, 'segformer',
                                   'segformer_mit-b0_8xb2-160k_ade20k-512x512.py'),
}
DEFAULT_MODELS = ('segman-t', 'segman-s', 'segman-b', 'segnext-t', 'lrformer-t', BASELINE,
                  'mmseg-segformer-b0')
# One optimiser for every model, so the train step compares models, not recipes.
OPTIM_WRAPPER = dict(type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999),
                                    weight_decay=0.01))
# Autograd functions whose inclusive time --profile reports (their class names).
PROFILE_GROUPS = ('_SelectiveScanChunked', '_NA2DQK', '_NA2DAV')


def parse_size(text):
    """``'512'`` -> (512, 512); ``'1024x2048'`` -> (1024, 2048)."""
    parts = text.lower().split('x')
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        size = ()
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) < 32:
        raise argparse.ArgumentTypeError(
            f'size {text!r}: give S or HxW with both sides >= 32, e.g. 512 or 1024x2048')
    return size


def size_name(size):
    return f'{size[0]}²' if size[0] == size[1] else f'{size[0]}×{size[1]}'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--models', nargs='+', choices=sorted(MODEL_CONFIGS),
                        default=list(DEFAULT_MODELS),
                        help=f'models to time ({BASELINE} is always added)')
    parser.add_argument('--sizes', nargs='+', type=parse_size,
                        default=[(512, 512), (1024, 1024)],
                        help='eval input sizes, S or HxW (default: 512 1024; 1024x2048 is '
                             'slow on 2 cores, run it for final tables)')
    parser.add_argument('--tasks', nargs='+', choices=('eval', 'train'),
                        default=['eval', 'train'])
    parser.add_argument('--threads', nargs='+', type=int, default=[1, 2],
                        help='torch.set_num_threads values, interleaved in every round')
    parser.add_argument('--rounds', type=int, default=5, help='timed rounds (median)')
    parser.add_argument('--train-size', type=parse_size, default=(512, 512))
    parser.add_argument('--train-batch', type=int, default=2)
    parser.add_argument('--memory', action='store_true',
                        help='also measure peak RSS, one subprocess per model/task/size')
    parser.add_argument('--profile', action='store_true',
                        help="only profile SegMAN-T's eval forward (first size and thread "
                             'count) and print its top operators')
    parser.add_argument('--profile-model', default='segman-t', choices=sorted(MODEL_CONFIGS))
    parser.add_argument('--top', type=int, default=15, help='operators listed by --profile')
    parser.add_argument('--baseline', metavar='DIR',
                        help='directory holding an older copy of the mmseg_segman package: '
                             'also time every model with its changed modules (A/B)')
    parser.add_argument('--compile', action='store_true',
                        help='also time every model compiled (torch.compile of a copy\'s '
                             'forward, inductor), as <model>+compiled; the first call of '
                             'each compiled (task, size) is reported as its compile time')
    parser.add_argument('--compile-mode', default=None,
                        help='torch.compile mode (default: inductor\'s default)')
    parser.add_argument('--compile-backend', default='inductor',
                        help='torch.compile backend (default: inductor; aot_eager traces the '
                             'same graphs without generating code, for quick checks)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--json', metavar='FILE', help='also write all results to FILE')
    parser.add_argument('--memory-child', nargs=4, metavar=('MODEL', 'TASK', 'H', 'W'),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ('rounds', 'train_batch'):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be at least 1, '
                         f'got {getattr(args, name)}')
    if min(args.threads) < 1:
        parser.error(f'--threads values must be at least 1, got {args.threads}')
    if BASELINE not in args.models:
        args.models = list(args.models) + [BASELINE]
    if args.baseline is not None and not osp.isdir(osp.join(args.baseline, 'mmseg_segman')):
        parser.error(f'--baseline {args.baseline}: no mmseg_segman package in it; make one with '
                     '`git archive <commit> mmseg_segman | tar -x -C DIR`')
    return args


# ----------------------------------------------------------------------------- A/B baseline
class BaselineSwap:
    """The changed modules of an older package copy, swappable into the live package.

    Each differing ``.py`` file is executed as a module of the live package (so its relative
    imports see the live package) without registering anything; :meth:`active` then puts its
    functions in place of the live ones (in every ``mmseg_segman`` module that imported them)
    and its classes' methods on the live classes, and restores everything on exit.
    """

    def __init__(self, root):
        self.files = []
        self._swaps = []  # (namespace object, attribute, old value, live value)
        pkg_dir = osp.dirname(mmseg_segman.__file__)
        base_dir = osp.join(root, 'mmseg_segman')
        for dirpath, _, names in os.walk(base_dir):
            for fname in sorted(names):
                if not fname.endswith('.py') or fname == '__init__.py':
                    continue
                rel = osp.relpath(osp.join(dirpath, fname), base_dir)
                live_path = osp.join(pkg_dir, rel)
                with open(osp.join(dirpath, fname)) as f:
                    old_src = f.read()
                if not osp.isfile(live_path):
                    continue
                with open(live_path) as f:
                    if f.read() == old_src:
                        continue
                modname = 'mmseg_segman.' + rel[:-3].replace(os.sep, '.')
                live = sys.modules.get(modname)
                if live is None:
                    continue
                self.files.append(rel)
                self._plan(live, self._load(modname, osp.join(dirpath, fname)))

    @staticmethod
    def _load(modname, path):
        spec = importlib.util.spec_from_file_location(modname, path)
        module = importlib.util.module_from_spec(spec)
        module.__package__ = modname.rpartition('.')[0]
        from mmengine.registry import Registry
        register = Registry._register_module
        Registry._register_module = lambda self, *a, **k: None  # names are taken already
        try:
            spec.loader.exec_module(module)
        finally:
            Registry._register_module = register
        return module

    def _plan(self, live, old):
        homes = [m for n, m in sys.modules.items()
                 if m is not None and (n == 'mmseg_segman' or n.startswith('mmseg_segman.'))]
        for name, old_obj in vars(old).items():
            live_obj = getattr(live, name, None)
            if inspect.isfunction(old_obj) and inspect.isfunction(live_obj) and \
                    old_obj.__code__.co_filename == old.__file__:
                for home in homes:  # every module that imported the live function by name
                    if vars(home).get(name) is live_obj:
                        self._swaps.append((home, name, old_obj, live_obj))
            elif inspect.isclass(old_obj) and inspect.isclass(live_obj) and \
                    getattr(old_obj, '__module__', None) == live.__name__:
                for attr, value in vars(old_obj).items():
                    if isinstance(value, (staticmethod, classmethod, property)) or \
                            inspect.isfunction(value):
                        if attr in ('__init__', '__init_subclass__'):
                            continue  # the instances were built by the live code
                        self._swaps.append((live_obj, attr, value, vars(live_obj).get(attr)))

    @contextlib.contextmanager
    def active(self):
        for home, attr, old, _ in self._swaps:
            setattr(home, attr, old)
        try:
            yield
        finally:
            for home, attr, _, live in self._swaps:
                if live is None:
                    delattr(home, attr)
                else:
                    setattr(home, attr, live)


# ----------------------------------------------------------------------------- models and calls
def build(name, shape, seed=0):
    """Model ``name`` with random weights (seeded), on CPU."""
    torch.manual_seed(seed)
    cfg = Config.fromfile(MODEL_CONFIGS[name])
    return cfg, _tool.build_model(cfg, shape)


def make_call(name, cfg, model, task, size, args, seed=0):
    """A no-argument function running one eval forward or one training step of ``model``."""
    if task == 'eval':
        x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(seed))

        def call():
            model.eval()
            with torch.no_grad():
                return model(x, mode='tensor')
        return call
    num_classes = cfg.model.decode_head['num_classes']
    data = _tool.random_batch(args.train_batch, size, num_classes, seed, True)
    state = {}

    def call():
        model.train()
        if 'optim' not in state:  # built lazily: AdamW state is created on the first step
            state['optim'] = build_optim_wrapper(model, OPTIM_WRAPPER)
        losses = model.train_step(data, state['optim'])
        loss = sum(float(v.detach()) for k, v in losses.items() if 'loss' in k)
        if not math.isfinite(loss):
            raise FloatingPointError(f'{name}: non-finite training loss {losses}')
        return losses
    return call


def workloads(args):
    """(task, size) pairs in the order they run."""
    out = []
    if 'eval' in args.tasks:
        out += [('eval', tuple(s)) for s in args.sizes]
    if 'train' in args.tasks:
        out.append(('train', tuple(args.train_size)))
    return out


# ----------------------------------------------------------------------------- timing
def _variants(name, swap):
    """(label suffix, context factory) of each code variant of model ``name`` timed; MMSeg's
    own models do not run this package's code, so they have no baseline variant."""
    live = ('', contextlib.nullcontext)
    if swap is None or name.startswith('mmseg-'):
        return [live]
    return [live, ('@base', swap.active)]


def compare_outputs(args, built, swap):
    """Max |difference| of each model's eval output, live vs baseline code."""
    out = {}
    for name in args.models:
        if len(_variants(name, swap)) == 1:
            continue
        cfg, model = built[name]
        for size in args.sizes:
            call = make_call(name, cfg, model, 'eval', tuple(size), args, args.seed)
            new = call()
            with swap.active():
                old = call()
            out[(name, tuple(size))] = (float((new - old).abs().max()), bool(torch.equal(new, old)))
            print(f'{name} {size_name(size)}: max |live - base| = {out[(name, tuple(size))][0]:.3g}'
                  f', bitwise equal: {out[(name, tuple(size))][1]}', flush=True)
    return out


COMPILED = '+compiled'


def compiled_copy(model, mode=None, backend='inductor'):
    """A copy of ``model`` (same weights) whose ``forward`` is ``torch.compile``d (``backend``,
    inductor by default): what MMEngine's ``compile=True`` compiles, minus the data
    preprocessor and the optimiser step, which stay eager in both variants."""
    twin = copy.deepcopy(model)
    twin.forward = torch.compile(twin.forward, mode=mode, backend=backend)
    return twin


def time_all(args, swap=None):
    """Interleaved rounds; returns {(task, size, threads, label): {'wall': [...], 'cpu': [...]}}
    (label: the model name, with ``@base`` for the baseline code and ``+compiled`` for the
    compiled copy), params, output checks and the first-call (compile) seconds of compiled
    variants."""
    built = {}
    for name in args.models:
        built[name] = build(name, args.train_size, args.seed)
    checks = compare_outputs(args, built, swap) if swap is not None else {}
    twins = {name: compiled_copy(built[name][1], args.compile_mode, args.compile_backend)
             for name in args.models} if args.compile else {}
    calls = {}
    for task, size in workloads(args):
        for name in args.models:
            cfg, model = built[name]
            fn = make_call(name, cfg, model, task, size, args, args.seed)
            for suffix, ctx in _variants(name, swap):
                def call(fn=fn, ctx=ctx):
                    with ctx():
                        return fn()
                calls[(task, size, name + suffix)] = call
            if name in twins:
                calls[(task, size, name + COMPILED)] = make_call(name, cfg, twins[name], task,
                                                                 size, args, args.seed)
    labels = [name + suffix for name in args.models for suffix, _ in _variants(name, swap)]
    labels += [name + COMPILED for name in twins]
    results, compile_s = {}, {}
    keys = [(task, size, threads, label) for task, size in workloads(args)
            for threads in args.threads for label in labels]
    for key in keys:  # warm-up: allocator, oneDNN primitives, AdamW state, compilation
        torch.set_num_threads(key[2])
        start = time.perf_counter()
        calls[(key[0], key[1], key[3])]()
        if key[3].endswith(COMPILED) and (key[0], key[1], key[3]) not in compile_s:
            compile_s[(key[0], key[1], key[3])] = time.perf_counter() - start
            print(f'compiled {key[3]} {key[0]} {size_name(key[1])}: first call '
                  f'{compile_s[(key[0], key[1], key[3])]:.0f} s', file=sys.stderr, flush=True)
        results[key] = {'wall': [], 'cpu': []}
    if twins:  # compiled and eager give the same outputs (eval, first size)
        for task, size in workloads(args):
            if task != 'eval':
                continue
            for name in twins:
                ref, out = calls[(task, size, name)](), calls[(task, size, name + COMPILED)]()
                rel = float((out - ref).abs().max() / ref.abs().max())
                checks[(name + COMPILED, size)] = (rel, bool(torch.equal(out, ref)))
                print(f'{name} {size_name(size)}: compiled vs eager, max relative difference '
                      f'{rel:.2g}', file=sys.stderr, flush=True)
    for r in range(args.rounds):
        for key in keys:
            torch.set_num_threads(key[2])
            fn = calls[(key[0], key[1], key[3])]
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            results[key]['wall'].append(time.perf_counter() - start)
            results[key]['cpu'].append(time.process_time() - start_cpu)
        print(f'round {r + 1}/{args.rounds} done (load average {os.getloadavg()[0]:.1f})',
              file=sys.stderr, flush=True)
    params = {}
    for name in args.models:
        params[name] = sum(p.numel() for p in built[name][1].parameters()) / 1e6
        params[name + '@base'] = params[name + COMPILED] = params[name]
    return results, params, checks, compile_s


def summarise(results):
    """Medians, min-max and ratios to the baseline of the same task, size and threads."""
    summary = {}
    for (task, size, threads, name), times in results.items():
        summary[(task, size, threads, name)] = dict(
            median_ms=statistics.median(times['wall']) * 1e3,
            min_ms=min(times['wall']) * 1e3, max_ms=max(times['wall']) * 1e3,
            cpu_ms=statistics.median(times['cpu']) * 1e3)
    for (task, size, threads, name), row in summary.items():
        base = summary[(task, size, threads, BASELINE)]
        row['ratio'] = row['median_ms'] / base['median_ms']
        row['cpu_ratio'] = row['cpu_ms'] / base['cpu_ms']
        if name.endswith(COMPILED):  # compiled against compiled baseline, and own eager
            row['ratio_to_compiled_baseline'] = row['median_ms'] / summary[
                (task, size, threads, BASELINE + COMPILED)]['median_ms']
            row['speedup_over_eager'] = summary[
                (task, size, threads, name[:-len(COMPILED)])]['median_ms'] / row['median_ms']
        own_base = summary.get((task, size, threads, name.split('@')[0] + '@base'))
        if own_base is not None:
            row['ratio_to_own_base'] = row['median_ms'] / own_base['median_ms']
            row['cpu_ratio_to_own_base'] = row['cpu_ms'] / own_base['cpu_ms']
    return summary


# ----------------------------------------------------------------------------- memory
def _rss_bytes():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def memory_child(args):
    """In a fresh process: RSS before the first call and the high-water mark after two."""
    name, task, h, w = args.memory_child
    torch.set_num_threads(1)
    size = (int(h), int(w))
    cfg, model = build(name, size if task == 'train' else args.train_size, args.seed)
    call = make_call(name, cfg, model, task, size, args, args.seed)
    before = _rss_bytes()
    call()
    call()
    print(json.dumps(dict(before_mib=before / 2**20, peak_mib=_peak_rss_bytes() / 2**20)))


def _peak_rss_bytes():
    """This process's RSS high-water mark. /proc's VmHWM belongs to the process's own address
    space; ``getrusage``'s ru_maxrss is not usable in a child: Linux carries the parent's
    high-water mark over fork and exec."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def measure_memory(args):
    """{(task, size, model): {'peak_mib', 'extra_mib'}} from one subprocess each."""
    out = {}
    for task, size in workloads(args):
        for name in args.models:
            cmd = [sys.executable, osp.abspath(__file__), '--memory-child', name, task,
                   str(size[0]), str(size[1]), '--train-batch', str(args.train_batch),
                   '--seed', str(args.seed)]
            env = dict(os.environ, OMP_NUM_THREADS='1')
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                raise RuntimeError(f'memory run of {name} ({task}, {size_name(size)}) failed '
                                   f'with exit code {proc.returncode}:\n{proc.stderr[-2000:]}')
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            out[(task, size, name)] = dict(peak_mib=res['peak_mib'],
                                           extra_mib=res['peak_mib'] - res['before_mib'])
            print(f'memory {name} {task} {size_name(size)}: peak {res["peak_mib"]:.0f} MiB',
                  file=sys.stderr, flush=True)
    for (task, size, name), row in out.items():
        base = out[(task, size, BASELINE)]
        row['peak_ratio'] = row['peak_mib'] / base['peak_mib']
        row['extra_ratio'] = row['extra_mib'] / base['extra_mib']
    return out


# ----------------------------------------------------------------------------- output
def _model_of(label):
    return label.split('@')[0].split('+')[0]


def print_tables(args, summary, params, memory=None, compile_s=None):
    labels = sorted({key[3] for key in summary}, key=lambda k: (
        args.models.index(_model_of(k)), k))
    for task, size in workloads(args):
        what = ('eval forward, batch 1' if task == 'eval' else
                f'train step, batch {args.train_batch}, forward + backward + AdamW')
        print(f'\n### {what}, {size_name(size)} ({args.rounds} rounds; median wall ms '
              f'[min-max], ratio to {BASELINE}, CPU ms and its ratio)\n')
        head = '| model | params (M) |'
        rule = '|---|---|'
        for threads in args.threads:
            head += f' {threads} thr: ms [min-max] | ratio | CPU ms (ratio) |'
            rule += '---|---|---|'
        if memory:
            head += ' peak RSS MiB (ratio) | extra MiB (ratio) |'
            rule += '---|---|'
        print(head)
        print(rule)
        for name in labels:
            line = f'| {name} | {params[name]:.2f} |'
            for threads in args.threads:
                row = summary[(task, size, threads, name)]
                line += (f' {row["median_ms"]:.0f} [{row["min_ms"]:.0f}-{row["max_ms"]:.0f}] |'
                         f' {row["ratio"]:.2f}× | {row["cpu_ms"]:.0f} ({row["cpu_ratio"]:.2f}×) |')
            if memory and name in args.models:
                m = memory[(task, size, name)]
                line += (f' {m["peak_mib"]:.0f} ({m["peak_ratio"]:.2f}×) |'
                         f' {m["extra_mib"]:.0f} ({m["extra_ratio"]:.2f}×) |')
            print(line)
        if any('ratio_to_own_base' in summary[(task, size, th, n)]
               for th in args.threads for n in args.models):
            print('\nlive / baseline code (median wall; median CPU):')
            for name in (n for n in args.models if not n.startswith('mmseg-')):
                parts = [f'{th} thr {summary[(task, size, th, name)]["ratio_to_own_base"]:.3f}'
                         f' (CPU {summary[(task, size, th, name)]["cpu_ratio_to_own_base"]:.3f})'
                         for th in args.threads]
                print(f'- {name}: ' + ', '.join(parts))
        if compile_s:
            print(f'\ncompiled ({args.compile_backend}, {args.compile_mode or "default"} mode): '
                  'speed-up over eager, '
                  f'ratio to compiled {BASELINE}, first call (compile) time\n')
            head = '| model |' + ''.join(f' {th} thr: speed-up | vs compiled base |'
                                          for th in args.threads) + ' compile s |'
            print(head)
            print('|---|' + '---|---|' * len(args.threads) + '---|')
            for name in args.models:
                label = name + COMPILED
                line = f'| {name} |'
                for th in args.threads:
                    row = summary[(task, size, th, label)]
                    line += (f' {row["speedup_over_eager"]:.2f}× |'
                             f' {row["ratio_to_compiled_baseline"]:.2f}× |')
                line += f' {compile_s[(task, size, label)]:.0f} |'
                print(line)


def profile(args):
    """Top operators (self CPU time) of one model's eval forward."""
    size, threads = tuple(args.sizes[0]), args.threads[0]
    torch.set_num_threads(threads)
    name = args.profile_model
    cfg, model = build(name, args.train_size, args.seed)
    call = make_call(name, cfg, model, 'eval', size, args, args.seed)
    call()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(args.rounds):
            call()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    n = args.rounds
    print(f'\n### {name} eval forward, {size_name(size)}, {threads} thread(s): top operators '
          f'by self CPU time ({n} profiled calls; ms per call)\n')
    print('| operator | self CPU ms | % | calls per forward |')
    print('|---|---|---|---|')
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:args.top]:
        print(f'| `{e.key}` | {e.self_cpu_time_total / 1e3 / n:.1f} | '
              f'{100 * e.self_cpu_time_total / total:.1f} | {e.count // n} |')
    print(f'| total | {total / 1e3 / n:.1f} | 100 | |')
    inclusive = {e.key: e for e in events if e.key in PROFILE_GROUPS}
    if inclusive:
        print('\nInclusive CPU time of the custom operators:\n')
        for key, e in inclusive.items():
            print(f'- `{key}`: {e.cpu_time_total / 1e3 / n:.1f} ms per forward '
                  f'({100 * e.cpu_time_total / total:.1f} %), {e.count // n} calls')
    return events


def main(argv=None):
    args = parse_args(argv)
    if args.memory_child:
        return memory_child(args)
    if args.profile:
        return profile(args)
    print(f'torch {torch.__version__}, {os.cpu_count()} CPUs, load average '
          f'{os.getloadavg()[0]:.1f} at start', flush=True)
    swap = None
    if args.baseline is not None:
        swap = BaselineSwap(args.baseline)
        print(f'baseline {args.baseline}: changed modules {swap.files or "none"}', flush=True)
    results, params, checks, compile_s = time_all(args, swap)
    summary = summarise(results)
    memory = measure_memory(args) if args.memory else None
    print_tables(args, summary, params, memory, compile_s)
    print(f'\nload average {os.getloadavg()[0]:.1f} at the end')
    if args.json:
        rows = [dict(task=t, size=list(s), threads=th, model=m, **v)
                for (t, s, th, m), v in summary.items()]
        mem = [dict(task=t, size=list(s), model=m, **v)
               for (t, s, m), v in (memory or {}).items()]
        with open(args.json, 'w') as f:
            json.dump(dict(params_m=params, timing=rows, memory=mem,
                           compile_s=[dict(task=t, size=list(sz), model=m, seconds=v)
                                      for (t, sz, m), v in compile_s.items()],
                           outputs_vs_baseline=[dict(model=m, size=list(sz), max_abs_diff=d,
                                                     bitwise_equal=e)
                                                for (m, sz), (d, e) in checks.items()]),
                      f, indent=2)
    return summary


if __name__ == '__main__':
    main()
