#!/usr/bin/env bash
# Short DeepFish detector-teacher runs (fishseg-teacher-lite0, ImageNet trunk, 600 evenly spread training frames,
# 200 validation frames of habitats 7398 + 9866), three at a time single-threaded on 2 cores (~7-11 min each).
# Usage: bash experiments/2026-12-07-deepfish-colour/run.sh OUTDIR
set -euo pipefail
out=${1:?usage: run.sh OUTDIR}
colour=(--set aug_colour=0.3 --set aug_gray=0.1 --set aug_hue=0.05)
run() {  # name epochs imgsz [--set ...]
  local name=$1 epochs=$2 imgsz=$3; shift 3
  finprint train --task detect --model fishseg-teacher-lite0 --data ../shared/data/deepfish-masks/instances.json \
    --val-groups 7398,9866 --batch 8 --lr 1e-3 --epochs "$epochs" --imgsz "$imgsz" --out "$out/$name" \
    --set train_max=600 --set val_max=200 --set threads=1 "$@" > "$out/$name.log" 2>&1
}
mkdir -p "$out"
run A 1 320 --set freeze_stages=3 &
run B 1 320 --set freeze_stages=3 "${colour[@]}" &
run C 1 320 --set freeze_stages=5 "${colour[@]}" &
wait
run D 2 320 --set freeze_stages=3 "${colour[@]}" &
run F 2 320 --set freeze_stages=3 --set aug_colour=0.5 --set aug_gray=0.2 --set aug_hue=0.08 --set "aug_scale=[0.5,1.5]" &
wait
