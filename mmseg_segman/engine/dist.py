"""Multi-process training without CUDA, set up explicitly by the plugin's tools.

mmengine's ``init_dist('pytorch')`` calls ``torch.cuda.set_device`` before it creates the
process group, which fails on a CPU-only torch. The Runner skips its own set-up when a
process group already exists, so ``tools/train.py`` / ``tools/test.py`` call
:func:`init_cpu_process_group` first (gloo, with a collective timeout of minutes instead
of torch's 30), and :func:`exit_with_launcher` so a worker ends with its ``torchrun``.
Neither runs on import; both do nothing when CUDA is available or outside torchrun.
"""
import datetime
import gc
import os
import sys
import warnings
from typing import Optional

import torch

__all__ = ['CPU_DIST_TIMEOUT_S', 'cuda_like_device_available', 'init_cpu_process_group',
           'destroy_cpu_process_group', 'exit_with_launcher']

# Collective timeout of CPU (gloo) runs when `env_cfg.dist_cfg.timeout` is not set: a
# stopped or hung process fails the others within minutes. CPU runs synchronise every
# step, so only checkpoint writes and downloads on rank 0 make the others wait longer.
CPU_DIST_TIMEOUT_S = 300


def cuda_like_device_available() -> bool:
    """True when mmengine drives an accelerator itself (CUDA, NPU, MLU, MUSA)."""
    from mmengine.device import is_mlu_available, is_musa_available, is_npu_available

    return bool(torch.cuda.is_available() or is_npu_available() or is_mlu_available()
                or is_musa_available())


def init_cpu_process_group(backend: Optional[str] = None,
                           timeout_s: Optional[float] = None) -> bool:
    """Create the gloo process group of a ``torchrun`` worker on a machine without CUDA.

    Args:
        backend (str, optional): The configured backend (``env_cfg.dist_cfg.backend``);
            anything but ``'gloo'`` is replaced by it, with a warning.
        timeout_s (float, optional): Collective timeout; :data:`CPU_DIST_TIMEOUT_S` if None.

    Returns:
        bool: True if the group was created here; False with an accelerator, outside
        torchrun, or when a group exists already.
    """
    import torch.distributed as dist

    if cuda_like_device_available() or 'RANK' not in os.environ or dist.is_initialized():
        return False
    if backend not in (None, 'gloo'):
        warnings.warn(f"CUDA is not available: using the 'gloo' distributed backend instead "
                      f"of {backend!r} (env_cfg.dist_cfg.backend)")
    timeout = datetime.timedelta(seconds=CPU_DIST_TIMEOUT_S if timeout_s is None else timeout_s)
    dist.init_process_group(backend='gloo', timeout=timeout)
    return True


def destroy_cpu_process_group() -> bool:
    """Wait for every rank, then destroy the default process group before the interpreter
    exits, as torch asks of every program that created one (ranks reach the end of a run at
    different times: rank 0 still writes the last checkpoint).

    ``destroy_process_group`` only drops torch's own references to the group. After a run,
    the finished Runner sits in a reference cycle, and its DDP wrapper's C++ reducer still
    owns the ``ProcessGroupGloo`` and its threads (``gloo_tcp_loop``, ``pt_gloo_runloop``);
    left to the interpreter, they would be torn down inside its finalization (seen in gdb).
    A garbage collection here frees them while the interpreter is whole.

    Known problem not shown to be cured by this (torch 2.13 CPU, gloo): with the CPU
    oversubscribed, a worker of a finished run has aborted at exit with ``terminate called
    without an active exception`` (docs/get_started.md, Tests).

    Returns:
        bool: True if a group was destroyed.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return False
    try:
        dist.barrier()
    finally:
        dist.destroy_process_group()
        gc.collect()
    return True


def exit_with_launcher(sig: Optional[int] = None) -> bool:
    """End this process when the ``torchrun`` launcher that started it dies.

    A SIGKILLed launcher cannot stop its workers, which would train on as orphans (holding
    the port, the cores and the work directory). Linux's ``PR_SET_PDEATHSIG`` makes the
    kernel send ``sig`` to this process when its parent exits.

    Args:
        sig (int, optional): Signal to receive; SIGTERM by default.

    Returns:
        bool: True if armed; False outside torchrun workers or off Linux.
    """
    import ctypes
    import signal

    if not sys.platform.startswith('linux') or 'TORCHELASTIC_RUN_ID' not in os.environ:
        return False
    sig = signal.SIGTERM if sig is None else sig
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        if libc.prctl(pr_set_pdeathsig, int(sig), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() == 1 and not _pid1_is_launcher():
        os.kill(os.getpid(), sig)  # the launcher died before the signal was armed
    return True


def _pid1_is_launcher() -> bool:
    """True if PID 1 is torchrun itself (a container started with it as entry point)."""
    try:
        with open('/proc/1/cmdline', 'rb') as f:
            cmdline = f.read()
    except OSError:
        return True  # cannot tell: never kill on a guess
    return b'torchrun' in cmdline or b'torch.distributed.run' in cmdline
