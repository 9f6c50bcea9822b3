#!/usr/bin/env bash
# The real-data embedder teacher (finprint/real_data.py, preset cpu) with every stage trained (freeze_stages=0)
# instead of the stem and three stages frozen, then scored on the f4k-tracklets test split (s2 queries vs s1 gallery).
# Usage: PATH=.venv/bin:$PATH bash run.sh OUTDIR [EPOCHS]
set -euo pipefail
out=${1:?usage: run.sh OUTDIR [EPOCHS]}
epochs=${2:-8}
data=${FINPRINT_SHARED:-../shared/data}/f4k-tracklets
here=$(dirname "$0")
mkdir -p "$out"
start=$(date +%s)
finprint train --task embed --model embed-teacher-lite0 --data "$data" --batch 32 --lr 0.001 \
    --set repeats=2 --set freeze_stages=0 --out "$out/teacher-unfrozen" --epochs "$epochs" --seed 0 --device cpu
echo "training wall time: $(( $(date +%s) - start )) s" | tee "$out/teacher-unfrozen.wall.txt"
finprint eval --model "$out/teacher-unfrozen" --data "$data" --json "$out/teacher-unfrozen.eval.json" --device cpu
cp "$out/teacher-unfrozen/metrics.jsonl" "$here/teacher-unfrozen.metrics.jsonl"
cp "$out/teacher-unfrozen.eval.json" "$out/teacher-unfrozen.wall.txt" "$here/"
