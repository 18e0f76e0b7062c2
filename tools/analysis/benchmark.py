"""Latency, throughput and peak memory of a segmentor, on random weights and inputs.

No dataset and no pretrained weights are needed: the model is built from the config with
every ``init_cfg``/``pretrained`` removed (a checkpoint, if given, is loaded instead), and
the inputs are random images of the requested size. Inference times MMSeg's
``model.test_step`` (data preprocessor, forward with the config's ``test_cfg``, logits
resized to the input, argmax), or with ``--mode tensor`` only ``backbone + decode_head``.
``--train`` times ``model.train_step`` instead: forward with the losses, backward and one
step of the config's ``optim_wrapper``, on random labels::

    python tools/analysis/benchmark.py configs/segman/segman-t_ade20k.py --shape 512 512
    python tools/analysis/benchmark.py configs/segnext/segnext-t_ade20k.py --shape 512 512 \\
        --batch 2 --train --threads 2 --json work_dirs/bench.json

Memory: on CPU the process's peak resident set size (which includes the import and the
model build; the resident size after the build is printed next to it); on CUDA the peak
memory allocated by torch during the timed iterations.
"""
import argparse
import json
import math
import os
import os.path as osp
import statistics
import sys
import time

import torch
from mmengine.config import Config, DictAction
from mmengine.model import revert_sync_batchnorm
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import mmseg_segman  # noqa: F401  (registers the plugin's modules)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Time a segmentor on random inputs (no dataset, no pretrained weights)')
    parser.add_argument('config', help='config file path')
    parser.add_argument('checkpoint', nargs='?', help='optional checkpoint to load')
    parser.add_argument('--shape', type=int, nargs=2, required=True, metavar=('H', 'W'),
                        help='input height and width')
    parser.add_argument('--batch', type=int, default=1, help='images per iteration')
    parser.add_argument('--repeats', type=int, default=10, help='timed iterations')
    parser.add_argument('--warmup', type=int, default=2,
                        help='untimed iterations first (allocator, optimizer state)')
    parser.add_argument('--device', choices=['cpu', 'cuda'], default='cpu')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch intra-op threads (default: torch\'s own choice)')
    parser.add_argument('--train', action='store_true',
                        help='time forward + backward + optimizer step (train_step)')
    parser.add_argument('--mode', choices=['predict', 'tensor'], default='predict',
                        help='inference: the full test_step (predict) or backbone + '
                             'decode_head logits only (tensor); ignored with --train')
    parser.add_argument('--seed', type=int, default=0, help='seed of the random inputs')
    parser.add_argument('--json', metavar='FILE', help='also write the results to FILE')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override config settings, key=value pairs as in tools/train.py')
    args = parser.parse_args(argv)
    for name in ('batch', 'repeats'):
        if getattr(args, name) < 1:
            parser.error(f'--{name} must be at least 1, got {getattr(args, name)}')
    if args.warmup < 0:
        parser.error(f'--warmup must be 0 or more, got {args.warmup}')
    if min(args.shape) < 1:
        parser.error(f'--shape takes two positive sizes, got {args.shape}')
    if args.threads is not None and args.threads < 1:
        parser.error(f'--threads must be at least 1, got {args.threads}')
    if not osp.isfile(args.config):
        parser.error(f'config file {args.config} does not exist')
    if args.checkpoint is not None and not osp.isfile(args.checkpoint):
        parser.error(f'checkpoint file {args.checkpoint} does not exist')
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: torch sees no CUDA device (torch.version.cuda = '
                     f'{torch.version.cuda}); use --device cpu or a CUDA build of torch')
    return args


def _drop_init_cfg(cfg):
    """Remove every ``init_cfg``/``pretrained`` so that no weights are read or downloaded."""
    if isinstance(cfg, dict):
        for key in ('init_cfg', 'pretrained'):
            cfg.pop(key, None)
        for value in cfg.values():
            _drop_init_cfg(value)
    elif isinstance(cfg, (list, tuple)):
        for value in cfg:
            _drop_init_cfg(value)


def build_model(cfg, shape, checkpoint=None, device='cpu'):
    """The config's segmentor with random (or ``checkpoint``) weights, SyncBN as BN.

    The data preprocessor's training ``size`` is set to ``shape`` so that a training
    batch is exactly ``shape`` (it would otherwise be padded to the config's crop).
    """
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model_cfg = cfg.model.copy()
    _drop_init_cfg(model_cfg)
    if model_cfg.get('data_preprocessor') is not None and \
            model_cfg.data_preprocessor.get('size') is not None:
        model_cfg.data_preprocessor.size = tuple(shape)
    model = revert_sync_batchnorm(MODELS.build(model_cfg))
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, map_location='cpu')
    return model.to(device)


def random_batch(batch, shape, num_classes, seed, with_labels):
    """A data batch as MMSeg's dataloader gives it: uint8 CHW images and data samples."""
    gen = torch.Generator().manual_seed(seed)
    height, width = shape
    inputs, samples = [], []
    for _ in range(batch):
        inputs.append(torch.randint(0, 256, (3, height, width), generator=gen,
                                    dtype=torch.uint8))
        sample = SegDataSample(metainfo=dict(img_shape=(height, width),
                                             ori_shape=(height, width),
                                             pad_shape=(height, width)))
        if with_labels:
            labels = torch.randint(0, num_classes, (1, height, width), generator=gen)
            sample.gt_sem_seg = PixelData(data=labels)
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def _num_classes(cfg):
    head = cfg.model.get('decode_head')
    if isinstance(head, (list, tuple)):  # cascade heads: the last one predicts
        head = head[-1]
    if head is None or 'num_classes' not in head:
        raise KeyError(f'{cfg.filename}: model.decode_head.num_classes is not set; the '
                       f'random labels of --train need it')
    return head['num_classes']


