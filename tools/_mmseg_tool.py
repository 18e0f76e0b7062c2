"""Run one of MMSeg's packaged tools (``mmseg/.mim/tools/<name>.py``) with the plugin.

``tools/train.py`` and ``tools/test.py`` are thin entries over MMSeg's own scripts, so
they take exactly MMSeg's arguments. Importing :mod:`mmseg_segman` first applies its
compatibility shims and registers its models before MMSeg builds anything.
"""
import os.path as osp
import runpy
import sys

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def run_mmseg_tool(name):
    # Running from a checkout must use this checkout's package even if another copy is
    # installed.
    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)
    import mmseg

    import mmseg_segman  # noqa: F401

    script = osp.join(osp.dirname(mmseg.__file__), '.mim', 'tools', f'{name}.py')
    if not osp.isfile(script):
        raise FileNotFoundError(
            f'MMSeg tool {name!r} not found at {script}: mmsegmentation must be '
            f'installed with its packaged tools (`pip install mmsegmentation==1.2.2`)')
    if name == 'train':
        _check_pretrained_files(sys.argv[1:])
    sys.argv[0] = script
    from mmseg_segman.compat import PluginError

    try:
        runpy.run_path(script, run_name='__main__')
    except PluginError as err:
        # The plugin's errors name the file or key, the cause and the fix: one message
        # says it all (a traceback would bury it).
        sys.exit(f'error: {plain_message(err)}')


def plain_message(err):
    """The message of ``err``, without the worker traceback a DataLoader wraps around it.

    An exception raised in a dataloader worker is re-raised in the main process with
    the worker's formatted traceback as its message; the original message is its last
    ``<ErrorType>: ...`` line.
    """
    text = str(err)
    marker = f'{type(err).__name__}: '
    if 'Original Traceback' in text and marker in text:
        text = text.rsplit(marker, 1)[1]
    return text.strip()


def _check_pretrained_files(argv):
    """Report a missing pretrained file before MMSeg builds the dataloaders."""
    import argparse

    from mmengine.config import Config, DictAction

    from mmseg_segman.utils.checkpoint import check_pretrained_files

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('config', nargs='?')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args, _ = parser.parse_known_args(argv)
    if not args.config or not osp.isfile(args.config):
        return  # MMSeg's own script reports it
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    try:
        check_pretrained_files(cfg)
    except FileNotFoundError as err:
        sys.exit(f'{args.config}: {err}')
