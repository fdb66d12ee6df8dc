# M2 with the auxiliary-model papers' recipe (two ReLU layers of 500, Adam 3e-4, clipping 5),
# for comparison with the default M2 run and with ADGM/SDGM (MNIST, 100 labels, seed 0, 1 thread).
export PPL_DGM_DATA=${PPL_DGM_DATA:-../shared/data}
OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 ppl-dgm train m2 --dataset mnist --labels 100 --epochs 40 \
    --steps-per-epoch 250 --max-minutes 25 --set activation=relu --set 'hidden=[500,500]' \
    --lr 3e-4 --clip-norm 5 --seed 0 --device cpu --out benchmarks/results/m2_mnist_study/recipe --no-progress
