"""FLOPs of segmentors, counted the way the SegMAN paper counts them.

Convention (fvcore's, used by the official SegMAN code): one multiply-add is one FLOP; only
matrix products, convolutions, norms and a few resampling ops are counted, element-wise ops
(activations, additions, softmax) are not.

Design: MMEngine's :class:`~mmengine.analysis.FlopAnalyzer` (a port of fvcore) traces the
model with ``torch.jit`` and counts every ATen op it knows. Our own operators are autograd
Functions, which a trace records as one opaque ``prim::PythonOp.<ClassName>`` node; this
module gives those nodes handlers with the closed-form counts the paper used:

* selective scan: ``9*B*L*D*N + B*D*L`` per call (mamba-ssm issue #110; u (B, D, L),
  A (D, N)), as the official ``selective_scan_flop_jit``;
* neighborhood attention, as natten's ``qk_2d_rpb_flop`` / ``av_2d_flop``:
  q.k ``B*h*H*W*k²*(head_dim + 1)`` plus ``B*h*H*W*k²`` with a positional bias,
  attn.v ``B*h*H*W*k²*head_dim``;
* ``aten::scaled_dot_product_attention`` (FlopAnalyzer has no handler): the two matrix
  products ``B*h*Lq*Lk*(Dqk + Dv)``, what the official einsum form counts.

The Function class names are not hard-coded: :func:`custom_op_handles` traces each public op
once on tiny tensors and reads the name of the node it records, so the handlers follow the
ops if their implementation changes. A traced model that still contains a ``PythonOp`` without
a handler is an error (its FLOPs would silently be zero).
"""
import warnings
from math import prod
from typing import Callable, Dict, Sequence

import torch
import torch.nn as nn
from mmengine.analysis import FlopAnalyzer
from mmengine.analysis.jit_handles import get_shape

from mmseg_segman.ops import na2d_av, na2d_qk, selective_scan_fn

__all__ = [
    'selective_scan_flops', 'na2d_qk_flops', 'na2d_av_flops', 'sdpa_flops',
    'custom_op_handles', 'flop_analyzer'
]


def selective_scan_flops(batch: int, dim: int, length: int, d_state: int, with_d: bool = True,
                         with_z: bool = False) -> int:
    """FLOPs of one selective scan (mamba-ssm issue #110 formula).

    Args:
        batch (int): B.
        dim (int): Channels D (all scan directions of a call together).
        length (int): Sequence length L.
        d_state (int): State size N.
        with_d (bool): Count the ``D * u`` skip term. Default: True.
        with_z (bool): Count the ``silu(z)`` gate. Default: False.

    Returns:
        int: ``9*B*L*D*N`` plus ``B*D*L`` for each of the skip and the gate.
    """
    flops = 9 * batch * length * dim * d_state
    return flops + batch * dim * length * (int(with_d) + int(with_z))


def na2d_qk_flops(batch: int, heads: int, height: int, width: int, head_dim: int,
                  kernel_size: int, rpb: bool = False) -> int:
    """FLOPs of 2-D neighborhood q.k, as natten's ``qk_2d_rpb_flop``.

    natten counts the products, one extra op per logit, and one more per logit with a bias.

    Returns:
        int: ``B*h*H*W*k²*(head_dim + 1 + rpb)``.
    """
    return batch * heads * height * width * kernel_size**2 * (head_dim + 1 + int(rpb))


def na2d_av_flops(batch: int, heads: int, height: int, width: int, head_dim: int,
                  kernel_size: int) -> int:
    """FLOPs of 2-D neighborhood attn.v, as natten's ``av_2d_flop``: ``B*h*H*W*k²*head_dim``."""
    return batch * heads * height * width * kernel_size**2 * head_dim


def sdpa_flops(query_shape: Sequence[int], key_shape: Sequence[int],
               value_shape: Sequence[int]) -> int:
    """Multiply-adds of ``softmax(q k^T) v``: ``prod(q.shape[:-1]) * Lk * (Dqk + Dv)``."""
    return prod(query_shape[:-1]) * key_shape[-2] * (query_shape[-1] + value_shape[-1])


