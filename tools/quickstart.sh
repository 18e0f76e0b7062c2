#!/usr/bin/env bash
# From a fresh checkout: install (idempotent), write the toy dataset, train a small model
# on the CPU, evaluate it (prints mIoU) and save a prediction overlay PNG.
#
#   bash tools/quickstart.sh
#
# It also writes $WORK_DIR/summary.json (the validation mIoU at each evaluation, the
# training loss at the first and last logged iteration, the training time) and the
# training curves $WORK_DIR/curves.png. QUICKSTART_RECORD=1 copies both into
# docs/quickstart/, which the README quotes (tests/test_docs_numbers.py compares them).
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
START=$(date +%s)
python tools/train.py "$CONFIG" --work-dir "$WORK_DIR" > "$WORK_DIR/train.log" 2>&1 || {
    tail -n 40 "$WORK_DIR/train.log"; echo "[quickstart] training failed"; exit 1; }
TRAIN_S=$(( $(date +%s) - START ))
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

python tools/analysis/analyze_logs.py "$WORK_DIR" --keys loss mIoU \
    --out "$WORK_DIR/curves.png" > /dev/null
python - "$WORK_DIR" "$CONFIG" "$TRAIN_S" "$MIOU" <<'PY'
import glob, json, os, sys
work_dir, config, train_s, miou = sys.argv[1:]
log = sorted(glob.glob(os.path.join(work_dir, '*', 'vis_data', 'scalars.json')))[-1]
records = [json.loads(line) for line in open(log) if line.strip()]
losses = [(r['step'], r['loss']) for r in records if 'loss' in r]
vals = [(r['step'], r['mIoU']) for r in records if 'mIoU' in r]
summary = dict(config=config, train_seconds=int(train_s), test_miou=float(miou.split()[-1]),
               val_miou={str(step): round(value, 2) for step, value in vals},
               first_loss=dict(iter=losses[0][0], loss=round(losses[0][1], 2)),
               last_loss=dict(iter=losses[-1][0], loss=round(losses[-1][1], 2)))
json.dump(summary, open(os.path.join(work_dir, 'summary.json'), 'w'), indent=1)
print('[quickstart] ' + ', '.join(f'mIoU {v:.2f} at iteration {s}' for s, v in vals) +
      f'; loss {summary["first_loss"]["loss"]} -> {summary["last_loss"]["loss"]}')
PY
if [[ "${QUICKSTART_RECORD:-0}" == 1 ]]; then
    mkdir -p docs/quickstart
    cp "$WORK_DIR/summary.json" "$WORK_DIR/curves.png" "$WORK_DIR/prediction_overlay.png" \
        docs/quickstart/
    echo "[quickstart] recorded in docs/quickstart/"
fi
