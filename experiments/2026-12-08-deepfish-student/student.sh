#!/usr/bin/env bash
# One DeepFish detector student on every training frame (one cached teacher view, 4 epochs, one thread), distilled
# from TEACHER (or without KD), then scored on all 727 validation frames.
# Usage: bash student.sh OUTDIR TEACHER MODEL SEED [nokd]
set -euo pipefail
out=${1:?usage: student.sh OUTDIR TEACHER MODEL SEED [nokd]} teacher=${2:?} model=${3:?} seed=${4:?}
kd=(); name=$model-kd-seed$seed
if [ "${5:-}" = nokd ]; then kd=(--no-kd); name=$model-nokd-seed$seed; fi
data=${FINPRINT_SHARED:-../shared/data}/deepfish-masks/instances.json
here=$(dirname "$0")
start=$(date +%s)
finprint distill --teacher "$teacher" --student "$model" "${kd[@]}" --data "$data" --val-groups 7398,9866 \
    --imgsz 320 --batch 8 --lr 0.001 --set train_max=0 --set val_max=200 --set aug_variants=1 \
    --set freeze_stages=3 --set aug_colour=0.3 --set aug_gray=0.1 --set aug_hue=0.05 --set threads=1 \
    --out "$out/$name" --epochs 4 --seed "$seed" --device cpu
echo "training wall time: $(( $(date +%s) - start )) s" | tee "$out/$name.wall.txt"
finprint eval --model "$out/$name" --data "$data" --val-groups 7398,9866 --json "$out/$name.eval.json" --device cpu
cp "$out/$name/metrics.jsonl" "$here/$name.metrics.jsonl"
cp "$out/$name.eval.json" "$out/$name.wall.txt" "$here/"
