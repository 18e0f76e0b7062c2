"""ONNX export of the three T models (tools/deployment/pytorch2onnx.py and mmseg_segman.deploy).

Each export runs the dynamo exporter and onnxruntime on CPU at a small input size, with random
weights. LRFormer-T and SegMAN-T are exported in-process; SegNeXt-T through the command line
with a checkpoint written here, whose ONNX logits are then compared with the in-process model
(so the checkpoint must really have been loaded). Tolerance: max |onnx - torch| <= 1e-4 *
max |torch| (measured errors are about 1e-6 relative; docs/deployment.md).
"""
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOL = REPO_ROOT / 'tools' / 'deployment' / 'pytorch2onnx.py'
REL_TOL = 1e-4

_missing = [n for n in ('onnx', 'onnxruntime', 'onnxscript') if importlib.util.find_spec(n) is None]
needs_onnx = pytest.mark.skipif(
    bool(_missing) and not os.environ.get('CI'),
    reason=f'{", ".join(_missing)} not installed (pip install -r requirements/tests.txt)')


def _load_tool():
    spec = importlib.util.spec_from_file_location('pytorch2onnx_tool', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def config(family):
    return str(REPO_ROOT / 'configs' / family / f'{family}-t_ade20k.py')


@needs_onnx
@pytest.mark.slow  # 20-40 s per export on 2 cores
@pytest.mark.parametrize('family,shape,optimize', [
    # The exporter's graph optimisation takes about half of an export; it is skipped for
    # LRFormer (ONNX Runtime optimises the graph itself) and kept for SegMAN, whose export
    # paths are ours, and for SegNeXt (the command-line test).
    ('lrformer', (64, 64), False),
    # Non-square, so a transposed scan order or resize would show; the stage-1 scan has
    # 24 * 16 = 384 tokens (three levels of chunks) and stages 3-4 are smaller than the
    # 7x7 attention window (the padded path).
    ('segman', (96, 64), True),
])
def test_export_matches_pytorch(family, shape, optimize, tmp_path):
    import onnx

    from mmseg_segman.deploy import build_segmentor, export_onnx, verify_onnx

    torch.manual_seed(0)
    # SegMAN with one block per stage: every block kind and the head, a graph of 4 blocks
    # instead of 10 to export and optimise (the blocks of a stage export alike).
    options = {'model.backbone.depths': [1, 1, 1, 1]} if family == 'segman' else None
    model, _ = build_segmentor(config(family), cfg_options=options)
    out = tmp_path / f'{family}.onnx'
    wrapper = export_onnx(model, shape, str(out), optimize=optimize)
    graph = onnx.load(str(out)).graph
    assert [i.name for i in graph.input] == ['input']
    dims = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, *shape]
    assert not list(tmp_path.glob('*.data'))  # weights inside the file
    for seed in (0, 1):
        stats = verify_onnx(wrapper, str(out), seed=seed)
        assert stats['shape'] == (1, 150, *shape)
        assert stats['max_ref'] > 0.1  # non-trivial logits
        assert stats['rel'] <= REL_TOL, stats


