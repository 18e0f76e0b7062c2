#!/usr/bin/env bash
# The prepared GPU check of issue 13, for a machine that has only a CUDA build of PyTorch
# (with its Triton) installed: installs the plugin's other dependencies from a folder of
# wheels (no index), runs the CUDA test tier, then benchmarks/gpu_check.py. Every section
# has its own time limit so that the whole run stays under 8 minutes.
#
#   tools/gpu_check.sh [--wheels DIR] [--out DIR] [--dry-run]
#
#   --wheels DIR  wheels of mmengine, mmsegmentation, mmcv-lite, ftfy, regex, pytest,
#                 pytest-timeout and their dependencies (made beforehand on a machine with
#                 an index: pip download -d DIR -r requirements/runtime.txt mmcv-lite
#                 pytest pytest-timeout -c requirements/constraints.txt, without torch);
#                 skipped if they import already. Default: $MMSEG_SEGMAN_WHEELS.
#   --out DIR     logs and gpu_check.json go here. Default: $OUT, else work_dirs/gpu_check.
#   --dry-run     on CPU: the CUDA tier must collect and skip, and the benchmark runs in its
#                 --device cpu --tiny mode; checks this script, measures nothing.
#
# Environment: PYTHON (default python3), GPU_CHECK_TIER_S (default 270), GPU_CHECK_BENCH_S
# (default 170), GPU_CHECK_AB_S (default 60: the flex rpb-gradient A/B on SegMAN-T).
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
PY="${PYTHON:-python3}"
WHEELS="${MMSEG_SEGMAN_WHEELS:-}"
OUT_DIR="${OUT:-$REPO/work_dirs/gpu_check}"
DRY=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --wheels) WHEELS="$2"; shift 2 ;;
        --out) OUT_DIR="$2"; shift 2 ;;
        --dry-run) DRY=1; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
mkdir -p "$OUT_DIR"
START=$(date +%s)
status=0
note() { echo "[gpu_check +$(( $(date +%s) - START ))s] $*"; }

# 1. Dependencies (never torch: the machine's CUDA build stays).
if ! "$PY" -c "import mmengine, mmseg, mmcv, pytest, pytest_timeout" 2>/dev/null; then
    if [[ -z "$WHEELS" || ! -d "$WHEELS" ]]; then
        echo "gpu_check.sh: mmengine/mmseg/mmcv/pytest do not import and no wheel folder was" \
             "given: pass --wheels DIR (see --help for how to make it)" >&2
        exit 2
    fi
    note "installing the dependencies from $WHEELS"
    "$PY" -m pip install --no-index --find-links "$WHEELS" mmengine mmsegmentation mmcv-lite \
        ftfy regex pytest pytest-timeout >"$OUT_DIR/pip.log" 2>&1 \
        || { echo "gpu_check.sh: pip failed, see $OUT_DIR/pip.log" >&2; exit 2; }
fi
# The plugin is this checkout: the GPU machine has no index to install it from, so its
# scripts find it through PYTHONPATH (where it is installed editable, the same code).
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
"$PY" - <<'EOF' | tee "$OUT_DIR/env.txt"
import torch
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available',
      torch.cuda.is_available())
if torch.cuda.is_available():
    print('gpu', torch.cuda.get_device_name())
try:
    import triton
    print('triton', triton.__version__)
except ImportError:
    print('triton missing')
EOF

if [[ $DRY == 1 ]]; then
    note "dry run: CUDA tier collection (must skip without CUDA)"
    # -o addopts=: in this process, without pytest.ini's xdist workers (not installed here).
    OMP_NUM_THREADS=1 timeout 300 "$PY" -m pytest tests/cuda -m cuda -q -p no:cacheprovider \
        -o addopts= -rs >"$OUT_DIR/tier.log" 2>&1
    rc=$?; tail -3 "$OUT_DIR/tier.log"; [[ $rc == 0 ]] || status=1
    note "dry run: benchmark in its CPU tiny mode (SegMAN-T)"
    OMP_NUM_THREADS=1 timeout 300 "$PY" benchmarks/gpu_check.py --device cpu --tiny \
        --models segman-t --json "$OUT_DIR/gpu_check.json" >"$OUT_DIR/bench.log" 2>&1
    rc=$?; grep -v -e ' - mmengine - ' "$OUT_DIR/bench.log" | tail -3; [[ $rc == 0 ]] || status=1
    note "dry run done, status $status"
    exit $status
fi

# 2. The CUDA tier and the CPU tests of the GPU code paths (flex rpb gradient, Triton scan).
note "CUDA tier (limit ${GPU_CHECK_TIER_S:-270} s)"
timeout "${GPU_CHECK_TIER_S:-270}" "$PY" -m pytest tests/cuda tests/ops/test_na_flex.py \
    -q -p no:cacheprovider -o addopts= -x --durations=15 -rfEs >"$OUT_DIR/tier.log" 2>&1
rc=$?
tail -25 "$OUT_DIR/tier.log"
[[ $rc == 124 ]] && note "CUDA tier hit its time limit (rc 124)"
[[ $rc == 0 ]] || status=1

# 3. The benchmark (batch 8, 512 x 512, AMP float16), flex rpb gradient as the module sets it.
note "benchmark (limit ${GPU_CHECK_BENCH_S:-170} s)"
timeout "${GPU_CHECK_BENCH_S:-170}" "$PY" benchmarks/gpu_check.py --json "$OUT_DIR/gpu_check.json" \
    >"$OUT_DIR/bench.log" 2>&1
rc=$?
grep -v -e ' - mmengine - ' "$OUT_DIR/bench.log" | tail -12
[[ $rc == 124 ]] && note "benchmark hit its time limit (rc 124); rows printed so far are valid"
[[ $rc == 0 ]] || status=1

# 4. A/B of the flex rpb gradient on SegMAN-T's training step.
note "flex rpb-gradient A/B on SegMAN-T (limit ${GPU_CHECK_AB_S:-60} s)"
timeout "${GPU_CHECK_AB_S:-60}" "$PY" benchmarks/gpu_check.py --models segman-t --rpb-grad flex \
    --repeats 3 --json "$OUT_DIR/gpu_check_rpb_flex.json" >"$OUT_DIR/bench_rpb_flex.log" 2>&1
rc=$?
grep -v -e ' - mmengine - ' "$OUT_DIR/bench_rpb_flex.log" | tail -4
[[ $rc == 0 ]] || status=1
note "done, status $status; logs and JSON in $OUT_DIR"
exit $status
