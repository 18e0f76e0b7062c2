"""Exact resume: the random-number state travels with every checkpoint.

MMEngine saves weights, optimizer, schedulers and the message hub, but no random state,
so after ``--resume`` dropout, drop-path and the data augmentation draw different numbers
than the uninterrupted run would have. :class:`RandomStateHook` stores, in each
checkpoint, the state of every generator a training step uses (Python ``random``, NumPy's
global generator, torch CPU and CUDA) for every process, plus the data seeds, and puts
them back on resume exactly where the uninterrupted run was.

Where the state is put back matters. On resume MMEngine's ``IterBasedTrainLoop`` skips
the iterations already trained by fetching (and discarding) that many batches, which
replays the sampler and the dataloader workers (each worker is seeded from the run's seed
by MMEngine's ``worker_init_fn`` and only ever sees its own share of the batches, so the
replay puts it where it was). With ``num_workers=0`` that replay runs the augmentation in
the main process and draws from the generators, so the saved state is restored only
after it: just before the first new batch is fetched. Validation is run with its own copy
of the state (its dataloader draws a seed from torch's generator), so validating or not at
some iteration leaves training unchanged.

Dataloader workers, sampler and seeds: nothing of theirs needs saving beyond the run's
seed, which MMEngine keeps in ``meta['seed']``; when the resumed run was started with
another seed (``randomness.seed`` unset draws a new one) the hook rebuilds the training
dataloader with the checkpoint's seed so the sampler order and worker seeds match.

Limits: an ``EpochBasedTrainLoop`` resumed from a checkpoint saved in the middle of an
epoch restarts that epoch (MMEngine's behaviour), and a run resumed with another number
of processes cannot repeat the original one; both are reported with a warning.
"""
import random
import warnings
from typing import TYPE_CHECKING, List, Optional

import numpy as np
import torch
from mmengine.dist import all_gather_object, get_dist_info
from mmengine.hooks import CheckpointHook, Hook
from mmengine.runner import BaseLoop
from mmseg.registry import HOOKS

if TYPE_CHECKING:
    from mmengine.runner import Runner

__all__ = ['RandomStateHook', 'capture_random_state', 'restore_random_state']

_FORMAT = 1
_KEY = 'random_state'


def capture_random_state() -> dict:
    """The state of Python's, NumPy's and torch's (CPU and CUDA) global generators.

    Only tensors, numbers, strings and tuples, so a weights-only ``torch.load`` reads it.

    Returns:
        dict: Input for :func:`restore_random_state`.
    """
    np_state = np.random.get_state(legacy=False)
    state = dict(
        python=random.getstate(),
        numpy=dict(bit_generator=np_state['bit_generator'],
                   key=torch.from_numpy(np_state['state']['key'].astype(np.int64)),
                   pos=int(np_state['state']['pos']), has_gauss=int(np_state['has_gauss']),
                   gauss=float(np_state['gauss'])),
        torch=torch.get_rng_state(),
        cuda=[])
    # Only when CUDA is already in use: asking for its state would initialise it.
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def restore_random_state(state: dict) -> None:
    """Put back a state captured by :func:`capture_random_state`.

    Args:
        state (dict): The captured state.
    """
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))
    np_state = state['numpy']
    np.random.set_state(dict(
        bit_generator=np_state['bit_generator'],
        state=dict(key=np_state['key'].numpy().astype(np.uint32), pos=np_state['pos']),
        has_gauss=np_state['has_gauss'], gauss=np_state['gauss']))
    torch.set_rng_state(state['torch'])
    if state['cuda'] and torch.cuda.is_available():
        if len(state['cuda']) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state['cuda'])
        else:
            warnings.warn(f'the checkpoint holds the CUDA random state of '
                          f'{len(state["cuda"])} devices but {torch.cuda.device_count()} '
                          f'are visible: CUDA random numbers are not restored')


