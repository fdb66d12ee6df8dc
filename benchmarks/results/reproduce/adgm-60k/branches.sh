#!/usr/bin/env bash
# The ADGM branch study (issue 19): from the long run's 30,000-step checkpoint (epoch 50 of 600
# steps, kept by keep-checkpoints.sh in $RUNS/adgm-checkpoints/epoch50), four branches of 20
# training CPU-minutes each (--max-minutes 20 --budget-clock cpu: about 7,000 steps at 0.17 CPU-s a
# step; the 10-sample branch takes fewer), two at a time, one thread each:
#   control  the registered recipe, only restarted (a fresh optimiser, as every branch)
#   frozen   q(a|x) frozen at the checkpoint's values (--set train_q_a=false)
#   alpha    the authors' classification weight (--alpha 1200)
#   samples  10 samples of a per step (--num-particles 10)
# Each branch is an ordinary run (--init-from): history.nc holds the diagnostics of a every 3000
# steps. Run from the repository root:  RUNS=~/ppl-dgm-runs bash benchmarks/results/reproduce/adgm-60k/branches.sh
set -euo pipefail
RUNS=${RUNS:-~/ppl-dgm-runs}
SOURCE=$RUNS/adgm-checkpoints/epoch50
OUT=$RUNS/adgm-branches
MINUTES=${MINUTES:-20}
export PPL_DGM_DATA=${PPL_DGM_DATA:-../shared/data}
common=(adgm --backend numpyro --dataset mnist --labels 100 --validation-size 0 --eval-every 3000
        --scan-steps 20 --threads 1 --epochs 150 --max-minutes "$MINUTES" --budget-clock cpu
        --init-from "$SOURCE" --no-progress)
branch() {  # NAME [options]
    local name=$1; shift
    ppl-dgm train "${common[@]}" "$@" --out "$OUT/$name" > "$OUT/$name.log" 2>&1 \
        || ppl-dgm train --resume --out "$OUT/$name" >> "$OUT/$name.log" 2>&1
}
# BRANCHES picks some of them, two at a time, e.g. BRANCHES="frozen alpha" (default: all four)
declare -A OPTIONS=([control]="" [frozen]="--set train_q_a=false" [alpha]="--alpha 1200"
                    [samples]="--num-particles 10")
read -r -a chosen <<< "${BRANCHES:-control frozen alpha samples}"
mkdir -p "$OUT"; uptime > "$OUT/uptime-start-${chosen[0]}.txt"
for ((i = 0; i < ${#chosen[@]}; i += 2)); do
    for name in "${chosen[@]:i:2}"; do
        # shellcheck disable=SC2086  # the options are words
        branch "$name" ${OPTIONS[$name]} &
    done
    wait
done
uptime > "$OUT/uptime-end-${chosen[0]}.txt"
