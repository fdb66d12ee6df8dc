"""Step throughput of every registered model against the matmul floor of its step.

    python benchmarks/throughput.py                    # every model, 1 thread and all cores
    python benchmarks/throughput.py --quick            # a check that it runs (< 2 minutes)
    python benchmarks/throughput.py --device cuda      # the same on a GPU
    python benchmarks/throughput.py --model adgm --json   # one model's older table (below)

Without ``--model``, ``benchmarks/throughput_models.py`` does the work: for every registered model,
in one process per thread count with the steps interleaved, the training step of the Pyro trainer,
of the NumPyro trainer (compilation reported separately), of a plain-PyTorch loss of the same
networks where one exists, and the matmul floor of that step (its GEMMs and convolutions, forward
and backward, recorded from the Pyro step and timed alone); JSON and markdown go to
``benchmarks/results/throughput/``.

With ``--model``:

For M2 one step is 100 labelled + 100 unlabelled MNIST-sized points (x of 784 dimensions, the
registered networks: two ReLU layers of 500 units, z of 50 dimensions; ``--paper-networks`` for
Kingma et al.'s one softplus layer), the unlabelled labels enumerated. Two plain PyTorch losses
compute the same bounds by hand: ``torch_reference`` concatenates [x, y] and repeats x once per label
(the usual way to write M2), ``torch_reference_sum`` uses the pair's own per-input projections (both
in ``benchmarks/throughput_m2.py``). The ratios are measured side by side in one process, steps
interleaved, medians reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from types import SimpleNamespace
from typing import Any

import pyro
import torch
from pyro.infer import TraceEnum_ELBO
from throughput_m2 import N_CLASSES, X_DIM, ConcatM2, concat_reference, sum_reference

from ppl_dgm import registry
from ppl_dgm.infer.objectives import semi_supervised_loss
from ppl_dgm.training.loop import resolve_device

BATCH = 100


def matmul_gflops(device: torch.device, n: int = 1024, repeats: int = 20) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(fns: dict, params: dict, steps: int, device: torch.device) -> dict[str, float]:
    opts = {k: torch.optim.Adam(params[k], lr=1e-4) for k in fns}
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(steps + 3):
        for name, fn in fns.items():
            _sync(device)
            start = time.perf_counter()
            loss = fn()
            opts[name].zero_grad()
            loss.backward()
            opts[name].step()
            _sync(device)
            if i >= 3:
                times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def m2_benchmark(device: torch.device, steps: int, overrides: dict | None = None) -> dict:
    spec = registry.get("m2")
    alpha = 50.0
    info = SimpleNamespace(x_dim=X_DIM, n_classes=N_CLASSES)
    hparams = {**spec.hparams, **(overrides or {}), "alpha": alpha}
    pair = spec.builder()(hparams, info).to(device)
    net = ConcatM2(hparams["hidden"], hparams["z_dim"], hparams["activation"]).to(device)
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    x_l = torch.bernoulli(torch.full((BATCH, X_DIM), 0.3, device=device))
    x_u = torch.bernoulli(torch.full((BATCH, X_DIM), 0.3, device=device))
    y_l = torch.arange(BATCH, device=device) % N_CLASSES
    concat, summed = concat_reference(net, alpha), sum_reference(pair, alpha)
    fns = {
        "pyro": lambda: semi_supervised_loss(pair, elbo, x_l, y_l, x_u)[0],
        "torch_reference": lambda: concat(x_l, y_l, x_u),
        "torch_reference_sum": lambda: summed(x_l, y_l, x_u),
    }
    params = {"pyro": list(pair.parameters()), "torch_reference": list(net.parameters()),
              "torch_reference_sum": list(pair.parameters())}
    return time_steps(fns, params, steps, device)


def numpyro_m2_step(steps: int, overrides: dict | None = None) -> float:
    """Median seconds of one jit-compiled NumPyro SVI step of M2 (after compilation), same sizes.

    The step is the training loop's: ``SVI.update`` with ``EnumELBO`` on the semi-supervised programs
    (100 labelled + 100 unlabelled points, y enumerated), optax Adam; JAX's default device.
    """
    import jax
    import jax.numpy as jnp
    import optax
    from numpyro.infer import SVI
    from numpyro.optim import optax_to_numpyro

    from ppl_dgm.infer.numpyro_objectives import EnumELBO, semi_supervised

    spec = registry.get("m2", "numpyro")
    info = SimpleNamespace(x_dim=X_DIM, n_classes=N_CLASSES)
    pair = spec.builder()({**spec.hparams, **(overrides or {}), "alpha": 50.0}, info)
    svi = SVI(semi_supervised(pair.model), semi_supervised(pair.guide),
              optax_to_numpyro(optax.adam(1e-4)), EnumELBO())
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    x_l = jax.random.bernoulli(keys[0], 0.3, (BATCH, X_DIM)).astype(jnp.float32)
    x_u = jax.random.bernoulli(keys[1], 0.3, (BATCH, X_DIM)).astype(jnp.float32)
    y_l = jnp.arange(BATCH) % N_CLASSES
    state = svi.init(keys[2], x_l, y_l, x_u)
    update = jax.jit(svi.update)
    state, loss = update(state, x_l, y_l, x_u, beta=1.0)  # compilation
    loss.block_until_ready()
    times = []
    for _ in range(steps + 3):
        start = time.perf_counter()
        state, loss = update(state, x_l, y_l, x_u, beta=1.0)
        loss.block_until_ready()
        times.append(time.perf_counter() - start)
    return statistics.median(times[3:])


def legacy_main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="m2")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--paper-networks", action="store_true",
                        help="M2 with Kingma et al.'s networks (one softplus layer of 500)")
    parser.add_argument("--backend", choices=["pyro", "numpyro"], default="pyro",
                        help="numpyro: also time M2's jit-compiled NumPyro SVI step")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    pyro.enable_validation(False)  # as in training (TrainConfig.validate defaults to False)
    torch.manual_seed(0)
    if args.model == "m2":
        paper = {"hidden": [500], "activation": "softplus"} if args.paper_networks else None
        step_seconds = m2_benchmark(device, args.steps, paper)
        if args.backend == "numpyro":
            step_seconds["numpyro"] = numpyro_m2_step(args.steps, paper)
    else:
        from throughput_auxiliary import MODELS, auxiliary_benchmark

        if args.model not in MODELS:
            raise SystemExit(f"no throughput benchmark for {args.model!r}")
        step_seconds = auxiliary_benchmark(args.model, device, args.steps)
    name = args.model + ("-paper-networks" if args.paper_networks else "")
    record = {"model": name, "device": str(device), "threads": torch.get_num_threads(),
              "step_seconds": step_seconds, "matmul_gflops": matmul_gflops(device),
              "ratios": {k: step_seconds["pyro"] / v for k, v in step_seconds.items()
                         if k != "pyro"}}
    if args.json:
        print(json.dumps(record))
    else:
        print(f"model {args.model} on {device} ({record['threads']} threads), "
              f"median of {args.steps} steps")
        for name, seconds in step_seconds.items():
            ratio = seconds / step_seconds["torch_reference"]
            print(f"  {name:<22} {seconds * 1e3:8.1f} ms   {ratio:5.2f}x torch_reference")
        print(f"  matmul 1024^3 float32: {record['matmul_gflops']:.1f} GFLOP/s")
    return record


def main(argv: list[str] | None = None) -> Any:
    """Every registered model (``throughput_models``), or one model's older table with ``--model``."""
    argv = sys.argv[1:] if argv is None else argv
    if "--model" in argv or any(a.startswith("--model=") for a in argv):
        return legacy_main(argv)
    from throughput_models import main as models_main

    return models_main(argv)


if __name__ == "__main__":
    main()
