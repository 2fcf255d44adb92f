#!/usr/bin/env bash
# Chapter 3's full run: quality against the patch size P at equal training wall-clock, on emoji
# 64×64, through the papermill experiment notebooks. Writes results/patching_equal_time/P{P}.json
# (FID@N, KID, precision/recall) and P{P}.png (samples) for P = 1, 2, 4, 8.
#   usage: scripts/run_patching_equal_time.sh [MINUTES_PER_RUN=6] [N_SAMPLES=500] [PARALLEL=2]
# Runs PARALLEL trainings at a time with one thread each (two cores here), so every P gets the
# same kind of core for the same time.
set -euo pipefail
cd "$(dirname "$0")/.."
MIN=${1:-6}; N=${2:-500}; PAR=${3:-2}
OUT=results/patching_equal_time; mkdir -p "$OUT" runs/patching_equal_time
export OMP_NUM_THREADS=1
train() {
  P=$1; RUN=runs/patching_equal_time/P$P
  .venv/bin/papermill -k python3 notebooks/experiments/train.ipynb "$RUN.train.ipynb" \
    -p method patched -p preset small -p patch_size "$P" -p dataset emoji -p resolution 64 \
    -p batch_size 32 -p steps 100000 -p amp bf16 -p sample_every 0 -p ckpt_every 0 \
    -p max_minutes "$MIN" -p out_dir "$RUN" -y '{"extra": {"log_every": 10}}' >"$RUN.train.log" 2>&1
}
evaluate() {
  P=$1; RUN=runs/patching_equal_time/P$P
  .venv/bin/papermill -k python3 notebooks/experiments/evaluate.ipynb "$RUN.eval.ipynb" \
    -p checkpoint "$RUN/latest.pt" -p sampler ddim -p steps 50 -p n_samples "$N" -p n_ref "$N" \
    -p batch_size 50 -p out_json "$OUT/P$P.json" -p out_grid "$OUT/P$P.png" >"$RUN.eval.log" 2>&1
  cp "$RUN/config.json" "$OUT/P$P.config.json"; cp "$RUN/metrics.jsonl" "$OUT/P$P.metrics.jsonl"
}
# The reference statistics are shared: compute them once before the parallel evaluations.
.venv/bin/python -c "from pdlib.metrics import reference_stats; reference_stats('emoji', 64, $N)"
for group in "1 2" "4 8"; do
  for P in $group; do train "$P" & done; wait
done
for group in "1 2" "4 8"; do
  for P in $group; do evaluate "$P" & done; wait
done
echo "done: $OUT"
