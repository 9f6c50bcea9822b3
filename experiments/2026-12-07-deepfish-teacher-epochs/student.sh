#!/usr/bin/env bash
# The real preset's KD student (fishseg-student-lite, seed 0) distilled from the 6-epoch teacher of run.sh, trained
# alone with both cores, then scored on all 727 validation frames. Usage: bash student.sh OUTDIR [all]
#   (default: the preset's 800 frames, 2 cached teacher views -> student-kd-e6;
#    all: every training frame, 1 view -> student-kd-all)
set -euo pipefail
out=${1:?usage: student.sh OUTDIR [all]}
if [ "${2:-}" = all ]; then name=student-kd-all frames=0 views=1; else name=student-kd-e6 frames=800 views=2; fi
data=${FINPRINT_SHARED:-../shared/data}/deepfish-masks/instances.json
here=$(dirname "$0")
start=$(date +%s)
finprint distill --teacher "$out/teacher-e6" --student fishseg-student-lite --data "$data" --val-groups 7398,9866 \
    --imgsz 320 --batch 8 --lr 0.001 --set train_max=$frames --set val_max=200 --set aug_variants=$views \
    --set freeze_stages=3 --set aug_colour=0.3 --set aug_gray=0.1 --set aug_hue=0.05 \
    --out "$out/$name" --epochs 4 --seed 0 --device cpu
echo "training wall time: $(( $(date +%s) - start )) s" | tee "$out/$name.wall.txt"
finprint eval --model "$out/$name" --data "$data" --val-groups 7398,9866 --json "$out/$name.eval.json" --device cpu
cp "$out/$name/metrics.jsonl" "$here/$name.metrics.jsonl"
cp "$out/$name.eval.json" "$out/$name.wall.txt" "$here/"
