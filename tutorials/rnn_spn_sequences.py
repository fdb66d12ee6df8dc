"""Tutorial: reading cluttered digit sequences with a recurrent spatial transformer (RNN-SPN).

Run it with ``python tutorials/rnn_spn_sequences.py`` (MNIST from ``$PPL_DGM_DATA`` or
``--data-dir``; about 15 minutes on one CPU core; ``--quick`` for a smoke run of a few seconds).
It shows

1. the cluttered MNIST sequence data: canvases, labels and where the digits sit;
2. the RNN-SPN as a Pyro program: one observed categorical site ``y`` in the plates
   ``data x positions`` and an empty guide, so the ELBO is the log-likelihood and SVI's loss is
   the cross-entropy (checked here against a hand computation);
3. the identity initialisation: before training every glimpse is the whole canvas, down-sampled;
4. a short training run with the library's loop, and where the glimpses go afterwards
   (``glimpses.png`` in the run directory: boxes on the canvas, the glimpses, predicted digits).

The full runs and their numbers are in ``benchmarks/results/rnn_spn``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pyro
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import Trace_ELBO

from ppl_dgm import registry
from ppl_dgm.config import resolve
from ppl_dgm.nn.spatial import transform
from ppl_dgm.plots import plot_glimpses
from ppl_dgm.train.loop import Trainer


def main(quick: bool = False, data_dir: str | None = None) -> dict:
    torch.manual_seed(0)
    pyro.set_rng_seed(0)
    # -- 1. the data: a small cluttered-sequence set (cached as .npz after the first build) -------
    options = {"n_train": 2000, "n_test": 500} if quick else {"n_train": 60000, "n_test": 10000}
    steps = 3 if quick else 1500
    config = resolve(registry.get("rnn-spn"), {
        "dataset": "mnist-sequence", "data_dir": data_dir, "dataset_options": options,
        "epochs": 1, "steps_per_epoch": steps, "seed": 0, "device": "cpu",
    })
    run_dir = Path(tempfile.mkdtemp(prefix="rnn-spn-"))
    trainer = Trainer(config, run_dir, progress=not quick)
    x, y = trainer.x_test[:8], trainer.y_test[:8]
    print(f"training canvases {tuple(trainer.x_train.shape)}, labels {tuple(trainer.y_train.shape)}; "
          f"first test sequence: {y[0].tolist()}")

    # -- 2. the Pyro program: y is observed in the plates data x positions ------------------------
    pair = trainer.pair
    pair.eval()
    trace = poutine.trace(pair.p).get_trace(x, y)
    site = trace.nodes["y"]
    print("site y:", site["fn"].batch_shape, "observed:", site["is_observed"],
          "plates:", [f.name for f in site["cond_indep_stack"]])
    loss = Trace_ELBO(max_plate_nesting=2).differentiable_loss(pair.p, pair.q, x, y)
    with torch.no_grad():
        logits = pair.p.net(x)
    by_hand = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum")
    print(f"-ELBO {loss.item():.4f} = summed cross-entropy by hand {by_hand.item():.4f}")

    # -- 3. identity initialisation: every glimpse is the down-sampled whole canvas ---------------
    with torch.no_grad():
        theta, glimpses = pair.glimpses(x)
        whole = transform(x.unsqueeze(1), theta[:, 0], glimpses.shape[-1])[:, 0]
        resized = F.interpolate(x.unsqueeze(1), size=glimpses.shape[-2:], mode="bilinear",
                                antialias=False, align_corners=False)[:, 0]
    print(f"glimpse {tuple(glimpses.shape[-2:])} from canvas {tuple(x.shape[-2:])}; all steps equal: "
          f"{bool((glimpses == glimpses[:, :1]).all())}; largest difference from a bilinear resize "
          f"of the canvas: {(whole - resized).abs().max().item():.2e}")
    pair.train()

    # -- 4. training with the library's loop (RMSprop 5e-4, batch 100, clipping) ------------------
    summary = trainer.fit()
    print(f"after {summary['steps']} steps: test digit error {summary['test_error']:.3f}, "
          f"sequence error {summary['test_sequence_error']:.3f}")
    plot_glimpses(pair, x.cpu().numpy(), y.cpu().numpy(), run_dir / "glimpses.png")
    print(f"glimpse figure: {run_dir / 'glimpses.png'}")
    return {"loss": loss.item(), "by_hand": by_hand.item(), "summary": summary,
            "glimpses_equal_at_init": bool((glimpses == glimpses[:, :1]).all()),
            "identity_error": (whole - resized).abs().max().item(),
            "figure": run_dir / "glimpses.png", "steps": int(np.asarray(summary["steps"]))}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few steps")
    parser.add_argument("--data-dir", default=None, help="folder holding mnist.npz")
    args = parser.parse_args()
    main(quick=args.quick, data_dir=args.data_dir)
