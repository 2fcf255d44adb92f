#!/usr/bin/env bash
# Chapter 3's full run: quality against the patch size P at equal training wall-clock, on emoji
# 64×64, through the papermill experiment notebooks. Writes results/patching_equal_time/P{P}.json
# (FID@N, KID, precision/recall), P{P}.png (samples), P{P}.config.json and P{P}.metrics.jsonl.
#   usage: scripts/run_patching_equal_time.sh [all|train|evaluate] [P ...]
#   settings (environment): MINUTES=6 per run, N_SAMPLES=250, STEPS=20 (DDIM), N_REF=500
# Training runs two P at a time with one thread each (two cores here), so every P gets the same
# kind of core for the same time; evaluation runs one P at a time on all cores (sampling at P=1
# is the expensive part: its network runs at the full 64×64).
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-all}; shift || true
PS=${*:-1 2 4 8}
MIN=${MINUTES:-6}; N=${N_SAMPLES:-250}; STEPS=${STEPS:-20}; NREF=${N_REF:-500}
OUT=results/patching_equal_time; mkdir -p "$OUT" runs/patching_equal_time
train() {
  P=$1; RUN=runs/patching_equal_time/P$P
  OMP_NUM_THREADS=1 .venv/bin/papermill -k python3 notebooks/experiments/train.ipynb "$RUN.train.ipynb" \
    -p method patched -p preset small -p patch_size "$P" -p dataset emoji -p resolution 64 \
    -p batch_size 32 -p steps 100000 -p amp bf16 -p sample_every 0 -p ckpt_every 0 \
    -p max_minutes "$MIN" -p out_dir "$RUN" -y '{"extra": {"log_every": 10}}' >"$RUN.train.log" 2>&1
}
evaluate() {
  P=$1; RUN=runs/patching_equal_time/P$P
  .venv/bin/papermill -k python3 notebooks/experiments/evaluate.ipynb "$RUN.eval.ipynb" \
    -p checkpoint "$RUN/latest.pt" -p sampler ddim -p steps "$STEPS" -p n_samples "$N" -p n_ref "$NREF" \
    -p batch_size 50 -p out_json "$OUT/P$P.json" -p out_grid "$OUT/P$P.png" >"$RUN.eval.log" 2>&1
  cp "$RUN/config.json" "$OUT/P$P.config.json"; cp "$RUN/metrics.jsonl" "$OUT/P$P.metrics.jsonl"
}
if [[ $MODE == all || $MODE == train ]]; then
  set -- $PS
  while (($#)); do                                   # two at a time
    train "$1" & [[ $# -ge 2 ]] && train "$2" &
    wait; shift; (($#)) && shift
  done
fi
if [[ $MODE == all || $MODE == evaluate ]]; then
  for P in $PS; do evaluate "$P"; done
fi
echo "done: $OUT"
