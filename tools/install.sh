#!/usr/bin/env bash
# Create (or reuse) the virtual environment .venv in the repository and install the
# pinned CPU stack plus this package (editable). With --tests, also the test tools and
# the optional accelerators that serve as test oracles (natten, mamba-ssm).
#
# Idempotent and quick when nothing changed: a stamp in .venv records the hash of the
# requirement files and of this script; a matching stamp skips pip entirely.
#
# Environment: PYTHON (interpreter for a new venv, default python3),
#   MMSEG_SEGMAN_NO_ACCELERATORS=1 (with --tests: skip natten / mamba-ssm; their
#   oracle tests then skip, or fail under CI).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
WITH_TESTS=0
[[ "${1:-}" == "--tests" ]] && WITH_TESTS=1

if [[ ! -x .venv/bin/python ]]; then
    echo "[install] creating virtual environment $REPO/.venv"
    "${PYTHON:-python3}" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate

STAMP=".venv/.mmseg_segman_install_$WITH_TESTS"
HASH="$(cat requirements.txt requirements/*.txt tools/install.sh setup.py \
        <(echo "${MMSEG_SEGMAN_NO_ACCELERATORS:-0}") | sha256sum | cut -d' ' -f1)"
# A --tests install includes the plain one.
for stamp in "$STAMP" .venv/.mmseg_segman_install_1; do
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$HASH" ]]; then
        echo "[install] .venv is up to date"
        exit 0
    fi
done

pip_install() { python -m pip install --quiet "$@"; }

echo "[install] torch (CPU wheel where no CUDA build applies)"
pip_install "$(grep -E '^torch==' requirements.txt)"
echo "[install] pinned MMSeg stack"
pip_install -r requirements.txt
# torch's setuptools is enough to build this package; no isolated build env needed.
pip_install --no-build-isolation --no-deps -e .

if [[ $WITH_TESTS == 1 ]]; then
    echo "[install] test tools"
    pip_install -r requirements/tests.txt
    if [[ "${MMSEG_SEGMAN_NO_ACCELERATORS:-0}" != 1 ]]; then
        # natten is source-only; its build needs the installed torch, hence no isolation.
        echo "[install] natten (optional oracle; builds in under a minute)"
        pip_install --no-build-isolation "$(grep -E '^natten==' requirements/optional.txt)"
        # Without these flags the packages try to compile or download CUDA kernels.
        echo "[install] mamba-ssm + causal-conv1d (optional oracle; a few minutes)"
        MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE \
        CAUSAL_CONV1D_SKIP_CUDA_BUILD=TRUE CAUSAL_CONV1D_FORCE_BUILD=TRUE \
            pip_install --no-build-isolation \
            "$(grep -E '^causal-conv1d==' requirements/optional.txt)" \
            "$(grep -E '^mamba-ssm==' requirements/optional.txt)"
    fi
fi
echo "$HASH" > "$STAMP"
echo "[install] done"
