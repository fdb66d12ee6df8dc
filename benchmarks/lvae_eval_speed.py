"""IW-5000 evaluation speed of the LVAE pairs: test points per second.

The LVAE paper reports test log-likelihoods estimated with 5000 importance samples
(``ppl_dgm.infer.importance.log_likelihood``). This times that estimator for the registered
``lvae`` (ladder guide) and ``vae`` (plain hierarchical guide) pairs with their MNIST defaults
(5 stochastic layers 64-32-16-8-4, deterministic 512-256-128-64-32, batch norm, eval mode), on
binarised MNIST test points when ``mnist.npz`` is found (else random binary images: the speed does
not depend on the values). Weights are untrained: the cost does not depend on them either.

    python benchmarks/lvae_eval_speed.py                      # table
    python benchmarks/lvae_eval_speed.py --points 40 --json   # one JSON object

Per particle, both pairs run the decoder p(x | z_1) (the largest network: 64-512-512-784) and the
small upper layers; networks of x alone (the ladder's bottom-up pass, the plain guide's q(z_1 | x))
run once per test point. The ladder also runs its top-down networks in the guide and again in the
model (shared or not), so the two pairs cost about the same.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from ppl_dgm import registry
from ppl_dgm.infer.importance import log_likelihood


def test_points(n: int, data_dir: str | None = None, seed: int = 0) -> tuple[torch.Tensor, str]:
    """``n`` binarised MNIST test images (flattened), or random binary images without MNIST."""
    rng = np.random.default_rng(seed)
    try:
        from ppl_dgm.data import load_mnist

        x = load_mnist(data_dir)["x_test"][:n].reshape(n, -1).astype(np.float32) / 255.0
        source = "mnist test"
    except Exception:  # any failure to find MNIST falls back to random data
        x = rng.random((n, 784), dtype=np.float32)
        source = "random"
    return torch.as_tensor((rng.random(x.shape) < x).astype(np.float32)), source


def time_model(name: str, x: torch.Tensor, num_samples: int, chunk_size: int, batch_size: int,
               device: torch.device, seed: int = 0) -> dict[str, Any]:
    spec = registry.get(name)
    torch.manual_seed(seed)
    pair = spec.builder()(dict(spec.hparams), SimpleNamespace(x_dim=x.shape[1])).to(device).eval()
    x = x.to(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    log_likelihood(pair, x[:batch_size], min(num_samples, chunk_size), chunk_size)  # warm-up
    sync()
    started = time.perf_counter()
    values = []
    for start in range(0, len(x), batch_size):
        values.append(log_likelihood(pair, x[start:start + batch_size], num_samples, chunk_size))
    sync()
    seconds = time.perf_counter() - started
    ll = torch.cat(values)
    return {"model": name, "guide": spec.hparams.get("guide"), "points": len(x),
            "num_samples": num_samples, "chunk_size": chunk_size, "batch_size": batch_size,
            "seconds": seconds, "points_per_second": len(x) / seconds,
            "particles_per_second": len(x) * num_samples / seconds,
            "mean_log_likelihood_untrained": float(ll.mean()), "finite": bool(torch.isfinite(ll).all())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["lvae", "vae"])
    parser.add_argument("--points", type=int, default=40, help="test points timed")
    parser.add_argument("--num-samples", type=int, default=5000, help="importance samples (K)")
    parser.add_argument("--chunk-size", type=int, default=500, help="particles per vectorised chunk")
    parser.add_argument("--batch-size", type=int, default=20, help="test points per call")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", default=None, help="folder holding mnist.npz")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    x, source = test_points(args.points, args.data_dir)
    rows = [time_model(m, x, args.num_samples, args.chunk_size, args.batch_size, device)
            for m in args.models]
    record = {"benchmark": "lvae_eval_speed", "device": str(device),
              "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                              else "cpu"),
              "threads": args.threads, "data": source, "torch": torch.__version__,
              "load_average_1min": os.getloadavg()[0], "cpu_count": os.cpu_count(), "rows": rows}
    if args.json:
        print(json.dumps(record))
        return 0
    print(f"IW-{args.num_samples} evaluation on {record['device_name']}, {args.threads} thread(s), "
          f"{source} points, load average {record['load_average_1min']:.1f}")
    header = f"{'model':<6} {'guide':<13} {'points':>6} {'chunk':>6} {'batch':>6} " \
             f"{'seconds':>9} {'points/s':>9} {'particles/s':>12}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['model']:<6} {r['guide']:<13} {r['points']:>6} {r['chunk_size']:>6} "
              f"{r['batch_size']:>6} {r['seconds']:>9.2f} {r['points_per_second']:>9.2f} "
              f"{r['particles_per_second']:>12.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
