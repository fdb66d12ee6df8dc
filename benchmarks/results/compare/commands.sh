#!/usr/bin/env bash
# Inference-algorithm comparisons with `ppl-dgm compare` (run from the repository root).
# Every arm x seed is an ordinary run directory under <study>/runs/<arm>/seed<k>; re-running a
# command skips finished runs and resumes interrupted ones. One CPU thread per process; run the
# two studies one after the other (each runs its arms in sequence) on otherwise idle cores.
set -euo pipefail
export PPL_DGM_DATA=${PPL_DGM_DATA:-../shared/data}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
export XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
OUT=benchmarks/results/compare

# 1. M2, MNIST, 100 labels: exact enumeration of y (trace_enum) against sampled y with plain
#    score-function gradients (trace) and with dependency tracking + decaying-average baselines
#    (trace_graph); 3 seeds (seed = labelled draw + initialisation + batches); 4 minutes of
#    training per arm and seed (the same wall time, so a cheaper step buys more steps); epochs of
#    100 steps for the curves; IW-1000 log-likelihood on the first 1000 test points; gradient SNR
#    over 50 draws at initialisation and at the end. About 9 x (4 + ~3 evaluation) minutes.
ppl-dgm compare m2 --objectives trace_enum,trace,trace_graph --seeds 0,1,2 --minutes 4 \
    --dataset mnist --labels 100 --steps-per-epoch 100 --device cpu --threads 1 \
    --iw-samples 1000 --iw-subset 1000 --grad-draws 50 --no-progress \
    --out $OUT/m2_mnist100 2>&1 | tee $OUT/m2_mnist100.log

# 2. VAE (bottom-up guide) against LVAE (ladder guide) on the 5-layer model, MNIST: the ELBO
#    (trace) against the importance-weighted bound with K = 5 (iwae:5); 8 minutes per arm, seed 0;
#    KL warm-up over 2 epochs (the registered 200 would not end within the budget); IW-1000 on
#    the first 1000 test points. About 4 x (8 + ~3) minutes.
ppl-dgm compare vae lvae --objectives trace,iwae:5 --seeds 0 --minutes 8 \
    --dataset mnist --warmup-epochs 2 --device cpu --threads 1 \
    --iw-samples 1000 --iw-subset 1000 --grad-draws 50 --no-progress \
    --out $OUT/vae_lvae_mnist 2>&1 | tee $OUT/vae_lvae_mnist.log

# Rebuild a study's comparison.{nc,csv,md,png} from its saved runs (no training):
#   ppl-dgm compare --report-only --out $OUT/m2_mnist100
#   ppl-dgm compare --report-only --out $OUT/vae_lvae_mnist
# Keep the records small before committing: the checkpoints are not needed for the tables.
#   find $OUT -name 'checkpoint.*' -delete