@needs_onnx
def test_cli_segnext_with_checkpoint_and_verify(tmp_path):
    import onnxruntime as ort

    from mmseg_segman.deploy import SegmentorLogits, build_segmentor

    torch.manual_seed(1)
    model, _ = build_segmentor(config('segnext'))
    ckpt = tmp_path / 'segnext.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), ckpt)
    out = tmp_path / 'segnext.onnx'
    proc = subprocess.run(
        [sys.executable, str(TOOL), config('segnext'), str(ckpt), '--shape', '64', '96',
         '--output', str(out), '--verify'],
        capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    match = re.search(r'verify: logits \(1, 150, 64, 96\), max abs error (\S+), '
                      r'max \|logit\| (\S+), relative error (\S+) .*: OK', proc.stdout)
    assert match, proc.stdout
    max_abs, max_ref, rel = (float(v.rstrip(',')) for v in match.groups())
    assert 0 < max_ref and rel <= REL_TOL and max_abs <= REL_TOL * max_ref

    # The file holds the checkpoint's weights: same logits as this process's model.
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = SegmentorLogits(model, 64, 96)(x)
    session = ort.InferenceSession(str(out), providers=['CPUExecutionProvider'])
    (got, ) = session.run(None, {'input': x.numpy()})
    assert got.shape == (1, 150, 64, 96)
    scale = ref.abs().max().item()
    assert abs(got - ref.numpy()).max() <= REL_TOL * scale
    # ... and differently initialised weights would not pass that comparison.
    torch.manual_seed(2)
    other, _ = build_segmentor(config('segnext'))
    with torch.no_grad():
        other_ref = SegmentorLogits(other, 64, 96)(x)
    assert abs(got - other_ref.numpy()).max() > 100 * REL_TOL * scale


def test_missing_config_exits_nonzero_naming_it(tmp_path, capsys):
    tool = _load_tool()
    missing = tmp_path / 'no_such_config.py'
    status = tool.main([str(missing), '--shape', '64', '64', '--output', str(tmp_path / 'x.onnx')])
    assert status == 2
    assert f'config file not found: {missing}' in capsys.readouterr().err
    assert not (tmp_path / 'x.onnx').exists()


def test_missing_checkpoint_names_it(tmp_path, capsys):
    tool = _load_tool()
    missing = tmp_path / 'weights.pth'
    status = tool.main([config('segnext'), str(missing), '--shape', '64', '64', '--output',
                        str(tmp_path / 'x.onnx')])
    assert status == 2
    assert f'checkpoint file not found: {missing}' in capsys.readouterr().err


def test_checkpoint_of_another_model_is_refused(tmp_path):
    from mmseg_segman.deploy import build_segmentor

    ckpt = tmp_path / 'partial.pth'
    torch.save(dict(state_dict={'decode_head.conv_seg.weight': torch.zeros(150, 256, 1, 1)}),
               ckpt)
    with pytest.raises(ValueError, match=r'checkpoint .*partial\.pth does not match the model'
                       r'.* \d+ missing from the checkpoint'):
        build_segmentor(config('segnext'), str(ckpt))


def test_missing_package_message_names_pip_command():
    from mmseg_segman.deploy import require_packages

    with pytest.raises(ImportError) as err:
        require_packages('torch', 'no_such_pkg_xyz', 'another_missing_pkg')
    message = str(err.value)
    # Only the missing ones are named, and the command installs exactly those.
    assert 'package(s) no_such_pkg_xyz, another_missing_pkg, which are not installed' in message
    assert 'pip install no_such_pkg_xyz another_missing_pkg  (' in message
    assert 'requirements/tests.txt' in message and 'torch' not in message
    require_packages('torch', 'numpy')  # installed: no error


def test_wrapper_is_encode_decode_at_the_input_size():
    from mmseg_segman.deploy import SegmentorLogits, build_segmentor

    torch.manual_seed(0)
    model, _ = build_segmentor(config('segnext'))
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        logits = SegmentorLogits(model, 64, 96)(x)
        # MMSeg's own whole-image inference (data samples with the same metas).
        from mmseg.structures import SegDataSample
        sample = SegDataSample(metainfo=dict(img_shape=(64, 96), ori_shape=(64, 96),
                                             pad_shape=(64, 96), padding_size=[0, 0, 0, 0]))
        mmseg_logits = model.inference(x, [sample.metainfo])
    assert logits.shape == (1, 150, 64, 96)
    assert torch.equal(logits, mmseg_logits)
    assert logits.abs().max().item() > 0.1


@needs_onnx
@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize('family', ['segnext'])
def test_dynamic_export_serves_three_sizes(family, tmp_path):
    """``dynamic=True``: one file, H and W symbolic, ONNX Runtime equals PyTorch at three sizes
    (non-square, smaller and larger than the example), and no large index constants are
    stored: the file is at most 1.1x the weights."""
    import onnx

    from mmseg_segman.deploy import build_segmentor, export_onnx, verify_onnx

    torch.manual_seed(0)
    # One block per stage (the blocks of a stage export alike): 4 blocks to trace, not 13.
    model, _ = build_segmentor(config(family), cfg_options={'model.backbone.depths': [1] * 4})
    out = tmp_path / f'{family}.onnx'
    wrapper = export_onnx(model, (96, 128), str(out), dynamic=True)
    graph = onnx.load(str(out)).graph
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims[:2] == [1, 3] and all(isinstance(d, str) and d for d in dims[2:]), dims
    assert all(len(node.metadata_props) == 0 for node in graph.node)
    weights = sum(v.numel() * v.element_size() for v in model.state_dict().values())
    assert out.stat().st_size <= 1.1 * weights
    for h, w in ((64, 96), (160, 128), (256, 288)):
        x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(h))
        res = verify_onnx(wrapper, str(out), inputs=x)
        assert res['shape'] == (1, 150, h, w)
        assert res['rel'] <= REL_TOL, (family, (h, w), res)


