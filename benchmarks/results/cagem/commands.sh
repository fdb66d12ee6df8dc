#!/usr/bin/env bash
# CaGeM quality study (MNIST): CaGeM with 100 labels, CaGeM fully unsupervised (--labels 0,
# 10 clusters) and the two-layer VAE of the same sizes without y (the registered `vae`, whose model
# p(z2) p(z1|z2) p(x|z1) and guide q(z1|x) q(z2|z1) are CaGeM's without y). Same seed (so the same
# balanced draw of 100 labels and the same validation split), the same training-time budget
# (--max-minutes 12 of process CPU time, --budget-clock cpu, so that the budgets stay equal
# while other jobs share the cores; one CPU thread per run, compilation not counted), the same optimiser settings,
# then IW-5000 with y summed exactly on the same first 500 test points (binarised once, seed 0);
# per-example estimates go to RUN/iw_per_example.nc for paired standard errors.
# Backend: NumPyro (per step at one thread it was about 4x faster than Pyro here:
# benchmarks/cagem_step_time.py, 0.31 s against 1.26 s per step on a loaded machine).
# Run from the repository root:  bash benchmarks/results/cagem/commands.sh
set -euo pipefail
export PPL_DGM_DATA=${PPL_DGM_DATA:-../shared/data}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
export XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
OUT=benchmarks/results/cagem
BACKEND=${BACKEND:-numpyro}
MINUTES=${MINUTES:-12}
SUBSET=${SUBSET:-500}
COMMON=(--backend "$BACKEND" --dataset mnist --seed 0 --device cpu --no-progress
        --epochs 1000 --max-minutes "$MINUTES" --budget-clock cpu --lr 1e-3 --batch-size 100
        --warmup-epochs 5
        --clip-norm 5)
SIZES=(--set 'z_dims=[32,16]' --set 'hidden_dims=[256,128]')

train_and_evaluate() {  # name, then the train arguments
  local name=$1; shift
  (ppl-dgm train "$@" --out "$OUT/$name" \
   && ppl-dgm evaluate "$OUT/$name" --iw-samples 5000 --subset "$SUBSET" --seed 0 --device cpu \
   && ppl-dgm sample "$OUT/$name" --device cpu) > "$OUT/$name.log" 2>&1
}

# two runs side by side (one core each), then the third
train_and_evaluate cagem_labels100 cagem --labels 100 "${COMMON[@]}" "${SIZES[@]}" &
train_and_evaluate cagem_labels0 cagem --labels 0 --set n_clusters=10 "${COMMON[@]}" "${SIZES[@]}" &
wait
train_and_evaluate vae vae --elbo trace "${COMMON[@]}" "${SIZES[@]}"

python benchmarks/paired_report.py "$OUT/cagem_labels100" "$OUT/cagem_labels0" "$OUT/vae" \
  --out "$OUT"
