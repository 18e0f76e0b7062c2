#!/usr/bin/env bash
# Install (idempotent, see tools/install.sh) and run the tests in three stages:
#   1. the main suite in .venv (the default stack: torch 2.13, onedl-mmengine/mmcv/mmseg);
#   2. the smoke tier (pytest -m smoke) in .venv-frozen, the frozen OpenMMLab stack
#      (torch 2.1.2, mmengine 0.10.7, mmcv-lite 2.1.0, mmsegmentation 1.2.2);
#   3. tests/classification in .venv-cls, where mmpretrain imports.
# Extra arguments go to pytest, e.g. `bash tools/run_tests.sh tests/test_shims.py -x`:
# paths under tests/classification run in stage 3 only, other paths in stage 1 only;
# without a path argument (options only, e.g. -m "not slow") stages 1 and 3 get them.
# Stage 1 runs on MMSEG_SEGMAN_TEST_WORKERS pytest-xdist workers (default 2, 0: in-process).
# `bash tools/run_tests.sh --frozen` runs stage 2 only. MMSEG_SEGMAN_FROZEN=0 and
# MMSEG_SEGMAN_CLASSIFICATION=0 skip stages 2 and 3. The exit status is non-zero if any
# stage fails.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

# The smoke tier: import boundary, shims, the 12 variants, golden outputs, toy training /
# test / resume after a kill, MMSeg's own train and test scripts.
SMOKE_FILES=(tests/test_plugin_boundaries.py tests/test_shims.py
             tests/models/test_all_variants.py tests/models/test_segman_model.py
             tests/models/test_lrformer_model.py tests/engine/test_resume.py
             tests/tools/test_train_test.py tests/apis/test_mmseg_entry_points.py)

main_args=() cls_args=() main_paths=0 cls_paths=0 only_frozen=0
for arg in "$@"; do
    case "$arg" in
        --frozen) only_frozen=1 ;;
        tests/classification | tests/classification/* | tests/classification::*)
            cls_args+=("$arg"); cls_paths=1 ;;
        tests | tests/* | tests::*)
            main_args+=("$arg"); main_paths=1 ;;
        *) main_args+=("$arg"); cls_args+=("$arg") ;;
    esac
done
run_main=1 run_frozen=1 run_cls=1
[[ $cls_paths == 1 && $main_paths == 0 ]] && run_main=0
[[ $main_paths == 1 && $cls_paths == 0 ]] && run_cls=0
[[ $main_paths == 1 || $cls_paths == 1 || ${#main_args[@]} -gt 0 ]] && run_frozen=0
[[ $only_frozen == 1 ]] && { run_main=0; run_cls=0; run_frozen=1; }
[[ "${MMSEG_SEGMAN_FROZEN:-1}" == 0 ]] && run_frozen=0
[[ "${MMSEG_SEGMAN_CLASSIFICATION:-1}" == 0 ]] && run_cls=0
[[ $cls_paths == 0 ]] && cls_args+=(tests/classification)

status=0
if [[ $run_main == 1 ]]; then
    bash "$REPO/tools/install.sh" --tests
    # Every test runs one intra-op thread (tests/conftest.py), so the main suite spreads over
    # both cores with pytest-xdist (worksteal: a worker that is done takes queued tests from
    # the other). MMSEG_SEGMAN_TEST_WORKERS=0 runs it in this one process. Without arguments,
    # the tests marked torchrun_alone (2-process runs that must end cleanly) run afterwards,
    # one at a time: with another test loading the CPU, a worker of a finished 2-process run
    # sometimes aborts at exit (docs/get_started.md, Tests).
    workers="${MMSEG_SEGMAN_TEST_WORKERS:-2}"
    echo "[run_tests] main suite in .venv (default stack), $workers pytest-xdist workers"
    if [[ ${#main_args[@]} -eq 0 && $workers != 0 ]]; then
        # shellcheck disable=SC1091
        (. .venv/bin/activate && python -m pytest -n "$workers" --dist worksteal \
            -m "not torchrun_alone") || status=$?
        # shellcheck disable=SC1091
        (. .venv/bin/activate && python -m pytest -n 0 -m torchrun_alone) || status=$?
    else
        # shellcheck disable=SC1091
        (. .venv/bin/activate && python -m pytest -n "$workers" --dist worksteal \
            ${main_args[@]+"${main_args[@]}"}) || status=$?
    fi
fi
if [[ $run_frozen == 1 ]]; then
    bash "$REPO/tools/install.sh" --frozen
    echo "[run_tests] smoke tier in .venv-frozen (frozen OpenMMLab stack)"
    # shellcheck disable=SC1091
    (. .venv-frozen/bin/activate && python -m pytest -m smoke "${SMOKE_FILES[@]}") \
        || status=$?
fi
if [[ $run_cls == 1 ]]; then
    bash "$REPO/tools/install.sh" --classification
    echo "[run_tests] classification tests in .venv-cls"
    # Tells tests/classification that mmpretrain must import here (a missing one fails).
    # shellcheck disable=SC1091
    (. .venv-cls/bin/activate && MMSEG_SEGMAN_CLASSIFICATION_ENV=1 \
        python -m pytest "${cls_args[@]}") || status=$?
fi
exit "$status"
