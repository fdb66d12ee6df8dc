#!/usr/bin/env bash
# M2, MNIST with 100 labels: mean and spread of the test error over 5 seeds (ppl-dgm sweep), and the
# speed-up of 2 local workers over 1. Run from the repository root; MNIST is read from
# $PPL_DGM_DATA (default ../shared/data). Each run uses one thread (one job per core).
#
#   MAX_MINUTES=7 bash benchmarks/results/sweep/commands.sh    # about 3 x (MAX_MINUTES + 2) + 6 min
#
# The run directories (checkpoints) go to runs/ (not kept); the small records are copied here:
#   benchmarks/results/sweep/m2_mnist100/{sweep.md,sweep.csv,sweep.json,sweep.nc}
#   benchmarks/results/sweep/speedup/{workers1,workers2}.json and speedup.md
set -euo pipefail
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
DATA=${PPL_DGM_DATA:-../shared/data}
MAX_MINUTES=${MAX_MINUTES:-7}
HERE=benchmarks/results/sweep
uptime | tee "$HERE/uptime-before.txt"

# 1. the speed-up: the same fixed work (4 seeds x 200 steps of M2 on MNIST, with evaluation) on 1 and
#    on 2 local workers, first (while nothing else runs)
for W in 1 2; do
    ppl-dgm sweep m2 --seeds 0-3 --labels 100 --dataset mnist --data-dir "$DATA" --epochs 1 \
        --steps-per-epoch 200 --workers "$W" --threads 1 --out "runs/sweep-speed-w$W"
done
mkdir -p "$HERE/speedup"
cp runs/sweep-speed-w1/sweep.json "$HERE/speedup/workers1.json"
cp runs/sweep-speed-w2/sweep.json "$HERE/speedup/workers2.json"
python - "$HERE/speedup" <<'PY'
import json, sys, pathlib
d = pathlib.Path(sys.argv[1])
w1, w2 = (json.loads((d / f"workers{w}.json").read_text()) for w in (1, 2))
text = (f"4 runs of M2 on MNIST (200 steps each, 1 thread each): wall {w1['wall_seconds']:.0f} s with "
        f"1 worker, {w2['wall_seconds']:.0f} s with 2 workers: speed-up "
        f"{w1['wall_seconds'] / w2['wall_seconds']:.2f}x\n")
(d / "speedup.md").write_text(text)
print(text)
PY
# 2. the table: 5 seeds, each run trained for MAX_MINUTES of training time (then evaluated), 2 workers
ppl-dgm sweep m2 --seeds 0-4 --labels 100 --dataset mnist --data-dir "$DATA" --epochs 1000 \
    --max-minutes "$MAX_MINUTES" --workers 2 --threads 1 --out runs/sweep-m2-mnist100 || true
mkdir -p "$HERE/m2_mnist100"
cp runs/sweep-m2-mnist100/sweep.{md,csv,json,nc} "$HERE/m2_mnist100/"

uptime | tee "$HERE/uptime-after.txt"
