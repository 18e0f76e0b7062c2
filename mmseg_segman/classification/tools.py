"""Entry points of ``tools/train_cls.py`` and ``tools/test_cls.py``: mmpretrain's own scripts
(``mmpretrain/.mim/tools/{train,test}.py``) with the plugin loaded, so they take exactly
mmpretrain's arguments.

``test_cls.py`` also evaluates the authors' ImageNet files: a checkpoint in their layout
(encoder keys without prefix, classifier under ``classifier.`` / ``head.``) is loaded strictly
into the config's classifier (:func:`~mmseg_segman.classification.load_classifier_weights`),
saved in mmpretrain's layout next to the work directory, and that file is evaluated.
"""
import argparse
import os
import os.path as osp
import runpy
import sys
from typing import List, Optional

__all__ = ['run_mmpretrain_tool', 'convert_for_evaluation']


def _script(name: str) -> str:
    import mmpretrain

    script = osp.join(osp.dirname(mmpretrain.__file__), '.mim', 'tools', f'{name}.py')
    if not osp.isfile(script):
        raise FileNotFoundError(
            f'mmpretrain tool {name!r} not found at {script}: mmpretrain must be installed '
            'with its packaged tools (pip install mmpretrain==1.2.0)')
    return script


def convert_for_evaluation(config: str, checkpoint: str, work_dir: Optional[str] = None,
                           cfg_options: Optional[dict] = None) -> str:
    """The checkpoint to evaluate: ``checkpoint`` itself if it is in mmpretrain's layout,
    else a converted copy of the authors' file.

    Args:
        config (str): The classification config.
        checkpoint (str): Local path of an mmpretrain checkpoint or an authors' ImageNet file.
        work_dir (str, optional): Where the converted copy goes; default
            ``work_dirs/<config name>`` as mmpretrain's test script.
        cfg_options (dict, optional): ``--cfg-options`` (e.g. another ``num_classes``).

    Returns:
        str: The path to pass to mmpretrain's test script.
    """
    import torch
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    from mmseg_segman.utils.checkpoint import check_local_file, read_state_dict

    from .convert import is_mmpretrain_layout, load_classifier_weights

    if '://' in checkpoint:
        return checkpoint  # read by mmengine itself; only local files are converted
    check_local_file(checkpoint, 'checkpoint')
    if is_mmpretrain_layout(read_state_dict(checkpoint).state_dict):
        return checkpoint
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    model = MODELS.build(cfg.model)
    found = load_classifier_weights(model, checkpoint)
    work_dir = work_dir or cfg.get('work_dir') or osp.join(
        'work_dirs', osp.splitext(osp.basename(config))[0])
    os.makedirs(work_dir, exist_ok=True)
    stem = osp.basename(checkpoint).split('.')[0]
    target = osp.join(work_dir, f'{stem}_mmpretrain.pth')
    torch.save({'state_dict': model.state_dict(),
                'meta': dict(converted_from=osp.abspath(checkpoint), source=found.source)},
               target)
    print(f'{checkpoint}: authors\' layout ({found.source}), loaded strictly into '
          f'{type(model.backbone).__name__} + {type(model.head).__name__}; evaluating the '
          f'converted copy {target}', flush=True)
    return target


def _test_argv(argv: List[str]) -> List[str]:
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('config', nargs='?')
    parser.add_argument('checkpoint', nargs='?')
    parser.add_argument('--work-dir')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args, _ = parser.parse_known_args(argv)
    if not (args.config and args.checkpoint and osp.isfile(args.config)):
        return argv  # mmpretrain's script reports what is wrong
    converted = convert_for_evaluation(args.config, args.checkpoint, args.work_dir,
                                       args.cfg_options)
    if converted == args.checkpoint:
        return argv
    argv = list(argv)
    argv[argv.index(args.checkpoint)] = converted
    return argv


def _check_pretrained(argv: List[str]) -> None:
    from mmengine.config import Config, DictAction

    from mmseg_segman.utils.checkpoint import check_pretrained_files

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('config', nargs='?')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args, _ = parser.parse_known_args(argv)
    if not args.config or not osp.isfile(args.config):
        return
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    check_pretrained_files(cfg)


def run_mmpretrain_tool(name: str) -> None:
    """Run mmpretrain's ``tools/<name>.py`` (``'train'`` or ``'test'``) on ``sys.argv``.

    The plugin's errors (missing files, checkpoints that do not fit) end the program with one
    ``error:`` line instead of a traceback. Checkpoints are read weights-only for the whole run
    (as in the segmentation tools; mainline mmengine cannot read its own training checkpoints
    weights-only on torch >= 2.6 otherwise).
    """
    from mmseg_segman.errors import PluginError
    from mmseg_segman.utils.checkpoint import CheckpointMismatchError
    from mmseg_segman.utils.checkpoint_io import weights_only_checkpoints

    from . import require_mmpretrain

    try:
        require_mmpretrain()
    except ImportError as err:
        sys.exit(f'error: {err}')
    script = _script(name)
    try:
        if name == 'train':
            _check_pretrained(sys.argv[1:])
        elif name == 'test':
            sys.argv[1:] = _test_argv(sys.argv[1:])
        sys.argv[0] = script
        with weights_only_checkpoints():
            runpy.run_path(script, run_name='__main__')
    except (PluginError, CheckpointMismatchError, FileNotFoundError) as err:
        sys.exit(f'error: {err}')
