#!/usr/bin/env bash
# The long ADGM run of issue 19 (and the SDGM run that follows it), each alone on both cores:
# `ppl-dgm reproduce` with the registered recipe on all 60,000 training images (the claim's own
# validation_size=0), evaluated every 3000 steps (the claim's eval_every), NumPyro, two threads
# (measured faster here than two sharded host devices, which deadlock in XLA's collectives on this
# 2-core CPU), 20 steps compiled together (--scan-steps: the same updates). 100 epochs of 600 steps
# = 60,000 steps; a later call with EPOCHS=150 continues the same run to 90,000 steps
# (--config epochs grows; nothing restarts). The run folder stays outside the repository.
#   RUNS=~/ppl-dgm-runs bash benchmarks/results/reproduce/adgm-60k/commands.sh adgm
#   EPOCHS=150 RUNS=~/ppl-dgm-runs bash benchmarks/results/reproduce/adgm-60k/commands.sh adgm
#   EPOCHS=50 RUNS=~/ppl-dgm-runs bash benchmarks/results/reproduce/adgm-60k/commands.sh sdgm   # 30,000 steps
#   EPOCHS=35 MINUTES=140 RUNS=~/ppl-dgm-runs bash benchmarks/results/reproduce/adgm-60k/commands.sh sdgm   # one session
# Then the report beside the authors, SDGM and M2:
#   python benchmarks/adgm_steps_report.py $RUNS/adgm-mnist100/runs/adgm-numpyro-seed0 \
#       --out benchmarks/results/reproduce/adgm-60k
set -euo pipefail
RUNS=${RUNS:-~/ppl-dgm-runs}
MODEL=${1:-adgm}
EPOCHS=${EPOCHS:-100}
MINUTES=${MINUTES:-400}   # training budget; the trainer stops after the epoch that passes it
export PPL_DGM_DATA=${PPL_DGM_DATA:-../shared/data} OMP_NUM_THREADS=2
mkdir -p "$RUNS"
uptime > "$RUNS/$MODEL-uptime-start.txt"
ppl-dgm reproduce "$MODEL-mnist100" --minutes "$MINUTES" --backend numpyro --no-progress \
    --out "$RUNS/$MODEL-mnist100" --config scan_steps=20 --config epochs="$EPOCHS" \
    > "$RUNS/$MODEL.log" 2>&1
uptime > "$RUNS/$MODEL-uptime-end.txt"