class _RestoreBeforeNext:
    """Iterator proxy: after ``skip`` batches, restore the random state, then hand back."""

    def __init__(self, loop, state: dict, skip: int):
        self._loop, self._inner = loop, loop.dataloader_iterator
        self._state, self._left = state, skip

    def __iter__(self):
        return self

    def __next__(self):
        if self._left > 0:
            self._left -= 1
            return next(self._inner)
        restore_random_state(self._state)
        self._loop.dataloader_iterator = self._inner
        return next(self._inner)

    def skip_iter(self, num_iters: int) -> None:
        """onedl-mmengine's loop skips the trained iterations with ``skip_iter``, which
        advances the sampler without loading the batches and rebuilds the iterator, whose
        worker seeds would then come from the restored state. Replaying the batches, as
        mainline mmengine does, keeps the workers and their random streams where the
        uninterrupted run had them."""
        for _ in range(num_iters):
            next(self)

    def __getattr__(self, name):
        return getattr(self._inner, name)


@HOOKS.register_module()
class RandomStateHook(Hook):
    """Save the random state with each checkpoint and restore it on resume.

    See the module docstring for what is saved and when it is put back. The hook does
    nothing when a checkpoint is loaded with ``load_from`` (fine-tuning starts from the
    configured seed), and it keeps validation from changing the training random streams.

    Args:
        isolate_validation (bool): Give validation its own copy of the random state, so
            that training continues as if it had not run. Defaults to True (needed for a
            resumed run to repeat an uninterrupted one when validation follows a
            checkpoint).
    """

    priority = 'NORMAL'  # before CheckpointHook (VERY_LOW) in after_train_iter

    def __init__(self, isolate_validation: bool = True):
        self.isolate_validation = isolate_validation
        self._gathered: Optional[List[dict]] = None
        self._gathered_at: Optional[tuple] = None
        self._val_state: Optional[dict] = None
        self._loaded: Optional[dict] = None
        self._missing = False

    # ---------------------------------------------------------------- saving
    def _position(self, runner: 'Runner') -> tuple:
        return runner.epoch, runner.iter

    def _all_ranks(self, runner: 'Runner') -> List[dict]:
        """This process's state, gathered from every process in distributed runs."""
        state = capture_random_state()
        _, world_size = get_dist_info()
        return all_gather_object(state) if world_size > 1 else [state]

    def _checkpoint_hooks(self, runner: 'Runner'):
        return [h for h in runner.hooks if isinstance(h, CheckpointHook)]

    def after_train_iter(self, runner: 'Runner', batch_idx: int,
                         data_batch: Optional[dict] = None, outputs: Optional[dict] = None) -> None:
        """Gather every process's state when a CheckpointHook is about to save."""
        if get_dist_info()[1] == 1:
            return  # one process: the state is read when the checkpoint is written
        due = any(not h.by_epoch and (h.every_n_train_iters(runner, h.interval, h.save_begin)
                                      or (h.save_last and h.is_last_train_iter(runner)))
                  for h in self._checkpoint_hooks(runner))
        if due:
            # runner.iter is not yet advanced here; the saving hook sees the same value.
            self._gathered, self._gathered_at = self._all_ranks(runner), \
                self._position(runner)

    def after_train_epoch(self, runner: 'Runner') -> None:
        """Gather every process's state before an epoch checkpoint."""
        if get_dist_info()[1] == 1:
            return
        due = any(h.by_epoch and (h.every_n_epochs(runner, h.interval, h.save_begin)
                                  or (h.save_last and h.is_last_train_epoch(runner)))
                  for h in self._checkpoint_hooks(runner))
        if due:
            self._gathered, self._gathered_at = self._all_ranks(runner), \
                self._position(runner)

    def before_save_checkpoint(self, runner: 'Runner', checkpoint: dict) -> None:
        """Add ``checkpoint['random_state']`` (runs on rank 0 only)."""
        rank, world_size = get_dist_info()
        if self._val_state is not None:
            states = self._val_state  # saved during validation (e.g. best checkpoint)
        elif world_size > 1 and self._gathered_at == self._position(runner):
            states = self._gathered
        else:
            states = [capture_random_state()]
            if world_size > 1:
                runner.logger.warning(
                    'RandomStateHook: this checkpoint was saved outside the steps '
                    'CheckpointHook announces, so it holds only rank 0\'s random state; a '
                    'resume from it is not bit-exact on the other ranks')
        loader = runner.train_dataloader
        checkpoint[_KEY] = dict(
            format=_FORMAT, world_size=world_size, ranks=states,
            seed=runner.seed, num_workers=getattr(loader, 'num_workers', None),
            sampler_seed=getattr(loader.sampler, 'seed', None))

    # ---------------------------------------------------------------- restoring
    def after_load_checkpoint(self, runner: 'Runner', checkpoint: dict) -> None:
        """Remember the saved state; it is applied once the resume is complete."""
        saved = checkpoint.get(_KEY)
        meta = checkpoint.get('meta', {})
        self._loaded = None if saved is None else dict(saved, iter=meta.get('iter'),
                                                       epoch=meta.get('epoch'))
        self._missing = saved is None

    def before_train(self, runner: 'Runner') -> None:
        """On resume: match the data seeds, then restore the state at the right moment."""
        loaded, self._loaded = self._loaded, None
        loop = runner.train_loop
        if loaded is None or runner.iter == 0 or loaded['iter'] != runner.iter:
            if self._missing and runner.iter > 0:
                runner.logger.warning(
                    'RandomStateHook: the resumed checkpoint holds no random state '
                    '(written without this hook): dropout and augmentation after the '
                    'resume differ from an uninterrupted run')
            return  # a fresh run, or weights loaded with load_from
        if loaded.get('format') != _FORMAT:
            runner.logger.warning(f'RandomStateHook: unknown random-state format '
                                  f'{loaded.get("format")!r}; not restored')
            return
        rank, world_size = get_dist_info()
        if loaded['world_size'] != world_size or len(loaded['ranks']) != world_size:
            runner.logger.warning(
                f'RandomStateHook: the checkpoint was written by {loaded["world_size"]} '
                f'process(es) ({len(loaded["ranks"])} random states) and this run has '
                f'{world_size}: the random state is not restored, so the resumed run does '
                f'not repeat the original one')
            return
        self._match_data_seed(runner, loaded)
        state = loaded['ranks'][rank]
        if hasattr(loop, 'dataloader_iterator'):
            # IterBasedTrainLoop: restore after its replay of the trained iterations.
            loop.dataloader_iterator = _RestoreBeforeNext(loop, state, runner.iter)
        else:
            if runner.iter != loaded['epoch'] * len(loop.dataloader) and hasattr(
                    loop, 'max_epochs'):
                runner.logger.warning(
                    'RandomStateHook: the checkpoint was saved inside an epoch; '
                    'EpochBasedTrainLoop restarts that epoch, so the resumed run does '
                    'not repeat the original one')
            restore_random_state(state)

    def _match_data_seed(self, runner: 'Runner', loaded: dict) -> None:
        """Rebuild the training dataloader if it was built with another seed."""
        loop = runner.train_loop
        saved_seed = loaded.get('sampler_seed')
        current = getattr(loop.dataloader.sampler, 'seed', None)
        if saved_seed is None or current is None or saved_seed == current:
            return
        runner.logger.warning(
            f'RandomStateHook: the training dataloader was built with seed {current} but '
            f'the checkpoint was trained with {saved_seed}; rebuilding it with '
            f'{saved_seed} so that the data order and the worker seeds continue the '
            f'original run (set randomness.seed to avoid this)')
        from mmengine.runner.loops import _InfiniteDataloaderIterator

        old_iterator = getattr(loop, 'dataloader_iterator', None)
        loop.dataloader = runner.build_dataloader(
            runner.cfg.train_dataloader, seed=loaded.get('seed', saved_seed),
            diff_rank_seed=runner._randomness_cfg.get('diff_rank_seed', False))
        if old_iterator is not None:
            inner = getattr(old_iterator, '_iterator', None)
            if hasattr(inner, '_shutdown_workers'):
                inner._shutdown_workers()
            loop.dataloader_iterator = _InfiniteDataloaderIterator(loop.dataloader)

    # ---------------------------------------------------------------- validation
    def before_val(self, runner: 'Runner') -> None:
        """Keep the training state aside (every process's, for best-checkpoint saves)."""
        # Only inside training (the train loop is built); a standalone val/test run has
        # no training stream to protect.
        if self.isolate_validation and isinstance(getattr(runner, '_train_loop', None),
                                                  BaseLoop):
            self._val_state = self._all_ranks(runner)

    def after_val(self, runner: 'Runner') -> None:
        """Training continues from the state it had before validation."""
        if self._val_state is not None:
            rank = get_dist_info()[0]
            restore_random_state(self._val_state[rank])
            self._val_state = None
