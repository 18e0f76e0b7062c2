#!/usr/bin/env bash
# Create (or reuse) the virtual environment .venv in the repository and install the
# pinned CPU stack (requirements.txt: torch and the maintained onedl-* OpenMMLab packages)
# plus this package (editable; nothing else: no .pth, no import hook). With --tests, also the test
# tools, the dataset-preparation extras (requirements/datasets.txt) and the optional
# accelerators that serve as test oracles (natten, mamba-ssm). Every pip call is bound by
# requirements/constraints.txt, the exact versions tested together.
#
# Idempotent and quick when nothing changed: a stamp in .venv records the hash of the
# requirement files and of this script; a matching stamp skips pip entirely.
#
# Environment: PYTHON (interpreter for a new venv, default python3),
#   TORCH_INDEX_URL (index for the torch wheel; e.g. https://download.pytorch.org/whl/cpu
#   for the CPU build: from PyPI, torch 2.13.0 is the CUDA build, several GB; default:
#   pip's configured index),
#   MMSEG_SEGMAN_NO_ACCELERATORS=1 (with --tests: skip natten / mamba-ssm; their
#   oracle tests then skip, or fail under CI).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

# --classification: the separate environment .venv-cls (requirements/classification.txt:
# torch 2.14.1 + torchvision 0.29.1 + mmpretrain 1.2.0, which the main .venv's torch 2.13.0
# cannot host), with this package (editable) and pytest; its own stamp, same scheme.
# Measured here: about 4 min from scratch (torch 2.14.1 and its CUDA libraries ~3 min),
# ~5.5 GB; a matching stamp skips pip.
if [[ "${1:-}" == "--classification" ]]; then
    CLS_VENV=.venv-cls
    if [[ ! -x $CLS_VENV/bin/python ]]; then
        echo "[install] creating virtual environment $REPO/$CLS_VENV"
        "${PYTHON:-python3}" -m venv "$CLS_VENV"
    fi
    CLS_STAMP="$CLS_VENV/.mmseg_segman_install_cls"
    CLS_HASH="$(cat requirements/classification.txt requirements/tests.txt tools/install.sh \
                setup.py | sha256sum | cut -d' ' -f1)"
    if [[ -f "$CLS_STAMP" && "$(cat "$CLS_STAMP")" == "$CLS_HASH" ]]; then
        echo "[install] $CLS_VENV is up to date"
        exit 0
    fi
    echo "[install] $CLS_VENV: requirements/classification.txt (torch 2.14.1, mmpretrain)"
    "$CLS_VENV/bin/python" -m pip install --quiet -r requirements/classification.txt \
        $(grep -hE '^(pytest(-timeout|-xdist)?|execnet)==' requirements/tests.txt \
              requirements/constraints.txt | sort -u)
    "$CLS_VENV/bin/python" -m pip install --quiet --no-build-isolation --no-deps -e .
    echo "$CLS_HASH" > "$CLS_STAMP"
    echo "[install] $CLS_VENV done"
    exit 0
fi

# --frozen: the frozen OpenMMLab stack users run on GPUs (requirements/frozen.txt: torch
# 2.1.2, numpy 1.26, mmengine 0.10.7, mmcv-lite 2.1.0, mmsegmentation 1.2.2) in .venv-frozen,
# with this package (editable) and pytest: the second CI stage. About 2-3 min from scratch
# (torch 2.1.2 from PyPI is the CUDA build, ~2.5 GB); a matching stamp skips pip.
if [[ "${1:-}" == "--frozen" ]]; then
    FZ_VENV=.venv-frozen
    if [[ ! -x $FZ_VENV/bin/python ]]; then
        echo "[install] creating virtual environment $REPO/$FZ_VENV"
        "${PYTHON:-python3}" -m venv "$FZ_VENV"
    fi
    FZ_STAMP="$FZ_VENV/.mmseg_segman_install_frozen"
    FZ_HASH="$(cat requirements/frozen.txt tools/install.sh setup.py | sha256sum | cut -d' ' -f1)"
    if [[ -f "$FZ_STAMP" && "$(cat "$FZ_STAMP")" == "$FZ_HASH" ]]; then
        echo "[install] $FZ_VENV is up to date"
        exit 0
    fi
    echo "[install] $FZ_VENV: requirements/frozen.txt (torch 2.1.2, mmengine 0.10.7, mmseg 1.2.2)"
    "$FZ_VENV/bin/python" -m pip install --quiet -r requirements/frozen.txt
    "$FZ_VENV/bin/python" -m pip install --quiet --no-build-isolation --no-deps -e .
    echo "$FZ_HASH" > "$FZ_STAMP"
    echo "[install] $FZ_VENV done"
    exit 0
