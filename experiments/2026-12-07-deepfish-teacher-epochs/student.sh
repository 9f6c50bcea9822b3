#!/usr/bin/env bash
# The real preset's KD student (fishseg-student-lite, seed 0) distilled from the 6-epoch teacher of run.sh, trained
# alone with both cores, then scored on all 727 validation frames. Usage: bash student.sh OUTDIR (run.sh's OUTDIR)
set -euo pipefail
out=${1:?usage: student.sh OUTDIR}
data=${FINPRINT_SHARED:-../shared/data}/deepfish-masks/instances.json
here=$(dirname "$0")
start=$(date +%s)
finprint distill --teacher "$out/teacher-e6" --student fishseg-student-lite --data "$data" --val-groups 7398,9866 \
    --imgsz 320 --batch 8 --lr 0.001 --set train_max=800 --set val_max=200 --set aug_variants=2 --set freeze_stages=3 \
    --set aug_colour=0.3 --set aug_gray=0.1 --set aug_hue=0.05 --out "$out/student-kd-e6" --epochs 4 --seed 0 --device cpu
echo "training wall time: $(( $(date +%s) - start )) s" | tee "$out/student-kd-e6.wall.txt"
finprint eval --model "$out/student-kd-e6" --data "$data" --val-groups 7398,9866 --json "$out/student-kd-e6.eval.json" --device cpu
cp "$out/student-kd-e6/metrics.jsonl" "$here/student-kd-e6.metrics.jsonl"
cp "$out/student-kd-e6.eval.json" "$out/student-kd-e6.wall.txt" "$here/"
