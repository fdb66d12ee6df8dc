# M2 with the paper's networks (one softplus layer of 500, z 50) but the auxiliary papers' optimiser
# settings (Adam 3e-4, clipping 5): separates the optimiser from the architecture in the M2 study.
export PPL_DGM_DATA=${PPL_DGM_DATA:-../shared/data}
OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 ppl-dgm train m2 --dataset mnist --labels 100 --epochs 40 \
    --steps-per-epoch 250 --max-minutes 15 --set "hidden=[500]" --set activation=softplus --lr 3e-4 --clip-norm 5 --seed 0 --device cpu \
    --out benchmarks/results/m2_mnist_study/paper_lr --no-progress
