"""benchmarks/bench_models.py: a tiny run prints finite ratios to MMSeg's SegNeXt-T."""
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / 'benchmarks' / 'bench_models.py'


def _run(*args):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True,
                          text=True, env=env, cwd=REPO_ROOT, timeout=600)


@pytest.mark.slow  # two subprocesses importing MMSeg: 15-45 s on the shared 2-core machine
def test_tiny_run_prints_finite_ratios(tmp_path):
    out_json = tmp_path / 'bench.json'
    # SegMAN-T only: the script adds the baseline by itself.
    proc = _run('--models', 'segman-t', '--sizes', '64', '--tasks', 'eval', '--threads', '1',
                '--rounds', '2', '--json', str(out_json))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r['model']: r for r in json.loads(out_json.read_text())['timing']}
    assert set(rows) == {'segman-t', 'mmseg-segnext-t'}
    seg, base = rows['segman-t'], rows['mmseg-segnext-t']
    for row in (seg, base):
        assert row['size'] == [64, 64] and row['threads'] == 1 and row['task'] == 'eval'
        assert 0 < row['min_ms'] <= row['median_ms'] <= row['max_ms'] < 60_000
        assert math.isfinite(row['ratio']) and row['ratio'] > 0
    assert base['ratio'] == 1.0
    assert seg['ratio'] == pytest.approx(seg['median_ms'] / base['median_ms'], rel=1e-12)
    # The printed table carries the same ratio.
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith('| segman-t |'))
    printed = float(re.search(r'\| ([0-9.]+)× \|', line).group(1))
    assert printed == pytest.approx(seg['ratio'], abs=0.006)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_compile_adds_compiled_rows_with_compile_times(tmp_path):
    # aot_eager traces the same dynamo graphs as inductor without generating C++ (minutes
    # less). No test runs inductor itself; its speed and compile times are measured with
    # this script's default backend (docs/benchmarks.md).
    out_json = tmp_path / 'bench.json'
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), '--models', 'segman-t', '--sizes', '64', '--tasks',
         'eval', '--threads', '1', '--rounds', '2', '--compile', '--compile-backend',
         'aot_eager', '--json', str(out_json)],
        capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS='1'),
        cwd=REPO_ROOT, timeout=800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out_json.read_text())
    rows = {r['model']: r for r in data['timing']}
    assert set(rows) == {'segman-t', 'mmseg-segnext-t', 'segman-t+compiled',
                         'mmseg-segnext-t+compiled'}
    for name in ('segman-t', 'mmseg-segnext-t'):
        comp = rows[name + '+compiled']
        assert comp['speedup_over_eager'] == pytest.approx(
            rows[name]['median_ms'] / comp['median_ms'], rel=1e-12)
    assert rows['mmseg-segnext-t+compiled']['ratio_to_compiled_baseline'] == 1.0
    seconds = {r['model']: r['seconds'] for r in data['compile_s']}
    assert set(seconds) == {'segman-t+compiled', 'mmseg-segnext-t+compiled'}
    # the first (compiling) call is slower than a timed one
    assert all(seconds[m] * 1e3 > rows[m]['median_ms'] for m in seconds)
    checks = {r['model']: r for r in data['outputs_vs_baseline']}
    assert checks['segman-t+compiled']['max_abs_diff'] <= 1e-4  # relative, see the script
    assert 'compile s' in proc.stdout and 'compiled (aot_eager, default mode)' in proc.stdout


def test_bad_size_names_the_argument(capsys):
    """In-process: argparse's exit status 2 and a message naming the option and the value."""
    with pytest.raises(SystemExit) as exit_info:
        _load_script().parse_args(['--sizes', '512x', '--rounds', '1'])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--sizes" in err and "'512x'" in err and 'HxW' in err


def _load_script():
    import importlib.util
    spec = importlib.util.spec_from_file_location('bench_models_under_test', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_baseline_swap_runs_the_old_code_and_restores(tmp_path):
    """--baseline: a changed function of the old copy is used inside ``active()`` only, also
    where another module imported it by name."""
    import shutil

    import torch

    import mmseg_segman
    from mmseg_segman.models.backbones import segman as segman_mod
    from mmseg_segman.models.layers import segman_blocks

    bench = _load_script()
    copy = tmp_path / 'mmseg_segman'
    shutil.copytree(Path(mmseg_segman.__file__).parent, copy,
                    ignore=shutil.ignore_patterns('__pycache__'))
    blocks = copy / 'models' / 'layers' / 'segman_blocks.py'
    blocks.write_text(blocks.read_text() + (
        '\n\n_live_apply_rope2d = apply_rope2d\n\n\n'
        'def apply_rope2d(x, sin, cos):\n    return 2 * _live_apply_rope2d(x, sin, cos)\n'))
    swap = bench.BaselineSwap(str(tmp_path))
    assert swap.files == [str(Path('models') / 'layers' / 'segman_blocks.py')]

    torch.manual_seed(0)
    attn = segman_mod.LASSAttention(16, 2, 3).eval()
    x = torch.randn(1, 16, 8, 8)
    rope = segman_blocks.RoPE2d(8)(8, 8)
    live_fn = segman_mod.apply_rope2d
    with torch.no_grad():
        live = attn(x, rope)
        with swap.active():
            assert segman_mod.apply_rope2d is not live_fn
            q = torch.randn(1, 2, 8, 8, 8)
            assert torch.equal(segman_mod.apply_rope2d(q, *rope),
                               2 * live_fn(q, *rope))
            old = attn(x, rope)
        again = attn(x, rope)
    assert segman_mod.apply_rope2d is live_fn and segman_blocks.apply_rope2d is live_fn
    assert torch.equal(again, live)
    assert not torch.allclose(old, live)
