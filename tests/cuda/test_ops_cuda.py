"""CUDA tier, operators: neighbourhood attention and the selective scan on CUDA against their
CPU float64 references, in float32 and with half-precision inputs under autocast (bfloat16,
float16), outputs and gradients; the backend each call took is asserted where it is known."""
import pytest
import torch

from mmseg_segman.ops import na2d, selective_scan_fn, selective_scan_triton
from mmseg_segman.ops import selective_scan as ss
from mmseg_segman.ops.neighborhood_attention import flex, na2d_backend, na2d_reference
from mmseg_segman.ops.selective_scan import selective_scan_chunked, selective_scan_ref

# (dtype of q/k/v or u, autocast dtype or None, relative tolerance of outputs and gradients)
PRECISIONS = [
    pytest.param(torch.float32, None, 2e-4, id='float32'),
    pytest.param(torch.bfloat16, torch.bfloat16, 4e-2, id='autocast-bf16'),
    pytest.param(torch.float16, torch.float16, 6e-3, id='autocast-fp16'),
]


def _rel(x, ref):
    return ((x.double().cpu() - ref).abs().max() / ref.abs().max()).item()


def _autocast(dtype):
    if dtype is None:
        return torch.autocast('cuda', enabled=False)
    return torch.autocast('cuda', dtype=dtype)


# ----------------------------------------------------------------------------- attention
NA_CASES = [  # B, heads, H, W, D, kernel, dilation, rpb, key mask
    pytest.param(2, 4, 64, 64, 32, 7, 1, True, False, id='segman-stage'),
    pytest.param(2, 2, 30, 27, 32, 7, 2, True, False, id='dilated'),
    pytest.param(1, 2, 7, 7, 32, 7, 1, True, True, id='padded-map-key-mask'),
    pytest.param(2, 2, 32, 33, 32, 5, 1, False, False, id='no-rpb'),
    pytest.param(1, 2, 24, 24, 16, 4, 1, True, False, id='even-kernel'),
]


