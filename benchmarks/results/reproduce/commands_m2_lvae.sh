#!/usr/bin/env bash
# The long runs of the second round: `ppl-dgm reproduce` for M2 on MNIST with 100 labels (one core)
# and VAE vs LVAE on MNIST (the other core: the plain guide, then the ladder guide, each with the
# same budget), one thread each, side by side, registered recipes, the backend the throughput table
# measured faster (NumPyro for all three). Budgets are training CPU time (budget_clock=cpu).
# The log-likelihoods: the importance-weighted estimate with 5000 samples on the first 500 test
# images (`ppl-dgm evaluate --iw-samples 5000 --subset 500`), as in ../lvae_mnist/.
# Run from the repository root; MNIST from $PPL_DGM_DATA.
#   M2_MINUTES=95 LVAE_MINUTES=47 bash benchmarks/results/reproduce/commands_m2_lvae.sh
# A second call with larger budgets continues the runs from their checkpoints.
set -euo pipefail
DATA=${PPL_DGM_DATA:-../shared/data}
OUT=${OUT:-runs/reproduce}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$OUT"
uptime > "$OUT/uptime-start-m2-lvae.txt"
(
    ppl-dgm reproduce m2-mnist100 --minutes "${M2_MINUTES:-95}" --data-dir "$DATA" \
        --config budget_clock=cpu --no-progress --out "$OUT/m2-mnist100" > "$OUT/m2-mnist100.log" 2>&1
    ppl-dgm evaluate "$OUT/m2-mnist100/runs/"m2-*-seed0 --iw-samples 0 \
        > "$OUT/m2-mnist100.evaluate.log" 2>&1
) &
(
    ppl-dgm reproduce lvae-mnist --minutes "${LVAE_MINUTES:-47}" --data-dir "$DATA" \
        --config budget_clock=cpu --no-progress --out "$OUT/lvae-mnist" > "$OUT/lvae-mnist.log" 2>&1
    for run in "$OUT/lvae-mnist/runs/"*-seed0; do
        ppl-dgm evaluate "$run" --iw-samples 5000 --subset 500 > "$run.evaluate.log" 2>&1
    done
) &
wait
uptime > "$OUT/uptime-end-m2-lvae.txt"
