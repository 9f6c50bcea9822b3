#!/usr/bin/env bash
# student.sh with every training frame (train_max=0: 3,149) and one cached teacher view per frame, alone.
# Usage: bash student-all.sh OUTDIR (run.sh's OUTDIR)
set -euo pipefail
out=${1:?usage: student-all.sh OUTDIR}
data=${FINPRINT_SHARED:-../shared/data}/deepfish-masks/instances.json
here=$(dirname "$0")
start=$(date +%s)
finprint distill --teacher "$out/teacher-e6" --student fishseg-student-lite --data "$data" --val-groups 7398,9866 \
    --imgsz 320 --batch 8 --lr 0.001 --set train_max=0 --set val_max=200 --set aug_variants=1 --set freeze_stages=3 \
    --set aug_colour=0.3 --set aug_gray=0.1 --set aug_hue=0.05 --out "$out/student-kd-all" --epochs 4 --seed 0 --device cpu
echo "training wall time: $(( $(date +%s) - start )) s" | tee "$out/student-kd-all.wall.txt"
finprint eval --model "$out/student-kd-all" --data "$data" --val-groups 7398,9866 --json "$out/student-kd-all.eval.json" --device cpu
cp "$out/student-kd-all/metrics.jsonl" "$here/student-kd-all.metrics.jsonl"
cp "$out/student-kd-all.eval.json" "$out/student-kd-all.wall.txt" "$here/"