def _current_rss_bytes():
    try:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')
    except (OSError, ValueError, AttributeError):
        try:
            import psutil
        except ImportError:
            return None
        return psutil.Process().memory_info().rss


def _peak_rss_bytes():
    try:
        import resource
    except ImportError:  # Windows
        try:
            import psutil
        except ImportError:
            return None
        return getattr(psutil.Process().memory_info(), 'peak_wset', None)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == 'darwin' else peak * 1024  # macOS: bytes; Linux: KiB


def benchmark(cfg, shape, batch=1, repeats=10, warmup=2, device='cpu', train=False,
              mode='predict', checkpoint=None, seed=0):
    """Time ``warmup + repeats`` iterations of inference or of a training step.

    Args:
        cfg (Config): The segmentor's config.
        shape (tuple[int, int]): Input (H, W).
        batch (int): Images per iteration.
        repeats (int): Timed iterations.
        warmup (int): Untimed iterations before them.
        device (str): ``'cpu'`` or ``'cuda'``.
        train (bool): Time ``train_step`` (forward, losses, backward, optimizer step).
        mode (str): Inference only: ``'predict'`` (``test_step``) or ``'tensor'``.
        checkpoint (str, optional): Weights to load instead of random ones.
        seed (int): Seed of the random weights, images and labels.

    Returns:
        dict: ``latency_ms`` (median, min, max, all), ``images_per_s`` (batch / median
        latency), ``peak_memory_mib`` and what it measures, and the set-up.
    """
    torch.manual_seed(seed)
    model = build_model(cfg, shape, checkpoint, device)
    rss_after_build = _current_rss_bytes()
    data = random_batch(batch, shape, _num_classes(cfg) if train else 0, seed, train)
    if train:
        model.train()
        optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)

        def step():
            return model.train_step(data, optim_wrapper)
    else:
        model.eval()
        if mode == 'tensor':
            inputs = model.data_preprocessor(data, False)['inputs']

            def step():
                with torch.no_grad():
                    return model(inputs, mode='tensor')
        else:
            def step():
                with torch.no_grad():
                    return model.test_step(data)

    sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
    for _ in range(warmup):
        step()
    sync()
    if device == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = step()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    if train:
        losses = {k: float(v.detach()) for k, v in out.items()}
        if not all(math.isfinite(v) for v in losses.values()):
            raise FloatingPointError(f'non-finite training losses: {losses}')

    if device == 'cuda':
        peak, peak_what = torch.cuda.max_memory_allocated(), 'CUDA max allocated (timed)'
    else:
        peak, peak_what = _peak_rss_bytes(), 'CPU peak RSS (whole process)'
    median = statistics.median(times)
    mib = 2.0**20
    return dict(
        config=cfg.filename, shape=list(shape), batch=batch, device=device,
        threads=torch.get_num_threads(), task='train_step' if train else
        ('test_step' if mode == 'predict' else 'tensor forward'),
        warmup=warmup, repeats=repeats,
        params_m=sum(p.numel() for p in model.parameters()) / 1e6,
        latency_ms=dict(median=median, min=min(times), max=max(times), all=times),
        images_per_s=batch / (median / 1e3),
        peak_memory_mib=None if peak is None else peak / mib, peak_memory=peak_what,
        rss_after_build_mib=None if rss_after_build is None else rss_after_build / mib)


def main(argv=None):
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.device == 'cuda':
        torch.backends.cudnn.benchmark = bool(
            cfg.get('env_cfg', {}).get('cudnn_benchmark', False))
    res = benchmark(cfg, tuple(args.shape), args.batch, args.repeats, args.warmup,
                    args.device, args.train, args.mode, args.checkpoint, args.seed)
    lat = res['latency_ms']
    memory = 'n/a' if res['peak_memory_mib'] is None else f"{res['peak_memory_mib']:.1f} MiB"
    if res['rss_after_build_mib'] is not None and args.device == 'cpu':
        memory += f" ({res['rss_after_build_mib']:.1f} MiB after building the model)"
    print(f"config: {res['config']}\n"
          f"task: {res['task']}, input {args.batch}x3x{args.shape[0]}x{args.shape[1]}, "
          f"device {args.device}, {res['threads']} thread(s), {res['params_m']:.2f} M params\n"
          f"latency per iteration: median {lat['median']:.2f} ms, min {lat['min']:.2f} ms, "
          f"max {lat['max']:.2f} ms ({args.repeats} timed after {args.warmup} warm-up)\n"
          f"throughput: {res['images_per_s']:.2f} images/s\n"
          f"peak memory, {res['peak_memory']}: {memory}")
    if args.json:
        os.makedirs(osp.dirname(osp.abspath(args.json)), exist_ok=True)
        with open(args.json, 'w') as f:
            json.dump(res, f, indent=2)
    return res


if __name__ == '__main__':
    main()