fi

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
        <(echo "${MMSEG_SEGMAN_NO_ACCELERATORS:-0} ${TORCH_INDEX_URL:-}") \
        | sha256sum | cut -d' ' -f1)"
# A --tests install includes the plain one.
for stamp in "$STAMP" .venv/.mmseg_segman_install_1; do
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$HASH" ]]; then
        echo "[install] .venv is up to date"
        exit 0
    fi
done

pip_install() { python -m pip install --quiet -c requirements/constraints.txt "$@"; }

TORCH_PIN="$(grep -E '^torch==' requirements.txt)"
if [[ -n "${TORCH_INDEX_URL:-}" ]]; then
    echo "[install] $TORCH_PIN from $TORCH_INDEX_URL"
    # Only torch from there (that index need not carry the pinned versions of its
    # dependencies); the next call adds them from the configured index.
    pip_install --no-deps "$TORCH_PIN" --index-url "$TORCH_INDEX_URL"
    pip_install "$TORCH_PIN"
else
    echo "[install] $TORCH_PIN from pip's configured index (TORCH_INDEX_URL unset)"
    pip_install "$TORCH_PIN"
fi
# The upstream distributions provide the same import names as the onedl-* ones: a .venv
# made before the switch must lose them, or both would write into mmengine/, mmcv/, mmseg/.
for upstream in mmsegmentation mmcv-lite mmcv mmengine; do
    if python -m pip show --quiet "$upstream" >/dev/null 2>&1; then
        echo "[install] removing $upstream (replaced by its onedl-* continuation)"
        python -m pip uninstall --quiet --yes "$upstream"
    fi
done
echo "[install] pinned OpenMMLab stack (onedl-mmengine, onedl-mmcv, onedl-mmsegmentation)"
pip_install -r requirements.txt
# Say which build arrived: on a stock PyPI setup it is the CUDA one, which a machine
# without a GPU can run but never uses (and which pulls several GB of nvidia-* wheels).
python - <<'PY'
import shutil
import torch
cuda = torch.version.cuda
print(f'[install] torch {torch.__version__}: ' + (f'CUDA {cuda} build' if cuda else 'CPU build'))
if cuda and not shutil.which('nvidia-smi'):
    print('[install] note: no NVIDIA driver found; for the CPU wheel rerun with '
          'TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu')
PY
# torch's setuptools is enough to build this package; no isolated build env needed.
pip_install --no-build-isolation --no-deps -e .

if [[ $WITH_TESTS == 1 ]]; then
    echo "[install] test tools and dataset-preparation extras"
    pip_install -r requirements/tests.txt -r requirements/datasets.txt
    if [[ "${MMSEG_SEGMAN_NO_ACCELERATORS:-0}" != 1 ]]; then
        # natten is source-only; its build needs the installed torch, hence no isolation.
        echo "[install] natten (optional oracle; builds in under a minute)"
        pip_install --no-build-isolation "$(grep -E '^natten==' requirements/optional.txt)"
        # The oracle is mamba_ssm.ops.selective_scan_interface alone (tests/ops/conftest.py):
        # without its dependencies (--no-deps), whose transformers mmengine's optimizer
        # builder would import in every interpreter; einops and triton are what that module
        # imports. Without the two flags the build tries to compile or download CUDA kernels.
        echo "[install] mamba-ssm (optional oracle, its reference scan only)"
        MAMBA_SKIP_CUDA_BUILD=TRUE MAMBA_FORCE_BUILD=TRUE \
            pip_install --no-build-isolation --no-deps \
            "$(grep -E '^mamba-ssm==' requirements/optional.txt)" einops triton
    fi
fi
echo "$HASH" > "$STAMP"
echo "[install] done"