# ----------------------------------------------------------------------------- jit handlers
# A handler gets the traced node's tensor inputs and outputs (torch._C.Value); non-tensor
# arguments (kernel size, flags) are not among them, so sizes are read from tensor shapes.
def _scan_handle(inputs, outputs):
    batch, dim, length = get_shape(inputs[0])  # u
    d_state = get_shape(inputs[2])[1]  # A (D, N)
    # Like the official handler, the skip term is always counted (every model passes D).
    return selective_scan_flops(batch, dim, length, d_state, with_d=True)


def _na_qk_handle(inputs, outputs):
    batch, heads, height, width, head_dim = get_shape(inputs[0])
    kk = get_shape(outputs[0])[-1]
    # na2d_qk adds the positional bias in place to the Function's output.
    rpb = any(use.user.kind() == 'aten::add_' for use in outputs[0].uses())
    return batch * heads * height * width * kk * (head_dim + 1 + int(rpb))


def _na_av_handle(inputs, outputs):
    batch, heads, height, width, kk = get_shape(inputs[0])
    return batch * heads * height * width * kk * get_shape(outputs[0])[-1]


def _sdpa_handle(inputs, outputs):
    return sdpa_flops(*(get_shape(v) for v in inputs[:3]))


def _python_op_name(fn, *args):
    """The ``prim::PythonOp.<Name>`` node that calling ``fn(*args)`` records in a trace."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # tracer warnings about Python control flow
        graph = torch.jit.trace(fn, args, check_trace=False).graph
    names = {f'prim::PythonOp.{n.pyname()}' for n in graph.nodes() if n.kind() == 'prim::PythonOp'}
    if len(names) != 1:
        raise RuntimeError(f'expected {fn.__name__} to record one autograd Function in a trace '
                           f'on CPU, found {sorted(names) or "none"}')
    return names.pop()


def custom_op_handles() -> Dict[str, Callable]:
    """Handlers for our operators, keyed by the trace node names they record on CPU.

    Returns:
        dict[str, callable]: op name -> ``handle(inputs, outputs) -> int``, for
        :meth:`FlopAnalyzer.set_op_handle`, in the order q.k, attn.v, selective scan, SDPA.
    """
    q = torch.zeros(1, 1, 3, 3, 2)
    attn = torch.zeros(1, 1, 3, 3, 9)
    u = torch.zeros(1, 2, 4)
    ones = torch.ones(2)
    bc = torch.zeros(1, 1, 4)

    def qk(q, k):
        return na2d_qk(q, k, 3)

    def av(attn, v):
        return na2d_av(attn, v, 3)

    def scan(u, delta, A, B, C, D):
        return selective_scan_fn(u, delta, A, B, C, D, delta_softplus=True)

    return {
        _python_op_name(qk, q, q): _na_qk_handle,
        _python_op_name(av, attn, q): _na_av_handle,
        _python_op_name(scan, u, u, -ones[:, None], bc, bc, ones): _scan_handle,
        'aten::scaled_dot_product_attention': _sdpa_handle,
    }


def flop_analyzer(model: nn.Module, inputs: tuple) -> 'FlopAnalyzer':
    """A :class:`FlopAnalyzer` of ``model(*inputs)`` that also counts our operators.

    Args:
        model (nn.Module): Model to trace (its mode is left as is; call ``eval()`` first for
            inference FLOPs).
        inputs (tuple): Positional inputs of ``model.forward``.

    Returns:
        FlopAnalyzer: Ready to query (``total()``, ``by_module()``, ``by_operator()``);
        warnings about uncounted element-wise ops are switched off.

    Raises:
        RuntimeError: The model calls an autograd Function that has no FLOP handler.
    """
    analyzer = FlopAnalyzer(model, inputs).set_op_handle(**custom_op_handles())
    analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    analyzer.total()  # runs the trace
    unhandled = sorted(op for op in analyzer.unsupported_ops() if op.startswith('prim::PythonOp'))
    if unhandled:
        raise RuntimeError(f'no FLOP handler for the autograd Functions {unhandled}; their '
                           f'cost would be counted as zero')
    return analyzer
