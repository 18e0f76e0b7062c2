"""The operators under torch.compile: the custom ops of :mod:`mmseg_segman.ops.library`.

Checked: the ops pass ``torch.library.opcheck`` (schema, fake kernels against real outputs,
autograd registration, AOTAutograd); through them the forward and every gradient are bitwise
those of the eager autograd Functions; eager calls never use them; compiled with
``fullgraph=True`` (``aot_eager``) the public functions equal eager; and on a torch without
custom ops (simulated) compilation still works through the autograd Functions, with breaks.
"""
import pytest
import torch

from mmseg_segman.ops import library, na2d, selective_scan_fn
from mmseg_segman.ops.neighborhood_attention.tiled import na2d_av_tiled, na2d_qk_tiled
from mmseg_segman.ops.selective_scan import selective_scan_chunked

needs_custom_op = pytest.mark.skipif(
    not library.AVAILABLE, reason='torch.library.custom_op needs torch >= 2.4')


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _scan_inputs(length, d_state=1, groups=1, with_z=True, seed=0, requires_grad=True):
    gen = torch.Generator().manual_seed(seed)
    b, d = 2, 8

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen) * scale).requires_grad_(requires_grad)

    A = (-torch.rand(d, d_state, generator=gen) - 0.5).requires_grad_(requires_grad)
    return dict(u=r(b, d, length), delta=r(b, d, length, scale=0.5), A=A,
                B=r(b, groups, d_state, length), C=r(b, groups, d_state, length),
                D=r(d), z=r(b, d, length) if with_z else None, delta_bias=r(d),
                delta_softplus=True)


def _tensors(kw):
    return [v for v in kw.values() if isinstance(v, torch.Tensor)]


@needs_custom_op
@pytest.mark.parametrize('length', [12, 40, 48])
def test_opcheck_selective_scan(length):
    """Lengths of one chunk (solved step by step: no chunk tensors saved), of full chunks plus
    a partial one, and of full chunks only."""
    kw = _scan_inputs(length, d_state=2, groups=2)
    args = (*kw.values(), )
    torch.library.opcheck(library._scan_train, args)
    detached = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
    torch.library.opcheck(library._scan_infer, detached)


@needs_custom_op
@pytest.mark.parametrize('dilation', [1, 2])
def test_opcheck_neighborhood_attention(dilation):
    gen = torch.Generator().manual_seed(0)
    q, k = (torch.randn(2, 2, 13, 11, 8, generator=gen, requires_grad=True) for _ in range(2))
    attn = torch.randn(2, 2, 13, 11, 25, generator=gen, requires_grad=True)
    rpb = torch.randn(2, 9, 9, generator=gen, requires_grad=True)
    torch.library.opcheck(library._na_qk, (q, k, None, 5, dilation))
    torch.library.opcheck(library._na_qk, (q, k, rpb, 5, dilation))
    torch.library.opcheck(library._na_av, (attn, k, 5, dilation))


@needs_custom_op
@pytest.mark.parametrize('length,d_state,with_z', [(12, 1, False), (40, 1, True),
                                                   (50, 3, True)])
def test_scan_custom_op_is_bitwise_the_autograd_function(length, d_state, with_z):
    kw = _scan_inputs(length, d_state=d_state, groups=2 if d_state > 1 else 1, with_z=with_z)
    ref = selective_scan_chunked(**kw)
    out = library.selective_scan(**kw)
    assert torch.equal(out, ref)
    grad = torch.randn_like(ref)
    g_ref = torch.autograd.grad(ref, _tensors(kw), grad)
    g_out = torch.autograd.grad(out, _tensors(kw), grad)
    assert len(g_out) == (8 if with_z else 7)
    for a, b in zip(g_out, g_ref):
        assert torch.equal(a, b)
    with torch.no_grad():  # the inference op: no autograd state
        assert torch.equal(library.selective_scan(**kw), ref)


@needs_custom_op
def test_na_custom_ops_are_bitwise_the_autograd_functions():
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, 14, 12, 8, generator=gen, requires_grad=True)
               for _ in range(3))
    rpb = torch.randn(2, 9, 9, generator=gen, requires_grad=True)
    for dilation in (1, 2):
        ref = na2d_av_tiled(na2d_qk_tiled(q, k, 5, dilation, rpb).softmax(-1), v, 5, dilation)
        out = library.na2d_av(library.na2d_qk(q, k, 5, dilation, rpb).softmax(-1), v, 5,
                              dilation)
        assert torch.equal(out, ref)
        grad = torch.randn_like(ref)
        got = torch.autograd.grad(out, (q, k, v, rpb), grad)
        want = torch.autograd.grad(ref, (q, k, v, rpb), grad)
        for a, b in zip(got[:3], want[:3]):
            assert torch.equal(a, b)
        # rpb's gradient: a scatter-add here, autograd's index backward there (sum order)
        assert torch.allclose(got[3], want[3], rtol=1e-5, atol=1e-6)
        assert got[3].abs().max() > 0.1


