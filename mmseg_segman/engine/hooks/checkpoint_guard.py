"""``CheckpointGuardHook``: safe checkpoint loading for the runs whose config lists it.

What it does, for one run (nothing before ``before_run`` or after ``after_run``):

* **Weights-only loading.** For the length of the run, mmengine's checkpoint loaders read
  local files and ``http(s)://`` URLs weights-only
  (:func:`~mmseg_segman.utils.checkpoint_io.weights_only_checkpoints`): ``load_from``,
  ``--resume``, ``init_cfg=dict(type='Pretrained')`` of any module, the test checkpoint.
  mmengine 0.10.7 cannot read its own training checkpoints on torch >= 2.6 (mmengine
  #1655), and onedl-mmengine falls back to ``weights_only=False``, which lets a file run
  code; here the exact types mmengine checkpoints contain are allowed, and nothing else.
* **Strict evaluation.** MMEngine loads ``load_from`` non-strictly: missing, unexpected and
  wrongly-shaped weights are logged and skipped. That is what fine-tuning wants, but when
  *evaluating* it scores a partly random model. Outside training (``tools/test.py``,
  ``Runner.val`` / ``Runner.test``) a checkpoint that does not fit the model raises
  :class:`~mmseg_segman.errors.CheckpointMismatchError` naming the keys, unless the config
  sets ``strict_load = False``. Training (``load_from``, ``--resume``) is unchanged.
* **Resume fallback.** ``--resume`` without a path continues from the newest checkpoint of
  the work directory that reads completely, with a warning naming the damaged ones
  (mmengine would pick the one ``last_checkpoint`` names and fail on it).
"""
from typing import TYPE_CHECKING, Optional

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from ...utils.checkpoint import check_state_dict_matches, checkpoint_weights
from ...utils.checkpoint_io import find_latest_loadable_checkpoint, weights_only_checkpoints

if TYPE_CHECKING:
    from mmengine.runner import Runner

__all__ = ['CheckpointGuardHook', 'STRICT_LOAD_KEY']

# The config key that turns strict evaluation loading off.
STRICT_LOAD_KEY = 'strict_load'


def _training(runner: 'Runner') -> bool:
    from mmengine.runner import BaseLoop

    # Runner.train builds its loop before `before_run`; Runner.val / test never build it.
    return isinstance(getattr(runner, '_train_loop', None), BaseLoop)


@HOOKS.register_module()
class CheckpointGuardHook(Hook):
    """Weights-only loading, strict evaluation and the resume fallback; see the module.

    Args:
        weights_only (bool): Read checkpoints weights-only during the run. Default: True.
        resume_fallback (bool): ``--resume`` skips unreadable checkpoints. Default: True.

    The strict evaluation check follows the config key ``strict_load`` (default True).
    """

    priority = 'VERY_HIGH'  # before any other hook loads anything

    def __init__(self, weights_only: bool = True, resume_fallback: bool = True) -> None:
        self.weights_only = weights_only
        self.resume_fallback = resume_fallback
        self._scope = None

    def before_run(self, runner: 'Runner') -> None:
        if self.weights_only and self._scope is None:
            self._scope = weights_only_checkpoints()
            self._scope.__enter__()
        # `_resume` / `_load_from` are what Runner.load_or_resume reads next; an auto-resume
        # (resume=True without load_from) is pointed at a checkpoint that reads.
        if self.resume_fallback and getattr(runner, '_resume', False) and \
                getattr(runner, '_load_from', None) is None:
            try:
                runner._load_from = find_latest_loadable_checkpoint(
                    runner.work_dir, warn=runner.logger.warning)
            except Exception:
                self._leave()
                raise

    def after_load_checkpoint(self, runner: 'Runner', checkpoint: dict) -> None:
        if _training(runner) or not runner.cfg.get(STRICT_LOAD_KEY, True):
            return
        try:
            check_state_dict_matches(
                runner.model, checkpoint_weights(checkpoint),
                str(runner._load_from or 'the checkpoint'),
                f'To evaluate anyway with only the matching weights, set {STRICT_LOAD_KEY} = '
                f'False in the config (--cfg-options {STRICT_LOAD_KEY}=False).')
        except Exception:
            self._leave()
            raise

    def after_run(self, runner: 'Runner') -> None:
        self._leave()

    def _leave(self) -> None:
        scope: Optional[object] = self._scope
        self._scope = None
        if scope is not None:
            scope.__exit__(None, None, None)
