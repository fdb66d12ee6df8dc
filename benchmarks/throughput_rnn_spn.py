"""Step throughput of the sequence readers: Pyro SVI, plain PyTorch and the jitted NumPyro step.

    python benchmarks/throughput_rnn_spn.py                   # rnn-spn, batch 100, 100x100 canvases
    python benchmarks/throughput_rnn_spn.py --model ffn-spn --steps 10 --json

One step is one RMSprop update (the registered defaults: lr 5e-4, alpha 0.9, eps 1e-3, gradient
norm clipped at 5) on a batch of random canvases with random labels (the cost does not depend on
the values). Three versions of the same network and loss, measured side by side in one process,
steps interleaved, medians reported:

- ``pyro``: the registered Pyro pair, ``Trace_ELBO`` on the model with its observed ``y`` site and
  the empty guide (``objectives.supervised_loss``), as the trainer runs it;
- ``torch``: the same ``nn.Module`` with ``F.cross_entropy`` written by hand (no Pyro);
- ``numpyro``: the registered NumPyro pair, ``SVI.update`` jit-compiled (compilation excluded).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from pyro.infer import Trace_ELBO

from ppl_dgm import registry
from ppl_dgm.infer.objectives import supervised_loss
from ppl_dgm.results import environment


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["rnn-spn", "ffn-spn", "cnn-seq"], default="rnn-spn")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per version")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-numpyro", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    spec = registry.get(args.model, "pyro")
    info = SimpleNamespace(image_shape=(100, 100), sequence_length=3, n_classes=10, x_dim=10_000)
    train = spec.train
    x = torch.rand(args.batch, 100, 100)
    y = torch.randint(10, (args.batch, 3))

    pair = spec.builder()(dict(spec.hparams), info)
    elbo = Trace_ELBO(max_plate_nesting=2)
    opt = torch.optim.RMSprop(pair.parameters(), lr=train["lr"], alpha=train["rmsprop_alpha"],
                              eps=train["rmsprop_eps"])

    def pyro_step() -> None:
        loss, _ = supervised_loss(pair, elbo, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(pair.parameters(), train["clip_norm"])
        opt.step()

    net = spec.builder()(dict(spec.hparams), info).p.net
    opt_ref = torch.optim.RMSprop(net.parameters(), lr=train["lr"], alpha=train["rmsprop_alpha"],
                                  eps=train["rmsprop_eps"])

    def torch_step() -> None:
        logits = net(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt_ref.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), train["clip_norm"])
        opt_ref.step()

    steps = {"pyro": pyro_step, "torch": torch_step}
    compile_seconds = None
    if not args.no_numpyro:
        import jax
        import numpy as np
        from numpyro.infer import SVI
        from numpyro.optim import optax_to_numpyro

        from ppl_dgm.config import resolve
        from ppl_dgm.infer.numpyro_objectives import TraceELBO, supervised
        from ppl_dgm.training.numpyro_loop import make_optimizer

        jspec = registry.get(args.model, "numpyro")
        jpair = jspec.builder()(dict(jspec.hparams), info)
        config = resolve(jspec, {})
        svi = SVI(supervised(jpair.model), supervised(jpair.guide),
                  optax_to_numpyro(make_optimizer(config, 500)),
                  TraceELBO(1, jpair.max_plate_nesting))
        xj, yj = jax.numpy.asarray(x.numpy()), jax.numpy.asarray(y.numpy().astype(np.int32))
        state = {"svi": jax.jit(svi.init)(jax.random.PRNGKey(0), xj, yj)}
        started = time.perf_counter()
        update = jax.jit(svi.update).lower(state["svi"], xj, yj).compile()
        compile_seconds = time.perf_counter() - started

        def numpyro_step() -> None:
            state["svi"], loss = update(state["svi"], xj, yj)
            loss.block_until_ready()

        steps["numpyro"] = numpyro_step

    for step in steps.values():  # warm-up (allocations, first-call overheads)
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.steps):
        for name, step in steps.items():
            started = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - started)
    ms = {name: 1000 * statistics.median(t) for name, t in times.items()}
    record = {
        "model": args.model, "batch": args.batch, "steps": args.steps, "threads": args.threads,
        "median_ms_per_step": ms,
        "pyro_over_torch": ms["pyro"] / ms["torch"],
        "numpyro_over_torch": ms["numpyro"] / ms["torch"] if "numpyro" in ms else None,
        "numpyro_compile_seconds": compile_seconds, **environment("cpu"),
    }
    if args.json:
        print(json.dumps(record, indent=2))
    else:
        for name, value in ms.items():
            print(f"{name:<8} {value:8.1f} ms/step  ({value / ms['torch']:.2f}x torch)")
        if compile_seconds is not None:
            print(f"numpyro compilation {compile_seconds:.1f} s (not counted)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