@needs_custom_op
def test_resized_bias_op_is_interpolate_and_cached_per_weights():
    bias = torch.nn.Parameter(torch.randn(3, 16, 16))
    with torch.no_grad():
        ref = torch.nn.functional.interpolate(bias[None], size=(9, 9), mode='bicubic',
                                              align_corners=False)[0]
        first = library.resize_bias_bicubic(bias, 9)
        second = library.resize_bias_bicubic(bias, 9)
        assert torch.equal(first, ref) and torch.equal(second, ref)
        assert first.data_ptr() != second.data_ptr()  # copies: callers may write over them
        first.zero_()
        assert torch.equal(library.resize_bias_bicubic(bias, 9), ref)
        bias.mul_(2)  # new weights (version counter): computed again
        assert torch.equal(library.resize_bias_bicubic(bias, 9), 2 * ref)


def test_eager_calls_do_not_use_the_custom_ops(monkeypatch):
    """Outside dynamo the switch is off and the ops are never reached (eager speed and outputs
    unchanged); inside a traced function it is on where custom ops exist."""
    assert not library.use_library_ops()

    def boom(*args, **kwargs):
        raise AssertionError('custom op called in an eager call')

    for name in ('selective_scan', 'na2d_qk', 'na2d_av'):
        monkeypatch.setattr(library, name, boom, raising=False)
    kw = _scan_inputs(40)
    selective_scan_fn(**kw).sum().backward()
    q = torch.randn(1, 2, 9, 9, 8, requires_grad=True)
    na2d(q, q, q, 3, rpb=torch.zeros(2, 5, 5)).sum().backward()

    seen = []

    def probe(x):
        seen.append(library.use_library_ops())
        return x + 1

    torch.compile(probe, backend='eager', fullgraph=True)(torch.ones(2))
    assert seen == [library.AVAILABLE]


@needs_custom_op
def test_compiled_ops_equal_eager_fullgraph():
    """na2d with rpb, dilation and a key mask, and the scan with z: one graph (fullgraph=True),
    forward and gradients as in eager (the same kernels run inside the ops)."""
    gen = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(2, 2, 12, 10, 8, generator=gen, requires_grad=True)
               for _ in range(3))
    rpb = torch.randn(2, 9, 9, generator=gen, requires_grad=True)
    mask = torch.ones(12, 10, dtype=torch.bool)
    mask[:, -2:] = False

    def attention(q, k, v, rpb):
        return (na2d(q, k, v, 5, dilation=2, rpb=rpb) +
                na2d(q, k, v, 5, rpb=rpb, key_mask=mask))

    ref = attention(q, k, v, rpb)
    out = torch.compile(attention, backend='aot_eager', fullgraph=True)(q, k, v, rpb)
    assert torch.allclose(out, ref, rtol=1e-6, atol=1e-6)
    grad = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(out, (q, k, v, rpb), grad),
                    torch.autograd.grad(ref, (q, k, v, rpb), grad)):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)

    kw = _scan_inputs(40)
    scan = torch.compile(lambda kw: selective_scan_fn(**kw), backend='aot_eager',
                         fullgraph=True)
    ref, out = selective_scan_fn(**kw), scan(kw)
    assert torch.equal(out, ref)
    for a, b in zip(torch.autograd.grad(out, _tensors(kw), grad_outputs=torch.ones_like(out)),
                    torch.autograd.grad(ref, _tensors(kw), grad_outputs=torch.ones_like(ref))):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.slow  # ~10 s: dynamo retraces around every graph break
def test_without_custom_ops_compile_falls_back_to_the_autograd_functions(monkeypatch):
    """What torch < 2.4 does (simulated by switching the custom ops off): dynamo breaks the
    graph around the autograd Functions' host syncs but the results are eager's."""
    monkeypatch.setattr(library, 'AVAILABLE', False)
    gen = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, 2, 16, 16, 8, generator=gen) for _ in range(3))
    kw = _scan_inputs(40, requires_grad=False)

    def f(q, k, v, kw):
        return na2d(q, k, v, 5).sum() + selective_scan_fn(**kw).sum()

    report = torch._dynamo.explain(f)(q, k, v, kw)
    assert report.graph_break_count > 0
    torch._dynamo.reset()
    assert torch.equal(torch.compile(f, backend='eager')(q, k, v, kw), f(q, k, v, kw))


def test_exporting_uses_the_export_forms_not_the_custom_ops():
    """torch.export traces with dynamo too: the switch must stay off there, or the custom ops
    (which ONNX cannot express) would enter exported graphs. SegMAN's global LASS attention
    (resized bias, neighbourhood attention with rpb) and the scan export as plain aten ops."""
    from mmseg_segman.models.backbones.segman import LASSAttention
    from mmseg_segman.models.layers.segman_blocks import RoPE2d

    torch.manual_seed(0)
    block = LASSAttention(32, 2, 7, global_size=(4, 4)).eval()  # 16-token bias, resized
    local = LASSAttention(32, 2, 7).eval()  # neighbourhood attention + SS2D

    class Mixers(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.block, self.local, self.rope = block, local, RoPE2d(16)

        def forward(self, x):
            rope = self.rope(*x.shape[2:])
            return self.block(x, rope) + self.local(x, rope)

    x = torch.randn(1, 32, 8, 10)
    with torch.no_grad():
        ref = Mixers()(x)
        program = torch.export.export(Mixers(), (x, ))
    targets = {str(n.target) for n in program.graph.nodes if n.op == 'call_function'}
    assert not any('mmseg_segman' in t for t in targets), sorted(targets)
    assert torch.allclose(program.module()(x), ref, rtol=1e-5, atol=1e-5)
