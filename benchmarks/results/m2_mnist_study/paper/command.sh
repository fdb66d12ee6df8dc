# M2 with Kingma et al.'s networks (one softplus layer of 500, z 50, Adam 1e-3): MNIST, 100 labels,
# seed 0, 1 CPU thread, 12 full epochs. (Run as the then-default M2; the flags make it explicit.)
export PPL_DGM_DATA=${PPL_DGM_DATA:-../shared/data}
OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 ppl-dgm train m2 --dataset mnist --labels 100 --epochs 12 \
    --set 'hidden=[500]' --set activation=softplus --lr 1e-3 --clip-norm 0 \
    --seed 0 --device cpu --out benchmarks/results/m2_mnist_study/paper --no-progress
