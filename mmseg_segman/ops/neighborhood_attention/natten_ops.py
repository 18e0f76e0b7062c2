"""NATTEN backends (CUDA): natten's split ops (natten < 0.20) and its fused op (>= 0.20).

natten changed its interface at 0.20: earlier releases offer ``natten.functional.na2d_qk`` /
``na2d_av`` on this package's (B, heads, H, W, D) layout with a relative positional bias;
0.20 removed them (and the bias) and offers a fused ``natten.na2d`` on the heads-last layout
(B, H, W, heads, D), which picks among its own kernels (CUTLASS FNA for several GPU
generations, or flex attention). The dispatch asks this module what the installed natten can
run for a call and uses it only then.
"""
from typing import Callable, Optional, Tuple

from torch import Tensor

__all__ = ['split_ops', 'fused_supports', 'na2d_fused']

# natten's own fallback inside its fused op: eager flex attention, which forms all
# H*W x H*W scores; the flex backend of this package compiles flex attention instead.
_NATTEN_FLEX_BACKEND = 'flex-fna'


def _natten():
    try:
        import natten
    except ImportError:
        return None
    return natten


def _version(natten) -> Tuple[int, int]:
    major, minor = (int(part) for part in natten.__version__.split('.')[:2])
    return major, minor


def split_ops() -> Optional[Tuple[Callable, Callable]]:
    """natten < 0.20's ``(na2d_qk, na2d_av)`` if installed, else None.

    They share this package's layout and rpb convention; they take odd kernel sizes only.
    """
    natten = _natten()
    if natten is None or _version(natten) >= (0, 20):
        return None  # natten 0.20 removed the split (unfused) ops
    functional = getattr(natten, 'functional', None)
    if not hasattr(functional, 'na2d_qk'):  # older releases named them differently
        return None
    return functional.na2d_qk, functional.na2d_av


def _fused_op() -> Optional[Callable]:
    """natten >= 0.20's fused ``na2d`` (heads-last layout, no rpb argument), else None."""
    natten = _natten()
    if natten is None or _version(natten) < (0, 20):
        return None
    return natten.na2d


def _heads_last(x: Tensor) -> Tensor:
    return x.permute(0, 2, 3, 1, 4)


def fused_supports(q: Tensor, k: Tensor, v: Tensor) -> bool:
    """Whether the installed natten's fused op has a kernel of its own for these tensors.

    natten's backend chooser answers (it checks device, compute capability, dtype and head
    dim); a call it would hand to its eager flex fallback counts as unsupported.
    """
    natten = _natten()
    if _fused_op() is None:
        return False
    choose = getattr(getattr(natten, 'functional', None), 'choose_backend', None)
    if choose is None:
        return False  # cannot tell what this natten would run
    try:
        backend = choose(_heads_last(q), _heads_last(k), _heads_last(v), torch_compile=False)
    except (NotImplementedError, ValueError):
        return False
    return backend != _NATTEN_FLEX_BACKEND


def na2d_fused(q: Tensor, k: Tensor, v: Tensor, kernel_size: int, dilation: int,
               scale: float) -> Tensor:
    """natten >= 0.20's fused op on the (B, heads, H, W, D) layout of this package."""
    out = _fused_op()(_heads_last(q), _heads_last(k), _heads_last(v), kernel_size,
                      dilation=dilation, scale=scale)
    return out.permute(0, 3, 1, 2, 4)
