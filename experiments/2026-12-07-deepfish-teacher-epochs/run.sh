#!/usr/bin/env bash
# The real-data detector teacher (finprint/real_data.py, preset cpu) with 6 epochs instead of 4, trained alone with
# both cores, then scored on all 727 validation frames. Usage: bash run.sh OUTDIR [EPOCHS]
set -euo pipefail
out=${1:?usage: run.sh OUTDIR [EPOCHS]}
epochs=${2:-6}
data=${FINPRINT_SHARED:-../shared/data}/deepfish-masks/instances.json
here=$(dirname "$0")
mkdir -p "$out"
start=$(date +%s)
finprint train --task detect --model fishseg-teacher-lite0 --data "$data" --val-groups 7398,9866 --imgsz 320 --batch 8 \
    --lr 0.001 --set train_max=1500 --set val_max=200 --set freeze_stages=3 \
    --set aug_colour=0.3 --set aug_gray=0.1 --set aug_hue=0.05 \
    --out "$out/teacher-e$epochs" --epochs "$epochs" --seed 0 --device cpu
echo "training wall time: $(( $(date +%s) - start )) s" | tee "$out/teacher-e$epochs.wall.txt"
finprint eval --model "$out/teacher-e$epochs" --data "$data" --val-groups 7398,9866 --json "$out/teacher-e$epochs.eval.json" --device cpu
cp "$out/teacher-e$epochs/metrics.jsonl" "$here/teacher-e$epochs.metrics.jsonl"
cp "$out/teacher-e$epochs.eval.json" "$out/teacher-e$epochs.wall.txt" "$here/"