def _na_inputs(B, heads, H, W, D, kernel_size, with_rpb, masked, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q, k, v, g = (torch.randn(B, heads, H, W, D, generator=gen, dtype=torch.float64)
                  for _ in range(4))
    rpb = (torch.randn(heads, 2 * kernel_size - 1, 2 * kernel_size - 1, generator=gen,
                       dtype=torch.float64) if with_rpb else None)
    mask = None
    if masked:
        mask = torch.ones(H, W, dtype=torch.bool)
        mask[:, -2:] = False
    return q, k, v, rpb, g, mask


@pytest.mark.parametrize('rpb_grad', ['window', 'flex'])
@pytest.mark.parametrize('dtype,autocast,tol', PRECISIONS)
@pytest.mark.parametrize('B,heads,H,W,D,kernel_size,dilation,with_rpb,masked', NA_CASES)
def test_na2d_matches_cpu_reference(monkeypatch, rpb_grad, dtype, autocast, tol, B, heads, H,
                                    W, D, kernel_size, dilation, with_rpb, masked):
    if rpb_grad == 'flex' and not with_rpb:
        pytest.skip('the rpb gradient mode only matters with rpb')
    monkeypatch.setattr(flex, 'RPB_GRAD', rpb_grad)
    q, k, v, rpb, g, mask = _na_inputs(B, heads, H, W, D, kernel_size, with_rpb, masked)
    # Reference on the values the CUDA run sees (rounded to its input dtype).
    rounded = [t.to(dtype).double() for t in (q, k, v)]
    leaves = [t.clone().requires_grad_() for t in rounded] + (
        [rpb.clone().requires_grad_()] if with_rpb else [])
    ref = na2d_reference(*leaves[:3], kernel_size, dilation, leaves[3] if with_rpb else None,
                         0.3, key_mask=None if mask is None else mask[None, None])
    ref_grads = torch.autograd.grad(ref, leaves, g)
    cuda = [t.to('cuda', dtype).requires_grad_() for t in rounded] + (
        [rpb.float().cuda().requires_grad_()] if with_rpb else [])
    cuda_mask = None if mask is None else mask.cuda()
    backend = na2d_backend(*cuda[:3], kernel_size, dilation, cuda[3] if with_rpb else None,
                           cuda_mask)
    if with_rpb:
        assert backend in ('natten-split', 'flex'), backend
    with _autocast(autocast):
        out = na2d(*cuda[:3], kernel_size, dilation, cuda[3] if with_rpb else None, 0.3,
                   key_mask=cuda_mask)
    grads = torch.autograd.grad(out, cuda, g.to('cuda', out.dtype))
    assert out.dtype == dtype
    assert _rel(out, ref) < tol, backend
    for name, got, expected in zip(['q', 'k', 'v', 'rpb'], grads, ref_grads):
        assert _rel(got, expected) < 2 * tol, (name, backend)


def test_tiled_backend_on_cuda_matches_cpu():
    """The pure-PyTorch tiled op (the CUDA fallback) on CUDA, float32."""
    from mmseg_segman.ops.neighborhood_attention.common import split_form
    from mmseg_segman.ops.neighborhood_attention.tiled import na2d_av_tiled, na2d_qk_tiled
    q, k, v, rpb, g, _ = _na_inputs(2, 2, 40, 36, 32, 7, True, False)
    leaves = [t.clone().requires_grad_() for t in (q, k, v, rpb)]
    ref = na2d_reference(*leaves[:3], 7, 1, leaves[3], 0.3)
    ref_grads = torch.autograd.grad(ref, leaves, g)
    cuda = [t.float().cuda().requires_grad_() for t in (q, k, v, rpb)]
    out = split_form(na2d_qk_tiled, na2d_av_tiled, *cuda[:3], 7, 1, cuda[3], 0.3, None)
    grads = torch.autograd.grad(out, cuda, g.float().cuda())
    assert _rel(out, ref) < 2e-4
    for got, expected in zip(grads, ref_grads):
        assert _rel(got, expected) < 4e-4


# ----------------------------------------------------------------------------- scan
SCAN_CASES = [  # batch, channels, length, d_state, groups
    pytest.param(2, 256, 4096, 1, 4, id='segman-head'),
    pytest.param(2, 64, 1000, 4, 2, id='d_state-4'),
    pytest.param(1, 32, 33, 1, None, id='short'),
]


def _scan_inputs(batch, channels, length, d_state, groups, seed=0):
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    bc = (batch, groups, d_state, length) if groups else (batch, d_state, length)
    return dict(u=randn(batch, channels, length), delta=randn(batch, channels, length) - 1,
                A=-torch.rand(channels, d_state, generator=gen, dtype=torch.float64) - 0.1,
                B=randn(*bc), C=randn(*bc), D=randn(channels),
                z=randn(batch, channels, length), delta_bias=randn(channels) * 0.3)


IO = ('u', 'delta', 'z', 'B', 'C')  # the tensors that arrive in half precision under autocast


def _scan_run(fn, inputs, device, dtype):
    leaves = {k: v.detach().to(device, dtype if k in IO else torch.float32).requires_grad_()
              for k, v in inputs.items()}
    out = fn(**leaves, delta_softplus=True)
    gen = torch.Generator().manual_seed(1)
    g = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    out.backward(g.to(device, out.dtype))
    return out, {k: v.grad for k, v in leaves.items()}


@pytest.mark.parametrize('impl', ['dispatch', 'triton', 'chunked'])
@pytest.mark.parametrize('dtype,autocast,tol', PRECISIONS)
@pytest.mark.parametrize('batch,channels,length,d_state,groups', SCAN_CASES)
def test_scan_matches_cpu_reference(impl, dtype, autocast, tol, batch, channels, length,
                                    d_state, groups):
    if impl == 'triton' and not selective_scan_triton.available():
        pytest.fail('Triton cannot run here although CUDA can (it ships with CUDA torch)')
    if impl == 'chunked' and dtype != torch.float32:
        pytest.skip('the chunked path computes in float32 whatever the input; one check')
    inputs = _scan_inputs(batch, channels, length, d_state, groups)
    rounded = {k: (v.to(dtype).double() if k in IO else v.float().double())
               for k, v in inputs.items()}
    if length > 1000:  # the step-per-token reference is slow: the chunked scan in float64
        ref, ref_grads = _scan_run(selective_scan_chunked, rounded, 'cpu', torch.float64)
    else:
        ref, ref_grads = _scan_run(selective_scan_ref, rounded, 'cpu', torch.float64)
    fn = dict(dispatch=selective_scan_fn, triton=selective_scan_triton.selective_scan_triton,
              chunked=selective_scan_chunked)[impl]
    with _autocast(autocast):
        out, grads = _scan_run(fn, rounded, 'cuda', dtype)
    assert out.dtype == dtype
    assert _rel(out, ref) < tol
    for name, expected in ref_grads.items():
        assert _rel(grads[name], expected.detach()) < 2 * tol, name


def test_scan_dispatch_on_cuda():
    u = torch.zeros(1, 4, 8, device='cuda')
    expected = 'mamba' if ss._mamba_kernel() is not None else 'triton'
    assert ss.scan_backend(u, torch.zeros(4, 1, device='cuda')) == expected
    assert ss.scan_backend(u.double(), torch.zeros(4, 1, device='cuda')) == 'chunked'
