"""Run one of MMSeg's packaged tools (``mmseg/.mim/tools/<name>.py``) with the plugin.

``tools/train.py`` and ``tools/test.py`` are thin entries over MMSeg's own scripts, so they
take exactly MMSeg's arguments. Before handing over, explicitly and in this order:

1. the workarounds the installed upstream versions need (:mod:`mmseg_segman.shims`; one
   line each, none on the default stack);
2. pre-flight checks, each failing with one ``error:`` line before any config dump: the
   config file, the checkpoint (test), unknown registry types (with the closest names),
   ``--amp`` without a GPU, ``--tta`` without a ``tta_pipeline``, a missing pretrained
   file (train), missing or empty dataset folders;
3. with ``--launcher pytorch`` on a machine without CUDA, the gloo process group (mmengine
   would call ``torch.cuda.set_device``) and the exit-with-launcher signal;
4. MMSeg's script, with checkpoints read weights-only for the whole run; an error of the
   plugin (file, cause, fix) is printed as one ``error:`` line;
5. after a run that finished, the gloo group of step 3 is destroyed before the interpreter
   exits.
"""
import argparse
import importlib.util
import os.path as osp
import runpy
import sys
from typing import List, Optional


def _load_shims():
    """``mmseg_segman.shims`` without the package ``__init__``, which imports mmseg: on
    mainline mmseg with mmcv-lite that import needs the shim first."""
    name = 'mmseg_segman.shims'
    if name in sys.modules:
        return sys.modules[name]
    package = importlib.util.find_spec('mmseg_segman')
    if package is None or not package.submodule_search_locations:
        sys.exit('error: mmseg_segman is not installed in this Python environment; install '
                 'it with `pip install -e .` in the repository (see README.md)')
    path = osp.join(list(package.submodule_search_locations)[0], 'shims.py')
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _parse(name: str, argv: List[str]) -> argparse.Namespace:
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('config', nargs='?')
    if name == 'test':
        parser.add_argument('checkpoint', nargs='?')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    parser.add_argument('--launcher', default='none')
    parser.add_argument('--amp', action='store_true')
    parser.add_argument('--tta', action='store_true')
    parser.add_argument('-h', '--help', action='store_true')
    args, _ = parser.parse_known_args(argv)
    return args


def preflight(name: str, argv: List[str]):
    """The checks of step 2 of the module docstring; returns the config (or None for -h).

    Raises:
        SystemExit: with the one ``error:`` line.
    """
    from mmseg_segman.errors import PluginError

    args = _parse(name, argv)
    if args.help or not args.config:
        return None, args
    if not osp.isfile(args.config):
        sys.exit(f'error: {args.config}: no such config file; pass the path of a config, e.g. '
                 f'configs/segman/segman-t_ade20k.py')
    from mmengine.config import Config

    try:
        cfg = Config.fromfile(args.config)
    except Exception as err:  # a syntax error, a missing _base_ file ...
        sys.exit(f'error: {args.config}: the config cannot be read ({type(err).__name__}: '
                 f'{" ".join(str(err).split())[:300]}); fix the file')
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)

    import mmseg_segman  # noqa: F401  (registers the plugin's modules)
    from mmseg_segman.datasets import check_dataset_folders
    from mmseg_segman.utils.checkpoint import check_pretrained_files
    from mmseg_segman.utils.config_check import check_registry_types

    if name == 'test' and args.checkpoint and '://' not in args.checkpoint and \
            not osp.isfile(args.checkpoint):
        sys.exit(f'error: {args.checkpoint}: no such checkpoint file; pass the .pth file '
                 f'written by tools/train.py (work_dirs/<config>/iter_N.pth) or downloaded '
                 f'from the weights page of configs/<family>/metafile.yml')
    if args.amp and not _cuda_available():
        sys.exit('error: --amp: automatic mixed precision needs a CUDA GPU (mmengine\'s '
                 'AmpOptimWrapper) and none is available; train without --amp on the CPU')
    if args.tta and ('tta_pipeline' not in cfg or 'tta_model' not in cfg):
        missing = [k for k in ('tta_pipeline', 'tta_model') if k not in cfg]
        sys.exit(f'error: {args.config}: --tta needs {" and ".join(missing)} in the config; '
                 f'inherit a dataset base of configs/_base_/datasets (they define '
                 f'tta_pipeline) and configs/_base_/default_runtime.py (tta_model)')
    try:
        check_registry_types(cfg)
        if name == 'train':
            check_pretrained_files(cfg)
        check_dataset_folders(_splits(cfg, name))
    except (PluginError, FileNotFoundError) as err:
        sys.exit(f'error: {args.config}: {err}')
    return cfg, args


def _splits(cfg, name: str):
    """The part of ``cfg`` whose datasets the run builds (train+val, or test)."""
    from mmengine.config import ConfigDict

    keys = ('train_dataloader', 'val_dataloader') if name == 'train' else ('test_dataloader',)
    return ConfigDict({k: cfg[k] for k in keys if cfg.get(k)})


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _start_distributed(cfg, args) -> bool:
    """Step 3 of the module docstring (no-op with CUDA or without ``--launcher pytorch``).
    True if the gloo group was created here (the caller destroys it at the end)."""
    if args.launcher != 'pytorch' or cfg is None:
        return False
    from mmseg_segman.engine.dist import exit_with_launcher, init_cpu_process_group

    dist_cfg = cfg.get('env_cfg', {}).get('dist_cfg', {}) or {}
    if init_cpu_process_group(dist_cfg.get('backend'), dist_cfg.get('timeout')):
        exit_with_launcher()
        return True
    return False


def plain_message(err: BaseException) -> str:
    """The message of ``err``, without the worker traceback a DataLoader wraps around it.

    An exception raised in a dataloader worker is re-raised in the main process with the
    worker's formatted traceback as its message; the original message is its last
    ``<ErrorType>: ...`` line.
    """
    text = str(err)
    marker = f'{type(err).__name__}: '
    if 'Original Traceback' in text and marker in text:
        text = text.rsplit(marker, 1)[1]
    return text.strip()


def run_mmseg_tool(name: str, argv: Optional[List[str]] = None) -> None:
    """Run MMSeg's ``tools/<name>.py`` with ``argv`` (default: this process's arguments)."""
    argv = sys.argv[1:] if argv is None else argv
    _load_shims().apply_needed_shims()
    cfg, args = preflight(name, argv)
    import mmseg

    from mmseg_segman.errors import PluginError
    from mmseg_segman.utils.checkpoint_io import weights_only_checkpoints

    script = osp.join(osp.dirname(mmseg.__file__), '.mim', 'tools', f'{name}.py')
    if not osp.isfile(script):
        sys.exit(f'error: MMSeg tool {name!r} not found at {script}: mmsegmentation must be '
                 f'installed with its packaged tools (see docs/get_started.md)')
    group_started = _start_distributed(cfg, args)
    sys.argv = [script, *argv]
    try:
        with weights_only_checkpoints():
            runpy.run_path(script, run_name='__main__')
    except PluginError as err:
        # The plugin's errors name the file or key, the cause and the fix: one line.
        sys.exit(f'error: {plain_message(err)}')
    if group_started:
        from mmseg_segman.engine.dist import destroy_cpu_process_group

        destroy_cpu_process_group()