def test_dynamic_export_of_lrformer_is_refused_before_tracing(tmp_path):
    """LRFormer's pooled grid sizes are Python ints rounded from the aspect ratio: a dynamic
    graph would keep the example's grids and index out of bounds at other sizes (measured:
    ONNX Runtime's Gather failed at 64x96 for a graph traced at 96x128). SegMAN-T's dynamic
    graph has the same kind of problem in its export scan, whose chunk padding and levels
    are Python decisions on the length (ONNX Runtime's Reshape failed at 64x96). Both are
    refused before tracing (test below)."""
    from mmseg_segman.deploy import build_segmentor, export_onnx

    model, _ = build_segmentor(config('lrformer'))
    with pytest.raises(ValueError, match="pooled grids follow the input's aspect ratio"):
        export_onnx(model, (64, 64), str(tmp_path / 'lrformer.onnx'), dynamic=True)
    assert not (tmp_path / 'lrformer.onnx').exists()


def test_lrformer_attention_refuses_a_symbolic_size_while_exporting():
    """The same guard inside the model, for export paths other than ours (torch.export)."""
    from mmseg_segman.models.layers.lrformer_blocks import LowResolutionSelfAttention

    block = LowResolutionSelfAttention(embed_dims=8, num_heads=2).eval()
    dims = {'x': {2: torch.export.Dim('h', min=16, max=256),
                  3: torch.export.Dim('w', min=16, max=256)}}
    with pytest.raises(Exception, match='symbolic \\(dynamic\\) height or width'):
        torch.export.export(block, (torch.randn(1, 8, 32, 48), ), dynamic_shapes=dims)
    # a static export of the same block goes through
    torch.export.export(block, (torch.randn(1, 8, 32, 48), ))


def test_dynamic_export_of_segman_is_refused_before_tracing(tmp_path):
    from mmseg_segman.deploy import build_segmentor, export_onnx

    model, _ = build_segmentor(config('segman'))
    with pytest.raises(ValueError, match='SegMAN graphs are right only at the size'):
        export_onnx(model, (64, 64), str(tmp_path / 'segman.onnx'), dynamic=True)
    assert not (tmp_path / 'segman.onnx').exists()


def test_cli_dynamic_segman_is_one_error_line(tmp_path, capsys):
    tool_path = Path(__file__).resolve().parents[2] / 'tools' / 'deployment' / 'pytorch2onnx.py'
    spec = importlib.util.spec_from_file_location('pytorch2onnx_tool', tool_path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    status = tool.main([config('segman'), '--shape', '64', '64', '--dynamic', '--output',
                        str(tmp_path / 'x.onnx')])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith('error: dynamic=True: SegMAN graphs are right only')
    assert not (tmp_path / 'x.onnx').exists()
