"""``DataCheckHook``: give the data checks of a run the number of classes of its datasets.

:class:`~mmseg_segman.datasets.LoadCheckedAnnotations` refuses label values outside
``[0, num_classes)``. The number belongs to the dataset (its ``classes``, which a custom
dataset sets through ``metainfo``), not to the pipeline, so this hook hands it over once
the run's datasets are built: every ``LoadCheckedAnnotations`` without an explicit
``num_classes`` gets its dataset's. Nothing else of the dataset changes.
"""
from typing import TYPE_CHECKING

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from ...datasets.checks import bind_num_classes

if TYPE_CHECKING:
    from mmengine.runner import Runner

__all__ = ['DataCheckHook']


@HOOKS.register_module()
class DataCheckHook(Hook):
    """Bind each built dataset's number of classes into its checked annotation loader."""

    priority = 'VERY_HIGH'

    def before_run(self, runner: 'Runner') -> None:
        from mmengine.runner import BaseLoop

        # Runner.train / val / test build their loops (and datasets) before `before_run`.
        for name in ('_train_loop', '_val_loop', '_test_loop'):
            loop = getattr(runner, name, None)
            if isinstance(loop, BaseLoop):
                bind_num_classes(loop.dataloader.dataset)
