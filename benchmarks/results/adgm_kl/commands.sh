#!/usr/bin/env bash
# ADGM on MNIST with 100 labels: what keeps the auxiliary variable a active? Four arms at an equal
# budget of training CPU time (seed 0, NumPyro backend, one thread each, two arms at a time), each
# an ordinary `ppl-dgm reproduce adgm-mnist100` report folder (a larger --minutes continues it):
#   defaults       the registered recipe before this study (PyTorch's initialisation, no weight prior)
#   glorot         + the authors' initialisation (--set weight_init=glorot)
#   glorot_prior   + the authors' N(0, 1) prior on the weights (--config weight_prior_std=1)
#   authors        + no batch normalisation (the authors' run_mnist.py: batchnorm=False)
# and two on the registered recipe (the best of the four):
#   warmup         + KL warm-up over 5 epochs (--config warmup_epochs=5; beta scales a, y and z)
#   particles5     + 5 samples of a per step (--config num_particles=5; 5x the step's work)
# Predictions average 10 samples of a during training (the registered 100 afterwards, below).
# Run from the repository root; MNIST is read from $PPL_DGM_DATA (default ../shared/data).
#   MINUTES=8 bash benchmarks/results/adgm_kl/commands.sh
set -euo pipefail
DATA=${PPL_DGM_DATA:-../shared/data}
MINUTES=${MINUTES:-8}
OUT=${OUT:-runs/adgm_kl}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
arm() {  # NAME ARGS...
    local name=$1; shift
    ppl-dgm reproduce adgm-mnist100 --minutes "$MINUTES" --backend numpyro --data-dir "$DATA" \
        --config budget_clock=cpu --config classify_samples=10 --no-progress \
        --out "$OUT/$name" "$@" > "$OUT/$name.log" 2>&1
}
mkdir -p "$OUT"
uptime > "$OUT/uptime-start.txt"
arm defaults --set weight_init=torch & arm glorot --set weight_init=glorot & wait
arm glorot_prior --set weight_init=glorot --config weight_prior_std=1 &
arm authors --set weight_init=glorot --config weight_prior_std=1 --set batch_norm=false & wait
arm warmup --set weight_init=torch --config warmup_epochs=5 &
arm particles5 --set weight_init=torch --config num_particles=5 & wait
uptime > "$OUT/uptime-end.txt"
# the registered 100-sample test error of every arm (the authors' figure), one at a time
for name in defaults glorot glorot_prior authors warmup particles5; do
    ppl-dgm evaluate "$OUT/$name/runs/adgm-numpyro-seed0" --classify-samples 100 --iw-samples 0 \
        > "$OUT/$name.evaluate.log" 2>&1
done
