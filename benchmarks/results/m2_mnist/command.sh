# The M2 quality run of benchmarks/results/m2_mnist (MNIST, 100 labels, seed 0, 1 CPU thread).
export PPL_DGM_DATA=${PPL_DGM_DATA:-../shared/data}
OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 ppl-dgm train m2 --dataset mnist --labels 100 --epochs 12 \
    --seed 0 --device cpu --out benchmarks/results/m2_mnist/run --no-progress
