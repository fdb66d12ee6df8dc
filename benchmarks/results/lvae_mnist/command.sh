# LVAE quality run: the plain (vae) and ladder (lvae) guides on the same 5-layer model, MNIST,
# seed 0, the same training-time budget (20 min, 1 CPU thread each, run side by side), then IW-5000
# on the first 500 test points (statically binarised with seed 0).
export PPL_DGM_DATA=${PPL_DGM_DATA:-../shared/data}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
for m in vae lvae; do
  (ppl-dgm train $m --dataset mnist --epochs 200 --warmup-epochs 10 --max-minutes 20 --seed 0 \
      --device cpu --no-progress --out benchmarks/results/lvae_mnist/$m \
   && ppl-dgm evaluate benchmarks/results/lvae_mnist/$m --iw-samples 5000 --subset 500 \
      --device cpu) > benchmarks/results/lvae_mnist/$m.log 2>&1 &
done
wait
