#!/usr/bin/env bash
# From a fresh checkout: install (idempotent), write the toy dataset, train a small model
# on the CPU, evaluate it (prints mIoU) and save a prediction overlay PNG.
#
#   bash tools/quickstart.sh
#
# Environment: QUICKSTART_CONFIG (the model to train on the toy data),
#   QUICKSTART_WORK_DIR (default work_dirs/quickstart), OMP_NUM_THREADS (default 1:
#   the toy model is small, and extra threads only contend with the data workers).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CONFIG="${QUICKSTART_CONFIG:-configs/toy/segman-t_toy.py}"
WORK_DIR="${QUICKSTART_WORK_DIR:-work_dirs/quickstart}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

bash "$REPO/tools/install.sh"
cd "$REPO"
# shellcheck disable=SC1091
. .venv/bin/activate

if [[ ! -d data/toy/annotations/validation ]]; then
    python tools/make_toy_dataset.py data/toy
fi

mkdir -p "$WORK_DIR"
echo "[quickstart] training $CONFIG on CPU (a few minutes; log: $WORK_DIR/train.log)"
python tools/train.py "$CONFIG" --work-dir "$WORK_DIR" > "$WORK_DIR/train.log" 2>&1 || {
    tail -n 40 "$WORK_DIR/train.log"; echo "[quickstart] training failed"; exit 1; }
CHECKPOINT="$(cat "$WORK_DIR/last_checkpoint")"

echo "[quickstart] evaluating $CHECKPOINT"
SHOW_DIR="$REPO/$WORK_DIR/show"
rm -rf "$SHOW_DIR"
python tools/test.py "$CONFIG" "$CHECKPOINT" --work-dir "$WORK_DIR/test" \
    --show-dir "$SHOW_DIR" > "$WORK_DIR/test.log" 2>&1 || {
    tail -n 40 "$WORK_DIR/test.log"; echo "[quickstart] testing failed"; exit 1; }

OVERLAY="$(find "$SHOW_DIR" -name '*.png' | sort | head -n 1)"
[[ -n "$OVERLAY" ]] || { echo "[quickstart] no overlay was written"; exit 1; }
cp "$OVERLAY" "$WORK_DIR/prediction_overlay.png"
MIOU="$(grep -oE 'mIoU: [0-9.]+' "$WORK_DIR/test.log" | tail -n 1)"
echo "[quickstart] $MIOU on the toy validation set"
echo "[quickstart] overlay (ground truth | prediction): $WORK_DIR/prediction_overlay.png"
