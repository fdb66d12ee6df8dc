# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 5. RNN-SPN: attention as a spatial transformer
#
# The recurrent spatial transformer network (Sønderby, Sønderby, Maaløe and Winther 2015) reads a
# sequence of digits $y_1, \dots, y_T$ from a cluttered canvas $x$. At each step $t$ a GRU, fed
# with features of the whole canvas, emits an affine transform $A_t$; a **spatial transformer**
# samples a small glimpse of the canvas through $A_t$ (bilinear interpolation on the transformed
# grid: differentiable in $A_t$), and a CNN shared by the steps labels the glimpse:
#
# $$p(y_{1..T} \mid x) = \prod_{t=1}^T \mathrm{Cat}\bigl(y_t \mid \mathrm{softmax}\,
#   f(\mathrm{glimpse}(x, A_t))\bigr).$$
#
# Attention here is *where the grid is put*: the transform's translation says where the model
# looks, its scale how much of the canvas it takes in. Nothing tells the model where the digits
# are; the glimpses move only because moving them lowers the classification loss.
#
# In this library the RNN-SPN is a Pyro program with one observed site `y` in the plates
# `data x positions` and an **empty guide**: without latent variables the ELBO is the
# log-likelihood, and SVI's loss is the summed cross-entropy. This tutorial
#
# 1. builds cluttered digit sequences (from the bundled 8x8 digits, or with `--mnist` the paper's
#    100x100 MNIST canvases), written to this tutorial's output folder, never to a data folder;
# 2. checks the Pyro program's loss against a cross-entropy computed by hand;
# 3. shows the identity initialisation: before training every glimpse is the whole canvas,
#    down-sampled;
# 4. trains through the library's Python API (`ppl_dgm.train`) and draws where the glimpses look.
#
# **What each mode can show.** The quick mode (the default, under half a minute on one core)
# trains a few dozen steps on small canvases: enough to see the program, the initialisation and
# the glimpses starting to move apart, not enough to read digits (its error stays near chance,
# 90%). The full mode (`--full --mnist`) trains the paper's setting for about 2,000 steps
# (about 20 minutes on one CPU core, a minute or two on a GPU); the recorded runs
# (`benchmarks/results/rnn_spn`) show the RNN-SPN on a plateau for its first ~500 steps, then its
# error falling from 85% to 24% by step 2,000 and to 9.7% by step 4,000, the glimpses settling on
# one digit each.

# %%
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pyro
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.infer import Trace_ELBO

import ppl_dgm
from ppl_dgm.nn.spatial import transform
from ppl_dgm.plots import plot_glimpses
from ppl_dgm.tutorial import cleanup, output_dir, run_main

# %% [markdown]
# ## The data: cluttered digit sequences
#
# `ppl_dgm.data.sequence.make_sequences` pastes $T$ digits side by side along a random slope on a
# blank canvas, over random 9x9 patches cut from other digits (the clutter). From the bundled
# digits (8x8, enlarged to the 28x28 cell the builder expects) we make 2-digit canvases of 60x60
# pixels; with `--mnist`, 3-digit canvases of 100x100 as in the paper. The arrays are written as
# an `.npz` with the keys `x_train y_train x_test y_test` into the output folder (`--out`, by
# default `~/.cache/ppl_dgm/tutorials/05_rnn_spn`), and `ppl_dgm.train` reads that file like
# any user data set (`dataset="path.npz"`). `--data-dir` is only read, for `mnist.npz`.


