#!/usr/bin/env bash
# ADGM long run (issue 19): registered recipe, all 60,000 training images, evaluation every 3000 steps,
# two threads (measured faster here than two sharded host devices, which deadlock on this 2-core CPU).
set -euo pipefail
cd ~/ppl-dgm-runs
EPOCHS=${EPOCHS:-100}   # 600 steps per epoch: 100 epochs = 60,000 steps
OMP_NUM_THREADS=2 PYTHONPATH=~/ppl-dgm-runs/site PPL_DGM_DATA=../shared/data python -m ppl_dgm.cli reproduce adgm-mnist100 \
  --minutes 400 --backend numpyro --no-progress --out ~/ppl-dgm-runs/adgm-mnist100 \
  --config validation_size=0 --config eval_every=3000 --config scan_steps=20 \
  --config epochs=$EPOCHS
