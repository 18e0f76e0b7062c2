"""A warning at training start when the total batch differs from the recipe's.

Most failed reproductions reported on the official trackers (SegMAN #23 #38 #46, SegNeXt
#36 #38) trained with fewer GPUs than the recipe and kept the per-GPU batch, so the total
batch, and with it the effective learning-rate schedule, changed silently.
"""
import logging
from typing import TYPE_CHECKING, Optional

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

if TYPE_CHECKING:
    from mmengine.runner import Runner

__all__ = ['BatchSizeCheckHook', 'batch_size_mismatch']


def batch_size_mismatch(total_batch_size: int, world_size: int, batch_size: int,
                        accumulative_counts: int = 1) -> Optional[str]:
    """The warning for a run whose total batch differs from the recipe's, else None.

    Args:
        total_batch_size (int): The recipe's total batch (GPUs x images per GPU).
        world_size (int): Number of training processes.
        batch_size (int): Images per process (``train_dataloader.batch_size``).
        accumulative_counts (int): Gradient accumulation steps
            (``optim_wrapper.accumulative_counts``). Defaults to 1.

    Returns:
        str or None: The message naming the config key to change, or None if the
        run's total equals the recipe's.
    """
    actual = world_size * batch_size * accumulative_counts
    if actual == total_batch_size:
        return None
    accum = f' x {accumulative_counts} accumulation steps' if accumulative_counts != 1 else ''
    msg = (f'This run trains with a total batch of {actual} ({world_size} process(es) x '
           f'train_dataloader.batch_size={batch_size}{accum}), but the recipe of this config '
           f'uses a total batch of {total_batch_size}: the optimisation then differs from the '
           f"recipe's and so may the results.")
    hints = []
    per_process, rest = divmod(total_batch_size, world_size * accumulative_counts)
    if per_process and not rest:
        hints.append(f'set train_dataloader.batch_size={per_process} (e.g. `--cfg-options '
                     f'train_dataloader.batch_size={per_process}`)')
    steps, rest = divmod(total_batch_size, world_size * batch_size)
    if steps > 1 and not rest and steps != accumulative_counts:
        hints.append(f'keep it and set optim_wrapper.accumulative_counts={steps}')
    if hints:
        msg += f' To train with the recipe\'s total on {world_size} process(es), ' \
               f'{" or ".join(hints)}.'
    else:
        msg += (f' {total_batch_size} images cannot be split evenly over {world_size} '
                f'process(es): change the number of processes, '
                f'train_dataloader.batch_size or optim_wrapper.accumulative_counts.')
    return msg


@HOOKS.register_module()
class BatchSizeCheckHook(Hook):
    """Warn before training when world size x batch per GPU is not the recipe's total.

    Enabled for every config through ``custom_hooks`` in
    ``configs/_base_/default_runtime.py``; each leaf config states its recipe's total as the
    top-level key ``total_batch_size`` (so leaves never restate ``custom_hooks`` and every
    base hook stays on). Gradient accumulation (``optim_wrapper.accumulative_counts``)
    counts towards the total. The check only warns: training goes on.

    Args:
        total_batch_size (int, optional): The recipe's total batch. None reads the config's
            ``total_batch_size``; when that is None too the check is off (configs that follow
            no published recipe).
    """

    priority = 'VERY_LOW'

    def __init__(self, total_batch_size: Optional[int] = None) -> None:
        self.total_batch_size = self._checked(total_batch_size)

    @staticmethod
    def _checked(total_batch_size: Optional[int]) -> Optional[int]:
        if total_batch_size is not None and (
                isinstance(total_batch_size, bool) or not isinstance(total_batch_size, int)
                or total_batch_size < 1):
            raise ValueError(f'BatchSizeCheckHook: total_batch_size must be a positive '
                             f'integer or None, got {total_batch_size!r}; set the config key '
                             f"total_batch_size to the recipe's total batch.")
        return total_batch_size

    def before_train(self, runner: 'Runner') -> None:
        total = self.total_batch_size
        if total is None and runner.cfg is not None:
            total = self._checked(runner.cfg.get('total_batch_size'))
        if total is None:
            return
        loader = runner.train_dataloader
        batch_size = getattr(loader, 'batch_size', None)
        if batch_size is None:  # a DataLoader built from a batch_sampler
            batch_size = getattr(getattr(loader, 'batch_sampler', None), 'batch_size', None)
        if batch_size is None:
            return
        accumulative_counts = 1
        optim_cfg = runner.cfg.get('optim_wrapper') if runner.cfg else None
        if isinstance(optim_cfg, dict):
            accumulative_counts = optim_cfg.get('accumulative_counts', 1)
        msg = batch_size_mismatch(total, runner.world_size, batch_size,
                                  accumulative_counts)
        if msg is not None:
            print_log(msg, logger='current', level=logging.WARNING)
