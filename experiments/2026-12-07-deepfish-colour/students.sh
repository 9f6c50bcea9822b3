#!/usr/bin/env bash
# Two DeepFish students without KD (B's colour shifts; 2 epochs x 600 frames), side by side single-threaded.
# Usage: bash experiments/2026-12-07-deepfish-colour/students.sh OUTDIR
set -euo pipefail
out=${1:?usage: students.sh OUTDIR}
mkdir -p "$out"
for m in lean lite; do
  extra=(); [ "$m" = lite ] && extra=(--set freeze_stages=3)
  finprint train --task detect --model "fishseg-student-$m" --data ../shared/data/deepfish-masks/instances.json \
    --val-groups 7398,9866 --batch 8 --lr 1e-3 --epochs 2 --imgsz 320 --out "$out/S-$m" --set train_max=600 --set val_max=200 \
    --set threads=1 --set aug_colour=0.3 --set aug_gray=0.1 --set aug_hue=0.05 "${extra[@]}" > "$out/S-$m.log" 2>&1 &
done
wait