# %%
def digit_cells() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The bundled digits as uint8 28x28 cells (each pixel 3x3, 2 pixels of margin)."""
    from ppl_dgm.data import load_digits

    data = load_digits()

    def cells(x: np.ndarray) -> np.ndarray:
        big = np.kron(x.reshape(-1, 8, 8), np.ones((3, 3), dtype=np.float32))
        return np.pad((big * 255).round().astype(np.uint8), ((0, 0), (2, 2), (2, 2)))

    return cells(data.x_train), data.y_train, cells(data.x_test), data.y_test


def sequence_data(folder: Path, quick: bool, mnist: bool, data_dir: str | None) -> tuple[Path, dict]:
    """Build (or reuse) the sequence data set in ``folder``; returns its path and options."""
    from ppl_dgm.data.sequence import build_mnist_sequence, make_sequences

    if mnist:
        options = dict(n_digits=3, n_clutter=8, canvas=100, clutter_size=9,
                       n_train=2000 if quick else 30000, n_test=500 if quick else 5000, seed=0)
    else:
        options = dict(n_digits=2, n_clutter=4, canvas=60, clutter_size=9,
                       n_train=1000 if quick else 10000, n_test=200 if quick else 1000, seed=0)
    name = "_".join(f"{k}{v}" for k, v in options.items())
    path = folder / "data" / f"{'mnist' if mnist else 'digits'}_sequence_{name}.npz"
    if path.is_file():
        return path, options
    if mnist:
        from ppl_dgm.data.mnist import load_mnist

        arrays = build_mnist_sequence(load_mnist(data_dir), **options)
    else:
        x_train, y_train, x_test, y_test = digit_cells()
        rng = np.random.default_rng(options["seed"])
        opts = {k: options[k] for k in ("n_digits", "n_clutter", "canvas", "clutter_size")}
        train = make_sequences(x_train, y_train, options["n_train"], rng=rng, **opts)
        test = make_sequences(x_test, y_test, options["n_test"], rng=rng, **opts)
        arrays = {"x_train": train.x, "y_train": train.y, "x_test": test.x, "y_test": test.y}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **{k: arrays[k] for k in ("x_train", "y_train", "x_test", "y_test")})
    tmp.replace(path)
    return path, options


# %% [markdown]
# ## Steps and epochs
#
# The trainer holds out a validation set (here 10% of the training canvases, `validation_size`)
# and makes `(n_train - validation_size) // batch_size` steps per epoch. To train for a given
# number of **steps** we therefore ask for `ceil(steps / steps_per_epoch)` epochs; the number of
# steps actually taken is read back from `run.summary`.


# %%
def train(data: Path, options: dict, quick: bool, run_dir: Path) -> tuple[ppl_dgm.Run, int]:
    batch = 50 if quick else 100
    target_steps = 60 if quick else 2000
    validation = options["n_train"] // 10
    steps_per_epoch = (options["n_train"] - validation) // batch
    epochs = math.ceil(target_steps / steps_per_epoch)
    print(f"training {epochs} epochs x {steps_per_epoch} steps = {epochs * steps_per_epoch} steps "
          f"of {batch} canvases")
    run = ppl_dgm.train("rnn-spn", dataset=str(data), epochs=epochs, batch_size=batch,
                        validation_size=validation, seed=0, eval_batch_size=200, threads=1,
                        device="cpu" if quick else "auto", out=run_dir, progress=not quick)
    return run, epochs * steps_per_epoch


# %% [markdown]
# ## The pair before its first step
#
# A run directory keeps the trained parameters. The pair as the run began is rebuilt from the
# run's configuration: the backend's trainer, built from `run.config` with the run's seed,
# initialises the same weights and holds the same data split (nothing in the run directory is
# read but `config.json`, nor written).


# %%
def initial_trainer(run: ppl_dgm.Run):
    from ppl_dgm.backends import trainer_class
    from ppl_dgm.config import TrainConfig

    config = TrainConfig.from_dict(run.config)
    config.device = "cpu"
    return trainer_class(run.backend)(config, run.path, progress=False)


# %% [markdown]
# ## The Pyro program and its loss
#
# The model's only site is `y`, observed, of batch shape `(B, T)` in the plates `data` (dim -2)
# and `positions` (dim -1). With the empty guide, `Trace_ELBO`'s loss is
# $-\log p(y\mid x) = \sum_{b,t} \mathrm{CE}(f_t(x_b), y_{b,t})$, which we compute by hand from
# the network's logits.


# %%
def loss_by_hand(pair, x: torch.Tensor, y: torch.Tensor) -> dict:
    pair.eval()
    trace = poutine.trace(pair.p).get_trace(x, y)
    site = trace.nodes["y"]
    loss = Trace_ELBO(max_plate_nesting=2).differentiable_loss(pair.p, pair.q, x, y).item()
    with torch.no_grad():
        logits = pair.p.net(x)
    by_hand = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                              reduction="sum").item()
    pair.train()
    return {"batch_shape": tuple(site["fn"].batch_shape), "observed": bool(site["is_observed"]),
            "plates": [f.name for f in site["cond_indep_stack"]], "loss": loss, "by_hand": by_hand}


# %% [markdown]
# ## The identity initialisation
#
# The affine head's weights start at zero and its bias at the identity transform, so at first
# every step's glimpse is the whole canvas sampled on the small grid: a bilinear resize. The
# steps differ only once the GRU's state drives the transforms apart during training.


# %%
@torch.no_grad()
def identity_check(pair, x: torch.Tensor) -> dict:
    pair.eval()
    theta, glimpses = pair.glimpses(x)
    whole = transform(x.unsqueeze(1), theta[:, 0], glimpses.shape[-1])[:, 0]
    resized = F.interpolate(x.unsqueeze(1), size=glimpses.shape[-2:], mode="bilinear",
                            antialias=False, align_corners=False)[:, 0]
    pair.train()
    return {"theta": theta, "equal": bool((glimpses == glimpses[:, :1]).all()),
            "identity_error": (whole - resized).abs().max().item(),
            "glimpse": tuple(glimpses.shape[-2:])}


# %% [markdown]
# ## Training, and where the glimpses look
#
# The figure shows, for a few test canvases, the outline of each step's sampling grid on the
# canvas (one colour per step) and the glimpses with the digit read from each (red when wrong).
# We also measure how far the transforms moved from the identity and how far apart the steps'
# glimpse centres are (in canvas pixels).


# %%
@torch.no_grad()
def glimpse_geometry(pair, x: torch.Tensor) -> dict:
    pair.eval()
    theta, _ = pair.glimpses(x)
    pair.train()
    side = x.shape[-1]
    centres = theta[..., :, 2] * side / 2                              # (B, T, 2) pixels
    spread = (centres[:, :, None] - centres[:, None]).norm(dim=-1).amax((1, 2)).mean().item()
    eye = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    return {"moved": (theta - eye).abs().amax().item(), "centre_spread": spread,
            "scale": theta[..., :, :2].det().abs().sqrt().mean().item()}


# %%
def main(quick: bool = True, mnist: bool = False, out: str | None = None, keep: bool = False,
         data_dir: str | None = None) -> dict:
    """Run the tutorial; returns the checks it shows, its step count and figure paths."""
    start = time.perf_counter()
    folder = output_dir("05_rnn_spn", out)
    cleanup([folder / "run"], keep=False)  # a run left by an earlier --keep: start afresh
    data, options = sequence_data(folder, quick, mnist, data_dir)
    run, steps = train(data, options, quick, folder / "run")
    summary = run.summary

    initial = initial_trainer(run)
    x, y = initial.x_test[:8], initial.y_test[:8]
    print(f"data {data.name}: training canvases {tuple(initial.x_train.shape)}, labels "
          f"{tuple(initial.y_train.shape)}; first test sequence {y[0].tolist()}")
    torch.manual_seed(0)
    pyro.set_rng_seed(0)
    program = loss_by_hand(initial.pair, x, y)
    print(f"site y: batch shape {program['batch_shape']}, observed {program['observed']}, plates "
          f"{program['plates']}; -ELBO {program['loss']:.4f} = cross-entropy by hand "
          f"{program['by_hand']:.4f}")
    init = identity_check(initial.pair, x)
    print(f"glimpse {init['glimpse']} from canvas {tuple(x.shape[-2:])}; all steps equal at "
          f"initialisation: {init['equal']}; largest difference from a bilinear resize "
          f"{init['identity_error']:.1e}")
    before = glimpse_geometry(initial.pair, initial.x_test[:200])

    trained = run.trainer(device="cpu").pair  # the trained pair, restored from the checkpoint
    after = glimpse_geometry(trained, initial.x_test[:200])
    print(f"after {summary['steps']} steps: test digit error {summary['test_error']:.3f} (chance 0.9), "
          f"sequence error {summary['test_sequence_error']:.3f}")
    print(f"transforms moved from the identity by up to {after['moved']:.3f} (before: "
          f"{before['moved']:.3f}); glimpse centres {after['centre_spread']:.2f} px apart on "
          f"average (before: {before['centre_spread']:.2f}); glimpse scale {after['scale']:.3f}")
    figure = folder / "glimpses.png"
    plot_glimpses(trained.eval(), x.cpu().numpy(), y.cpu().numpy(), figure)
    removed = cleanup([run.path, folder / "data"], keep)
    print(f"figure: {figure} ({time.perf_counter() - start:.1f} s)")
    return {**program, "glimpses_equal_at_init": init["equal"],
            "identity_error": init["identity_error"], "summary": summary, "steps": steps,
            "steps_run": int(summary["steps"]), "before": before, "after": after,
            "figures": [figure], "removed": removed, "folder": folder, "data": data}


# %%
if __name__ == "__main__":
    run_main(main, "Tutorial 5: the RNN-SPN, attention as a spatial transformer.")
