#!/usr/bin/env bash
# The f4k embedder teacher, trained alone on 2 cores, then scored on the test split (s2 queries vs s1 gallery).
# Usage: teacher.sh OUT MODEL EPOCHS [--set KEY=VALUE ...]
set -euo pipefail
cd "$(dirname "$0")/../.."  # paths below are relative to the repository root
out=$1 model=$2 epochs=$3; shift 3
data=${DATA:-../shared/data/f4k-tracklets}
start=$(date +%s)
finprint train --task embed --model "$model" --data "$data" --batch 32 --lr 0.001 --set repeats=2 --set freeze_stages=3 "$@" \
  --epochs "$epochs" --seed 0 --out "$out"
echo "$(( ($(date +%s) - start) / 60 )) min" > "$out.wall.txt"
finprint eval --model "$out" --data "$data" --json "$out.eval.json"
