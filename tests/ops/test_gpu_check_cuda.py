"""benchmarks/gpu_check.py (the prepared GPU benchmark) checked on CPU: its backend counter
and its ``--device cpu --tiny`` mode, so that the script itself is known to run."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from mmseg_segman.ops import na2d, selective_scan_fn
from mmseg_segman.ops import selective_scan as ss
from mmseg_segman.ops.neighborhood_attention import api

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope='module')
def gpu_check():
    spec = importlib.util.spec_from_file_location('gpu_check', REPO / 'benchmarks' /
                                                  'gpu_check.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_backend_counter_counts_each_call_and_restores(gpu_check):
    originals = api.na2d_backend, ss.scan_backend
    q = torch.randn(1, 2, 9, 9, 4)
    u = torch.randn(1, 4, 10)
    with gpu_check.BackendCounter() as counter:
        na2d(q, q, q, 3)
        na2d(q, q, q, 3, rpb=torch.zeros(2, 5, 5))
        selective_scan_fn(u, u, -torch.ones(4, 1), torch.randn(1, 1, 10), torch.randn(1, 1, 10))
    assert dict(counter.counts) == {'na2d:tiled': 2, 'scan:chunked': 1}
    assert (api.na2d_backend, ss.scan_backend) == originals


def test_ratios_to_segnext(gpu_check):
    rows = [dict(model='segman-t', train=dict(latency_ms=30.0), infer=dict(images_per_s=50.0)),
            dict(model='segnext-t', train=dict(latency_ms=20.0), infer=dict(images_per_s=100.0))]
    assert gpu_check.ratios(rows) == dict(train_step_vs_segnext_t=1.5,
                                          inference_vs_segnext_t=2.0)
    assert gpu_check.ratios(rows[:1]) == {}


def test_tiny_cpu_run_writes_results(gpu_check, tmp_path):
    """The whole script in its CPU tiny mode on SegMAN-T and SegNeXt-T (about 6 s)."""
    out = tmp_path / 'gpu_check.json'
    gpu_check.main(['--device', 'cpu', '--tiny', '--models', 'segman-t', 'segnext-t',
                    '--json', str(out)])
    summary = json.loads(out.read_text())
    assert summary['settings']['size'] == 64 and summary['env']['rpb_grad'] == 'window'
    segman, segnext = summary['results']
    for task in ('train', 'infer'):
        assert segman[task]['images_per_s'] > 0 and segman[task]['peak_memory_mib'] > 0
        assert segman[task]['backends']['na2d:tiled'] > 0
        assert segman[task]['backends']['scan:chunked'] > 0
        assert segnext[task]['backends'] == {}  # SegNeXt has neither operator
    assert set(summary['ratios']) == {'train_step_vs_segnext_t', 'inference_vs_segnext_t'}
