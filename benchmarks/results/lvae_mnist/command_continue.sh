# Continue both LVAE-study runs to 45 minutes of training each (same seed and settings), then
# IW-5000 on the same 500 test points. The 20-minute records are kept in */at_20min/.
export PPL_DGM_DATA=${PPL_DGM_DATA:-../shared/data}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
for m in vae lvae; do
  (ppl-dgm train $m --resume --max-minutes 45 --no-progress --out benchmarks/results/lvae_mnist/$m \
   && ppl-dgm evaluate benchmarks/results/lvae_mnist/$m --iw-samples 5000 --subset 500 \
      --device cpu) > benchmarks/results/lvae_mnist/$m.continue.log 2>&1 &
done
wait
