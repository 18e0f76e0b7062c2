"""SS2D against an independent float64 implementation: one explicit scan per direction."""
import math

import pytest
import torch
import torch.nn.functional as F

from mmseg_segman.models.layers import SS2D, cross_merge_2d, cross_scan_2d


def _direction_orders(h, w):
    """Token index sequences (into row-major flattening) of the four SS2D scan orders."""
    grid = torch.arange(h * w).view(h, w)
    row_major = grid.flatten()
    col_major = grid.t().flatten()
    return [row_major, col_major, row_major.flip(0), col_major.flip(0)]


def _scan_float64(u, dt, A, B, C, D):
    """Sequential S6 recurrence in float64. u, dt: (b, d, l); A: (d, n); B, C: (b, n, l)."""
    state = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])
    ys = []
    for t in range(u.shape[-1]):
        decay = torch.exp(dt[:, :, t, None] * A)
        state = decay * state + dt[:, :, t, None] * B[:, None, :, t] * u[:, :, t, None]
        ys.append((state * C[:, None, :, t]).sum(-1) + D * u[:, :, t])
    return torch.stack(ys, -1)


def _float64_params(m):
    """The module's parameters as float64 leaves (for reference gradients)."""
    return {n: p.detach().double().requires_grad_() for n, p in m.named_parameters()}


def _ss2d_float64(m, x, params=None):
    """SS2D written from its definition, one direction at a time, all in float64."""
    params = params or _float64_params(m)
    x = x.double()
    b, c, h, w = x.shape
    k, r, n = 4, m.dt_rank, m.d_state
    x_proj = params['x_proj_weight'].view(k, r + 2 * n, c)
    dt_w, dt_b = params['dt_projs_weight'], params['dt_projs_bias']
    A = -torch.exp(params['A_logs']).view(k, c, n)
    D = params['Ds'].view(k, c)
    flat = x.flatten(2)
    out = torch.zeros_like(flat)
    for i, order in enumerate(_direction_orders(h, w)):
        seq = flat[:, :, order]  # (b, c, l) in this direction's order
        proj = torch.einsum('oc,bcl->bol', x_proj[i], seq)
        dt = F.softplus(torch.einsum('cr,brl->bcl', dt_w[i], proj[:, :r]) + dt_b[i, :, None])
        y = _scan_float64(seq, dt, A[i], proj[:, r:r + n], proj[:, r + n:], D[i])
        out = out.index_add(2, order, y)  # back to grid positions, summed over directions
    return out.view(b, c, h, w)


def _perturbed(m, seed=0):
    """Randomise every parameter (incl. A, D, dt bias) so that none can be misused unnoticed."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return m


@pytest.mark.parametrize('d_state', [1, 2])
def test_parameter_shapes_match_official(d_state):
    m = SS2D(d_model=40, d_state=d_state)
    r = math.ceil(40 / 16)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == {
        'x_proj_weight': (4 * (r + 2 * d_state), 40, 1),
        'dt_projs_weight': (4, 40, r),
        'dt_projs_bias': (4, 40),
        'A_logs': (4 * 40, d_state),
        'Ds': (4 * 40,),
    }


def test_initialisation():
    torch.manual_seed(0)
    m = SS2D(d_model=64, dt_min=0.002, dt_max=0.05)
    assert m.dt_rank == 4
    dt = F.softplus(m.dt_projs_bias.detach())
    assert dt.min() >= 0.002 * (1 - 1e-5) and dt.max() <= 0.05 * (1 + 1e-5)
    assert dt.max() / dt.min() > 5  # log-uniform spread, not a constant
    assert m.dt_projs_weight.abs().max() <= 4**-0.5
    assert torch.equal(m.A_logs.detach(), torch.zeros(256, 1))  # A = -1 for d_state 1
    assert torch.equal(m.Ds.detach(), torch.ones(256))
    assert torch.equal(SS2D(8, d_state=3).A_logs.detach()[5], torch.log(torch.tensor([1., 2., 3.])))


def test_cross_scan_merge_roundtrip():
    x = torch.randn(2, 3, 4, 6)
    xs = cross_scan_2d(x)
    for seq, order in zip(xs.unbind(1), _direction_orders(4, 6)):
        assert torch.equal(seq, x.flatten(2)[:, :, order])
    assert torch.equal(cross_merge_2d(xs, 4, 6), 4 * x)


@pytest.mark.parametrize('d_state,hw', [(1, (5, 7)), (2, (6, 3))])
def test_matches_float64_reference(d_state, hw):
    torch.manual_seed(1)
    m = _perturbed(SS2D(d_model=20, d_state=d_state), seed=d_state)
    x = torch.randn(2, 20, *hw)
    out = m(x)
    ref = _ss2d_float64(m, x)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert (out.double() - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_gradients_match_float64_reference():
    torch.manual_seed(4)
    m = _perturbed(SS2D(d_model=12, d_state=2), seed=4)
    x = torch.randn(2, 12, 4, 5)
    weight = torch.randn(2, 12, 4, 5)  # a generic linear functional of the output
    x32 = x.clone().requires_grad_()
    (m(x32) * weight).sum().backward()
    params = _float64_params(m)
    x64 = x.double().requires_grad_()
    (_ss2d_float64(m, x64, params) * weight.double()).sum().backward()
    pairs = [(x32.grad, x64.grad)] + [(p.grad, params[n].grad) for n, p in m.named_parameters()]
    for got, ref in pairs:
        assert (got.double() - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_every_direction_contributes():
    torch.manual_seed(2)
    m = _perturbed(SS2D(d_model=8))
    x = torch.randn(1, 8, 4, 5)
    base = m(x).detach()
    rows = m.x_proj_weight.shape[0] // 4
    for k in range(4):
        with torch.no_grad():
            m.x_proj_weight[k * rows:(k + 1) * rows] += 0.5
            changed = m(x)
            m.x_proj_weight[k * rows:(k + 1) * rows] -= 0.5
        assert (changed - base).abs().max() > 1e-3, f'direction {k} has no effect'


def test_ssm_ratio_and_gradients():
    torch.manual_seed(3)
    m = SS2D(d_model=12, ssm_ratio=2.0)
    assert m.d_inner == 24 and m.x_proj_weight.shape == (4 * (1 + 2), 24, 1)
    x = torch.randn(2, 12, 3, 5, requires_grad=True)
    m(x).square().sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


def test_bad_input():
    m = SS2D(d_model=8)
    with pytest.raises(ValueError, match='d_model=8'):
        m(torch.randn(1, 6, 4, 4))
    with pytest.raises(ValueError, match='d_model=8'):
        m(torch.randn(8, 4, 4))
    with pytest.raises(ValueError, match='dt_min'):
        SS2D(8, dt_min=0.2, dt_max=0.1)
    with pytest.raises(ValueError, match='dt_rank'):
        SS2D(8, dt_rank=0)
