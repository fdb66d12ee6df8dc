#!/usr/bin/env bash
# The long runs of this round: `ppl-dgm reproduce` for ADGM and SDGM on MNIST with 100 labels, one
# thread each, side by side (one job per core), with the registered recipes on the backend the
# throughput table measured faster (NumPyro for both). Budgets are training CPU time
# (budget_clock=cpu); predictions average 10 samples of a during training and the registered 100
# at the end (ppl-dgm evaluate). Run from the repository root; MNIST from $PPL_DGM_DATA.
#   ADGM_MINUTES=60 SDGM_MINUTES=70 bash benchmarks/results/reproduce/commands.sh
# A second call with larger budgets continues both runs from their checkpoints.
set -euo pipefail
DATA=${PPL_DGM_DATA:-../shared/data}
OUT=${OUT:-runs/reproduce}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
long() {  # CLAIM MINUTES
    ppl-dgm reproduce "$1" --minutes "$2" --data-dir "$DATA" --config budget_clock=cpu \
        --config classify_samples=10 --no-progress --out "$OUT/$1" > "$OUT/$1.log" 2>&1
    ppl-dgm evaluate "$OUT/$1/runs/"*-seed0 --classify-samples 100 --iw-samples 0 \
        > "$OUT/$1.evaluate.log" 2>&1
}
mkdir -p "$OUT"
uptime > "$OUT/uptime-start.txt"
long sdgm-mnist100 "${SDGM_MINUTES:-70}" &
sleep "${ADGM_DELAY:-0}"
long adgm-mnist100 "${ADGM_MINUTES:-60}" &
wait
uptime > "$OUT/uptime-end.txt"
