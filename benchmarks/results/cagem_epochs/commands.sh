#!/usr/bin/env bash
# Issue 20, CaGeM claim at equal epochs: CaGeM with 100 labels under each labelled weighting
# (--set labelled_weighting=data_points | batch_mean), CaGeM without labels (--labels 0, 10
# clusters) and the two-layer VAE of the same sizes without y (the registered `vae` with CaGeM's
# z_dims, hidden_dims and training settings: its model p(z2) p(z1|z2) p(x|z1) and guide q(z1|x)
# q(z2|z1) are CaGeM's without y). All: NumPyro, seed 0 (the same balanced 100 labels and the same
# 10,000-image validation slice), Adam 1e-3, batches of 100, warm-up over 10 epochs, gradient norm
# clipped at 5 (CaGeM's registered recipe), EPOCHS epochs each (default 25), one CPU thread per run.
# Then IW-5000 (y summed exactly inside each weight) on the first SUBSET test images (default
# 1,000; binarised once, seed 0); per-image estimates in RUN/iw_per_example.nc; paired differences
# by benchmarks/paired_report.py.
#
# Run from the repository root:  RUNS=~/ppl-dgm-runs bash benchmarks/results/cagem_epochs/commands.sh
# runs two lanes side by side (one core each), then the report. ARMS="a b" runs those arms one after
# the other in this process (no report). A stopped arm continues with the same command.
set -euo pipefail
export PPL_DGM_DATA=${PPL_DGM_DATA:-../shared/data}
RUNS=${RUNS:-$HOME/ppl-dgm-runs}/cagem-epochs
EPOCHS=${EPOCHS:-25}
SUBSET=${SUBSET:-1000}
OUT=benchmarks/results/cagem_epochs
mkdir -p "$RUNS"
COMMON=(--backend numpyro --dataset mnist --seed 0 --device cpu --threads 1 --no-progress
        --epochs "$EPOCHS" --lr 1e-3 --batch-size 100 --warmup-epochs 10 --clip-norm 5)
SIZES=(--set 'z_dims=[32,16]' --set 'hidden_dims=[256,128]')

arm_args() {  # the train arguments of an arm
  case $1 in
    labels100_data_points) echo cagem --labels 100 --set labelled_weighting=data_points ;;
    labels100_batch_mean) echo cagem --labels 100 --set labelled_weighting=batch_mean ;;
    labels0) echo cagem --labels 0 --set n_clusters=10 ;;
    vae) echo vae --elbo trace ;;
    *) echo "unknown arm $1" >&2; return 2 ;;
  esac
}

run_arm() {  # train (or continue) then evaluate one arm
  local name=$1 resume=() args
  args=$(arm_args "$name")
  [[ -f "$RUNS/$name/checkpoint.pkl" ]] && resume=(--resume)
  {
    uptime
    # shellcheck disable=SC2086
    ppl-dgm train $args "${COMMON[@]}" "${SIZES[@]}" --out "$RUNS/$name" "${resume[@]}"
    uptime
    ppl-dgm evaluate "$RUNS/$name" --iw-samples 5000 --subset "$SUBSET" --seed 0 --device cpu \
      --threads 1
    uptime
  } >> "$RUNS/$name.log" 2>&1
}

if [[ -n ${ARMS:-} ]]; then
  for arm in $ARMS; do run_arm "$arm"; done
  exit 0
fi
(run_arm labels100_data_points && run_arm labels0) &
(run_arm labels100_batch_mean && run_arm vae) &
wait
# the claimed order with the better weighting (chosen by this study: README.md), the other beside it
BEST=${BEST:-data_points} OTHER=${OTHER:-batch_mean}
python benchmarks/paired_report.py "$RUNS/labels100_$BEST" "$RUNS/labels0" "$RUNS/vae" \
  --beside "$RUNS/labels100_$OTHER" --out "$OUT"
