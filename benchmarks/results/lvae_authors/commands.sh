#!/usr/bin/env bash
# Issue 20, LVAE claim: the plain hierarchical guide (vae) against the ladder guide (lvae), both with
# the LVAE authors' recipe (--preset authors: Adam 2e-4 with epsilon 1e-4, gradient norm 4 then
# value 0.9, batches of 256, warm-up over 200 epochs, all 60,000 training images, the paper's five
# layers; `ppl-dgm models lvae --preset authors` lists what still differs), seed 0, EPOCHS epochs
# each (default 300), NumPyro, one CPU thread per run, the two runs side by side (one core each,
# nothing else heavy beside them). Test ELBO every 10 epochs (2,340 steps).
# Then IW-5000 on all 10,000 test images (binarised once, seed 0) with batch-norm statistics from a
# pass over the training set (--bn-stats train, the authors' evaluation), one thread each, side by side.
#
# Run from the repository root:  RUNS=~/ppl-dgm-runs bash benchmarks/results/lvae_authors/commands.sh
# Continue a stopped run: the same command (each run is resumed when its folder holds a checkpoint).
# STAGE=train|evaluate|all (default all) and MODELS="vae lvae" (default both) pick what runs.
set -euo pipefail
export PPL_DGM_DATA=${PPL_DGM_DATA:-../shared/data}
RUNS=${RUNS:-$HOME/ppl-dgm-runs}/lvae-authors
EPOCHS=${EPOCHS:-300}
STAGE=${STAGE:-all}   # train | evaluate | all
MODELS=${MODELS:-vae lvae}
mkdir -p "$RUNS"

train() {  # model
  local m=$1 resume=()
  [[ -f "$RUNS/$m/checkpoint.pkl" || -f "$RUNS/$m/checkpoint.pt" ]] && resume=(--resume)
  ppl-dgm train "$m" --preset authors --dataset mnist --backend numpyro --seed 0 --device cpu \
    --threads 1 --epochs "$EPOCHS" --eval-every 2340 --no-progress --out "$RUNS/$m" "${resume[@]}" \
    >> "$RUNS/$m.train.log" 2>&1
}

evaluate() {  # model
  local m=$1
  ppl-dgm evaluate "$RUNS/$m" --bn-stats train --iw-samples 5000 --seed 0 --device cpu --threads 1 \
    > "$RUNS/$m.evaluate.log" 2>&1
}

stamp() { echo "$(date -Is) $1 ($STAGE: $MODELS): $(uptime)" >> "$RUNS/uptime.log"; }
stamp start
if [[ $STAGE != evaluate ]]; then
  for m in $MODELS; do train "$m" & done
  wait
fi
stamp trained
if [[ $STAGE != train ]]; then
  for m in $MODELS; do evaluate "$m" & done
  wait
fi
stamp end
