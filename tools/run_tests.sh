#!/usr/bin/env bash
# Install (idempotent, see tools/install.sh --tests) and run the test suite; then install the
# classification environment .venv-cls (tools/install.sh --classification) and run
# tests/classification there, where mmpretrain imports (in .venv those tests skip).
# Extra arguments go to pytest, e.g. `bash tools/run_tests.sh tests/test_compat.py -x`:
# paths under tests/classification run in .venv-cls, other paths in .venv; without a path
# argument (options only, e.g. -m "not slow") both stages run with the same options.
# MMSEG_SEGMAN_CLASSIFICATION=0 skips the .venv-cls stage. The exit status is non-zero if
# either stage fails.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

main_args=() cls_args=() main_paths=0 cls_paths=0
for arg in "$@"; do
    case "$arg" in
        tests/classification | tests/classification/* | tests/classification::*)
            cls_args+=("$arg"); cls_paths=1 ;;
        tests | tests/* | tests::*)
            main_args+=("$arg"); main_paths=1 ;;
        *) main_args+=("$arg"); cls_args+=("$arg") ;;
    esac
done
run_main=1 run_cls=1
[[ $cls_paths == 1 && $main_paths == 0 ]] && run_main=0
[[ $main_paths == 1 && $cls_paths == 0 ]] && run_cls=0
[[ "${MMSEG_SEGMAN_CLASSIFICATION:-1}" == 0 ]] && run_cls=0
[[ $cls_paths == 0 ]] && cls_args+=(tests/classification)

status=0
if [[ $run_main == 1 ]]; then
    bash "$REPO/tools/install.sh" --tests
    # shellcheck disable=SC1091
    (. .venv/bin/activate && python -m pytest ${main_args[@]+"${main_args[@]}"}) || status=$?
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
