"""FLOP counting: closed forms on small shapes, the jit handlers, and whole models vs papers.

Reference figures (one multiply-add = one FLOP):
* SegMAN: the paper/README table, and the official code counted with its own fvcore setup
  (``shared/reference/official-segman.md`` §5: T 6.05 G, S 25.15 G at 512x512).
* LRFormer: README, whole GFLOPs (T 17 G at 512x512).
* SegNeXt: paper, whole GFLOPs counted with torchprofile (T 7 G at 512x512).
"""
import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config

from mmseg_segman.ops import na2d_av, na2d_qk, selective_scan_fn
from mmseg_segman.utils import (
    custom_op_handles,
    flop_analyzer,
    na2d_av_flops,
    na2d_qk_flops,
    sdpa_flops,
    selective_scan_flops,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    'get_flops_tool', REPO_ROOT / 'tools' / 'analysis' / 'get_flops.py')
get_flops_tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(get_flops_tool)


def count(fn, *inputs):
    """FLOPs of ``fn(*inputs)`` traced as a module."""

    class Wrapper(nn.Module):

        def forward(self, *args):
            return fn(*args)

    return flop_analyzer(Wrapper(), inputs).total()


def model_flops(config, size, resize_logits=False):
    analyzer, params = get_flops_tool.get_flops(Config.fromfile(REPO_ROOT / 'configs' / config),
                                                (size, size), resize_logits)
    return analyzer.total(), params


# ----------------------------------------------------------------------------- closed forms
def test_formulas_by_hand():
    # 9*B*L*D*N + B*D*L with B=2, D=8, L=16, N=4: 9216 + 256
    assert selective_scan_flops(2, 8, 16, 4) == 9472
    assert selective_scan_flops(2, 8, 16, 4, with_d=False) == 9216
    assert selective_scan_flops(2, 8, 16, 4, with_z=True) == 9728
    # B=1, h=2, 5x5 map, head_dim 4, k=3: 2*25*9 = 450 window entries
    assert na2d_qk_flops(1, 2, 5, 5, 4, 3) == 450 * 5
    assert na2d_qk_flops(1, 2, 5, 5, 4, 3, rpb=True) == 450 * 6
    assert na2d_av_flops(1, 2, 5, 5, 4, 3) == 450 * 4
    # 2 heads, 6 queries, 10 keys, Dqk 4, Dv 3: 120 pairs * 7
    assert sdpa_flops((1, 2, 6, 4), (1, 2, 10, 4), (1, 2, 10, 3)) == 840


def test_scan_handler():
    b, d, length, n = 2, 8, 16, 4
    u = torch.randn(b, d, length)
    delta = torch.randn(b, d, length)
    A = -torch.rand(d, n)
    B, C = torch.randn(b, n, length), torch.randn(b, n, length)

    def scan(u, delta, A, B, C, D):
        return selective_scan_fn(u, delta, A, B, C, D, delta_softplus=True)

    assert count(scan, u, delta, A, B, C, torch.ones(d)) == 9472


def test_na_handlers():
    q, k, v = (torch.randn(1, 2, 5, 5, 4) for _ in range(3))
    rpb = torch.randn(2, 5, 5)

    def attention(q, k, v, rpb=None):
        return na2d_av(na2d_qk(q, k, 3, rpb=rpb).softmax(-1), v, 3)

    assert count(attention, q, k, v) == 450 * 5 + 450 * 4
    assert count(attention, q, k, v, rpb) == 450 * 6 + 450 * 4


def test_sdpa_handler():
    q, k, v = torch.randn(1, 2, 6, 4), torch.randn(1, 2, 10, 4), torch.randn(1, 2, 10, 3)
    assert count(torch.nn.functional.scaled_dot_product_attention, q, k, v) == 840


