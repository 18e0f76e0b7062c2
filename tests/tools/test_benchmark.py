"""tools/analysis/benchmark.py: finite timings and memory, the train step, bad input."""
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOL = REPO_ROOT / 'tools' / 'analysis' / 'benchmark.py'
_spec = importlib.util.spec_from_file_location('benchmark_tool', TOOL)
benchmark_tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(benchmark_tool)

SEGNEXT_T = REPO_ROOT / 'configs' / 'segnext' / 'segnext-t_ade20k.py'
TOY_SEGMAN_T = REPO_ROOT / 'configs' / 'toy' / 'segman-t_toy.py'


def _param_count(config):
    """Parameters of the config's model, built here without the tool's code."""
    cfg = Config.fromfile(config)
    init_default_scope('mmseg')
    model_cfg = cfg.model.copy()
    model_cfg.backbone.pop('init_cfg', None)
    return sum(p.numel() for p in MODELS.build(model_cfg).parameters())


def _check_timings(res, batch, repeats):
    lat = res['latency_ms']
    assert len(lat['all']) == repeats
    assert all(math.isfinite(t) and t > 0 for t in lat['all'])
    assert lat['min'] == min(lat['all']) and lat['max'] == max(lat['all'])
    assert lat['min'] <= lat['median'] <= lat['max']
    assert res['images_per_s'] == pytest.approx(batch * 1e3 / lat['median'])
    assert math.isfinite(res['peak_memory_mib']) and res['peak_memory_mib'] > 0


def test_cli_inference_prints_finite_numbers(tmp_path):
    out = tmp_path / 'bench.json'
    proc = subprocess.run(
        [sys.executable, str(TOOL), str(SEGNEXT_T), '--shape', '32', '48', '--batch', '2',
         '--repeats', '3', '--warmup', '1', '--threads', '1', '--json', str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = dict(line.split(':', 1) for line in proc.stdout.splitlines() if ':' in line)
    numbers = re.findall(r'median ([\d.]+) ms, min ([\d.]+) ms, max ([\d.]+) ms',
                         lines['latency per iteration'])
    median, low, high = map(float, numbers[0])
    assert 0 < low <= median <= high and math.isfinite(high)
    throughput = float(re.search(r'([\d.]+) images/s', lines['throughput']).group(1))
    assert throughput == pytest.approx(2e3 / median, rel=0.02)  # printed with 2 decimals
    assert '1 thread(s)' in lines['task'] and 'input 2x3x32x48' in lines['task']
    res = json.loads(out.read_text())
    _check_timings(res, batch=2, repeats=3)
    assert res['task'] == 'test_step' and res['threads'] == 1
    # The process peak covers at least what was resident after the build.
    assert res['peak_memory_mib'] >= res['rss_after_build_mib'] > 0
    assert res['params_m'] == pytest.approx(_param_count(SEGNEXT_T) / 1e6)


def _capture_built_models():
    """Patch the tool's build_model to keep every model it builds."""
    built = []
    real_build = benchmark_tool.build_model

    def keep(*args, **kwargs):
        built.append(real_build(*args, **kwargs))
        return built[-1]

    return built, mock.patch.object(benchmark_tool, 'build_model', side_effect=keep)


def test_tensor_mode_and_checkpoint(tmp_path):
    cfg = Config.fromfile(SEGNEXT_T)
    torch.manual_seed(123)  # other weights than the benchmark's own seed (0) gives
    saved = benchmark_tool.build_model(cfg, (32, 32)).state_dict()
    torch.save({'state_dict': saved}, tmp_path / 'ckpt.pth')
    built, patch = _capture_built_models()
    with patch:
        res = benchmark_tool.benchmark(cfg, (32, 32), repeats=2, warmup=0, mode='tensor',
                                       checkpoint=str(tmp_path / 'ckpt.pth'))
    _check_timings(res, batch=1, repeats=2)
    assert res['task'] == 'tensor forward'
    loaded = built[0].state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in saved.items())


def test_train_times_forward_backward_and_optimizer_step():
    cfg = Config.fromfile(TOY_SEGMAN_T)
    with mock.patch.object(OptimWrapper, 'step', autospec=True,
                           side_effect=OptimWrapper.step) as step:
        res = benchmark_tool.benchmark(cfg, (32, 32), batch=2, repeats=2, warmup=1,
                                       train=True)
    # One optimizer step per warm-up and timed iteration (the config's OptimWrapper).
    assert step.call_count == 3
    _check_timings(res, batch=2, repeats=2)
    assert res['task'] == 'train_step'


def test_train_step_changes_the_weights():
    """The timed step really updates parameters (the optimizer is not a no-op)."""
    cfg = Config.fromfile(TOY_SEGMAN_T)
    torch.manual_seed(0)  # the tool seeds with 0 too: the same initial weights
    initial = benchmark_tool.build_model(cfg, (32, 32)).state_dict()
    torch.manual_seed(0)
    again = benchmark_tool.build_model(cfg, (32, 32)).state_dict()
    assert all(torch.equal(v, again[k]) for k, v in initial.items())  # seeded build
    built, patch = _capture_built_models()
    with patch:
        benchmark_tool.benchmark(cfg, (32, 32), batch=2, repeats=1, warmup=0, train=True)
    after = built[0].state_dict()
    norms = [k for k in initial if k.endswith('running_mean')]
    convs = [k for k, v in initial.items() if k.endswith('weight') and v.dim() == 4]
    assert convs and norms
    # Same start: BN running statistics move in a train-mode forward, and one AdamW step
    # moves the conv weights (lr > 0, non-zero gradients).
    assert any(not torch.equal(initial[k], after[k]) for k in norms)
    changed = [k for k in convs if not torch.equal(initial[k], after[k])]
    assert len(changed) >= 0.9 * len(convs)


def test_bad_arguments_name_the_problem(tmp_path, capsys):
    with pytest.raises(SystemExit):
        benchmark_tool.parse_args([str(SEGNEXT_T), str(tmp_path / 'missing.pth'),
                                   '--shape', '32', '32'])
    assert f'checkpoint file {tmp_path / "missing.pth"} does not exist' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        benchmark_tool.parse_args([str(SEGNEXT_T), '--shape', '32', '32', '--repeats', '0'])
    assert '--repeats must be at least 1' in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            benchmark_tool.parse_args([str(SEGNEXT_T), '--shape', '32', '32',
                                       '--device', 'cuda'])
        assert 'torch sees no CUDA device' in capsys.readouterr().err
