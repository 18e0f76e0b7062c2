"""SegNeXt head: SegNeXtHamHead, NMF2D and ham_kwargs (models/decode_heads/segnext_head.py).

MMSeg 1.2.2's built-in ``MSCAN`` and ``LightHamHead`` are the numerical
reference: same weights, same input and same NMF bases must give the same
outputs.
"""
import pytest
import torch
from _family_helpers import GN, head_kwargs, max_abs, perturb_
from mmseg.models.decode_heads.ham_head import NMF2D as MMSegNMF2D
from mmseg.models.decode_heads.ham_head import LightHamHead

import mmseg_segman  # noqa: F401  (registers the plugin's modules)
from mmseg_segman.models.decode_heads.segnext_head import NMF2D, SegNeXtHamHead, parse_ham_kwargs

pytestmark = pytest.mark.usefixtures('mmseg_registry')


def fake_features(batch=2, height=64, width=96, seed=1):
    gen = torch.Generator().manual_seed(seed)
    dims = [32, 64, 160, 256]
    return [
        torch.randn(batch, c, height // s, width // s, generator=gen)
        for c, s in zip(dims, (4, 8, 16, 32))
    ]


# ------------------------------------------------------------------- head


def test_head_equals_lighthamhead_with_the_same_bases():
    torch.manual_seed(0)
    ref = LightHamHead(**head_kwargs())
    perturb_(ref, seed=1)
    ours = SegNeXtHamHead(**head_kwargs(deterministic_eval=False))
    ours.load_state_dict(ref.state_dict(), strict=True)
    feats = fake_features()
    for train in (True, False):
        ref.train(train)
        ours.train(train)
        # random bases from the global RNG: the same seed, the same bases
        torch.manual_seed(7)
        expected = ref(feats)
        torch.manual_seed(7)
        out = ours(feats)
        assert out.shape == (2, 19, 8, 12)
        assert expected.abs().max() > 0.1
        assert max_abs(out, expected) <= 1e-5
        # and the output does depend on the bases (else this test is void)
        torch.manual_seed(8)
        assert max_abs(ours(feats), expected) > 1e-4


def test_head_deterministic_eval_uses_fixed_bases(monkeypatch):
    """Default evaluation = the built-in head fed with our fixed bases."""
    ref = LightHamHead(**head_kwargs())
    perturb_(ref, seed=2)
    ours = SegNeXtHamHead(**head_kwargs())
    ours.load_state_dict(ref.state_dict(), strict=True)
    ref.eval()
    ours.eval()
    fixed = ours.hamburger.ham.bases
    assert fixed.shape == (1, 64, 16)
    assert torch.allclose(fixed.norm(dim=1), torch.ones(1, 16))
    monkeypatch.setattr(
        MMSegNMF2D,
        '_build_bases',
        lambda self, B, S, D, R, device=None: fixed.repeat(B, 1, 1))
    feats = fake_features()
    with torch.no_grad():
        assert max_abs(ours(feats), ref(feats)) <= 1e-5


def test_eval_is_deterministic_and_batch_independent():
    head = SegNeXtHamHead(**head_kwargs()).eval()
    perturb_(head, seed=3)
    feats = fake_features(batch=3)
    with torch.no_grad():
        first, second = head(feats), head(feats)
        alone = head([f[1:2] for f in feats])
    assert torch.equal(first, second)
    assert max_abs(alone, first[1:2]) <= 1e-5
    # the original behaviour (and MMSeg's head) is not deterministic
    head.hamburger.ham.deterministic_eval = False
    with torch.no_grad():
        assert max_abs(head(feats), head(feats)) > 1e-4


def test_fixed_bases_are_not_in_checkpoints_unless_rand_init_false():
    head = SegNeXtHamHead(**head_kwargs())
    assert not any('bases' in k for k in head.state_dict())
    # rand_init=False: the buffer MMSeg registers at its first forward
    ref = LightHamHead(**head_kwargs(rand_init=False)).eval()
    perturb_(ref, seed=4)
    feats = fake_features()
    with torch.no_grad():
        expected = ref(feats)
    ours = SegNeXtHamHead(**head_kwargs(rand_init=False)).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    ours.train()  # the stored bases are used in training too
    assert torch.equal(ours.hamburger.ham.bases, ref.hamburger.ham.bases)
    ours.eval()
    with torch.no_grad():
        assert max_abs(ours(feats), expected) <= 1e-5


def test_head_upstream_expectations():
    """MMSeg's test_ham_head, for our class."""
    head = SegNeXtHamHead(
        in_channels=[16, 32, 64],
        in_index=[1, 2, 3],
        channels=64,
        ham_channels=64,
        dropout_ratio=0.1,
        num_classes=19,
        norm_cfg=GN,
        align_corners=False,
        ham_kwargs=dict(
            MD_S=1,
            MD_R=64,
            train_steps=6,
            eval_steps=7,
            inv_t=100,
            rand_init=True))
    assert head.hamburger.ham_in.norm_cfg is None  # ham_in has no norm
    assert head.in_channels == [16, 32, 64]
    assert head.hamburger.ham_in.in_channels == 64
    inputs = [
        torch.randn(1, 8, 32, 32),
        torch.randn(1, 16, 16, 16),
        torch.randn(1, 32, 8, 8),
        torch.randn(1, 64, 4, 4)
    ]
    assert head(inputs).shape == (1, 19, 16, 16)


def test_head_rejects_other_input_transform():
    with pytest.raises(ValueError, match='input_transform'):
        SegNeXtHamHead(**head_kwargs(), input_transform='resize_concat')


# ------------------------------------------------------------- ham_kwargs


def test_ham_kwargs_official_and_mmseg_spellings_agree():
    official = dict(
        MD_S=2, MD_R=8, TRAIN_STEPS=3, EVAL_STEPS=4, RAND_INIT=False)
    mmseg = dict(MD_S=2, MD_R=8, train_steps=3, eval_steps=4, rand_init=False)
    expected = dict(
        num_groups=2, rank=8, train_steps=3, eval_steps=4, rand_init=False)
    assert parse_ham_kwargs(official, 64) == expected
    assert parse_ham_kwargs(mmseg, 64) == expected
    nmf = NMF2D(64, **expected)
    assert nmf.bases.shape == (2, 32, 8)
    x = torch.rand(3, 64, 5, 6)
    nmf.train()
    assert nmf(x).shape == x.shape
    # official keys without effect on NMF are accepted when consistent
    assert parse_ham_kwargs(dict(SPATIAL=True, MD_D=32, MD_S=2),
                            64) == dict(num_groups=2)


def test_ham_kwargs_errors_name_the_key():
    with pytest.raises(ValueError, match="'MD_RANK'"):
        parse_ham_kwargs(dict(MD_RANK=8), 64)
    with pytest.raises(ValueError, match="'rank' twice"):
        parse_ham_kwargs(dict(MD_R=8, md_r=16), 64)
    with pytest.raises(ValueError, match='SPATIAL=False'):
        parse_ham_kwargs(dict(SPATIAL=False), 64)
    with pytest.raises(ValueError, match='MD_D=512'):
        parse_ham_kwargs(dict(MD_D=512), 64)
    with pytest.raises(ValueError, match='divisible'):
        SegNeXtHamHead(**head_kwargs(MD_S=3))
    with pytest.raises(ValueError, match='rank must be an integer >= 1'):
        NMF2D(64, rank=0)
    with pytest.raises(TypeError, match='ham_kwargs must be a dict'):
        parse_ham_kwargs([('MD_R', 8)], 64)


def test_inv_t_is_ignored_with_a_warning():
    with pytest.warns(UserWarning, match='INV_T=100 has no effect'):
        head = SegNeXtHamHead(**head_kwargs(INV_T=100))
    plain = SegNeXtHamHead(**head_kwargs())
    plain.load_state_dict(head.state_dict())
    head.eval()
    plain.eval()
    feats = fake_features()
    with torch.no_grad():
        assert torch.equal(head(feats), plain(feats))


# --------------------------------------------------------- mixed precision


def test_nmf_runs_in_float32_under_autocast():
    nmf = NMF2D(64, rank=16).eval()
    x = torch.rand(2, 64, 6, 8).to(torch.bfloat16)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = nmf(x)
    assert out.dtype == torch.bfloat16
    # bit-identical to the float32 computation from the same input values
    assert torch.equal(out, nmf(x.float()).to(torch.bfloat16))