def test_conv_linear_closed_form():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(2), nn.Linear(100, 5))
    # conv: 8 outputs * 10*10 positions * 3*3*3 taps; linear: 8 rows * 100 * 5
    assert flop_analyzer(model, (torch.randn(1, 3, 10, 10), )).total() == 21600 + 4000


def test_unhandled_function_is_an_error():

    class Double(torch.autograd.Function):

        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, grad):
            return grad * 2

    with pytest.raises(RuntimeError, match='Double'):
        count(Double.apply, torch.randn(3))


def test_cli_prints_totals_and_breakdown(capsys):
    get_flops_tool.main(['configs/segnext/segnext-t_ade20k.py', '--shape', '64', '96',
                         '--breakdown', '1', '--cfg-options', 'model.decode_head.num_classes=19'])
    out = capsys.readouterr().out
    analyzer, _ = get_flops_tool.get_flops(
        Config.fromfile(REPO_ROOT / 'configs/segnext/segnext-t_ade20k.py'), (64, 96))
    assert 'Input shape: (3, 64, 96)' in out
    # 19 classes instead of 150: fewer FLOPs than the unmodified config at the same size
    flops = float(out.split('Flops: ')[1].split()[0]) * 1e9
    assert 0 < flops < analyzer.total()
    assert 'decode_head' in out and 'backbone' in out


def test_cli_rejects_bad_shape():
    with pytest.raises(SystemExit):
        get_flops_tool.parse_args(['cfg.py', '--shape', '1', '2', '3'])


# ----------------------------------------------------------------------------- whole models
@pytest.mark.slow  # ~10 s: the jit trace of SegMAN-T at 512x512
def test_segman_t_matches_paper():
    analyzer, params = get_flops_tool.get_flops(
        Config.fromfile(REPO_ROOT / 'configs/segman/segman-t_ade20k.py'), (512, 512))
    flops = analyzer.total()
    assert abs(flops / 6.2e9 - 1) < 0.03  # paper
    assert abs(flops / 6.05e9 - 1) < 0.01  # official code, same counting rules
    assert abs(params / 6.40e6 - 1) < 0.005
    # The official-code count leaves out natten's per-logit q.k terms: q.k minus attn.v
    # (both share B*h*H*W*k^2*d). Without them the two counts agree to 0.1 %.
    qk, av = (name.replace('prim::', '') for name in list(custom_op_handles())[:2])
    per_logit = analyzer.by_operator()[qk] - analyzer.by_operator()[av]
    assert 0 < per_logit and abs((flops - per_logit) / 6.05e9 - 1) < 0.001


def test_lrformer_t_matches_readme():
    # README gives whole GFLOPs: 17 G means [16.5, 17.5).
    flops, _ = model_flops('lrformer/lrformer-t_ade20k.py', 512)
    assert 16.5e9 <= flops < 17.5e9


@pytest.mark.slow  # ~3 s: the jit trace of SegNeXt-T at 512x512
def test_segnext_t_matches_paper():
    # The paper gives whole GFLOPs (7 G) from torchprofile on MMSeg 0.x's forward_dummy, which
    # includes the bilinear resize of the 150 logit maps to 512x512 (4 FLOPs per value, as in
    # fvcore). With that resize the count must fall in the rounding interval [6.5, 7.5) G.
    flops, params = model_flops('segnext/segnext-t_ade20k.py', 512)
    resized, _ = model_flops('segnext/segnext-t_ade20k.py', 512, resize_logits=True)
    assert resized - flops == 4 * 150 * 512 * 512
    assert 6.5e9 <= resized < 7.5e9
    assert abs(params / 4.3e6 - 1) < 0.012  # paper: 4.3M


@pytest.mark.slow
def test_segman_s_matches_paper():
    flops, params = model_flops('segman/segman-s_ade20k.py', 512)
    assert abs(flops / 25.3e9 - 1) < 0.03
    assert abs(flops / 25.15e9 - 1) < 0.01
    assert abs(params / 29.43e6 - 1) < 0.005
