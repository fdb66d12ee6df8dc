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
# # 7. Comparing inference algorithms: objectives, gradient noise and `ppl_dgm.compare`
#
# One model can be trained with several *objectives*, and they differ in what their gradient
# estimators cost and how noisy they are. For M2's unlabelled bound
#
# $$-\mathcal U(x) = \sum_y q(y\mid x)\,\bigl(-\mathcal L(x, y)\bigr) + \mathcal H[q(y\mid x)]$$
#
# `TraceEnum_ELBO` (`elbo="trace_enum"`) sums over the ten labels exactly; `Trace_ELBO`
# (`trace`) samples one $y \sim q(y\mid x)$ and differentiates
# $\log q(y\mid x)\,\bigl(\log p(x, y, z) - \log q(y, z\mid x)\bigr)$ (the score-function estimator,
# same expectation, more variance); `TraceGraph_ELBO` (`trace_graph`) keeps only the costs
# downstream of $y$ and subtracts a decaying-average baseline. The Rényi bounds (`renyi`,
# `iwae:K` for $\alpha = 0$) average $K$ importance weights per point,
#
# $$\mathcal L_\alpha^K(x) = \frac{1}{1-\alpha}\log \frac1K\sum_{k=1}^K
#   \Bigl(\frac{p(x, h_k)}{q(h_k\mid x)}\Bigr)^{1-\alpha},\qquad h_k \sim q(h\mid x),$$
#
# a tighter bound for the model, but Rainforth et al. (2018) showed that the signal-to-noise ratio
# of the guide's gradient, $\mathrm{SNR} = |\mathbb E\,g| / \mathrm{sd}(g)$, *falls* like
# $1/\sqrt K$ while the model's rises like $\sqrt K$. `ppl_dgm.infer.gradient_stats` measures the
# SNR per parameter element over repeated draws of the gradient at fixed parameters;
# `ppl_dgm.compare` (`ppl-dgm compare` in a shell) reports it for every arm at initialisation and
# at the end of training.

# %%
from __future__ import annotations

import math
import time

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import RenyiELBO

import ppl_dgm
from ppl_dgm.infer.gradient_stats import snr
from ppl_dgm.infer.gradients import draw_gradients
from ppl_dgm.infer.objectives import loss_and_surrogate
from ppl_dgm.tutorial import cleanup, output_dir, run_main

# %% [markdown]
# ## 1. IWAE starves the guide: SNR against K on a Gaussian toy
#
# $z \sim \mathcal N(\theta, 1)$, $x \mid z \sim \mathcal N(z, 1)$, guide
# $q(z) = \mathcal N(\mu, 0.8^2)$, one observation $x = 1.2$ at $\theta = 0.5$ (posterior
# $\mathcal N(0.85, 0.5)$). For each $K$ the gradient of the IWAE-$K$ loss (Pyro's `RenyiELBO`
# with $\alpha = 0$, through the trainer's surrogate `loss_and_surrogate`) is drawn many times at
# fixed $\theta, \mu$: with the guide away from the posterior ($\mu = 2.5$) its SNR falls as $K$
# grows; with the guide near it ($\mu = 0.9$) the model's SNR rises.


# %%
def snr_against_k(mu0: float, ks=(1, 10, 100), draws: int = 300, seed: int = 0) -> dict:
    """Guide (mu) and model (theta) gradient SNR of the IWAE-K loss for each K, at mu = mu0."""
    torch.manual_seed(seed)
    theta = torch.tensor(0.5, requires_grad=True)
    mu = torch.tensor(mu0, requires_grad=True)
    x = torch.tensor(1.2)

    def model():
        z = pyro.sample("z", dist.Normal(theta, 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide():
        pyro.sample("z", dist.Normal(mu, 0.8))

    out = {"k": list(ks), "snr_q": [], "snr_p": []}
    for k in ks:
        elbo = RenyiELBO(alpha=0.0, num_particles=k, vectorize_particles=True,
                         max_plate_nesting=0)

        def loss_fn(elbo=elbo):
            value, surrogate = loss_and_surrogate(elbo, model, guide)
            return surrogate, value.item()

        grads, _ = draw_gradients(loss_fn, {"q": [mu], "p": [theta]}, draws)
        out["snr_q"].append(float(snr(grads["q"])[0]))
        out["snr_p"].append(float(snr(grads["p"])[0]))
    return out


# %% [markdown]
# ## 2. `ppl_dgm.compare`: enumeration against sampling on M2
#
# `ppl_dgm.compare` trains each arm (model, objective, backend) for each seed on the same data,
# labelled draw and budget, as ordinary run directories under `OUT/runs/<arm>/seed<k>` (each one
# opens with `ppl_dgm.load`), then draws the gradient diagnostics and the IW log-likelihood. It
# returns the comparison as an xarray Dataset (dimensions arm, seed, epoch) and writes it to
# `comparison.nc`, with `comparison.csv`, `comparison.md` and `comparison.png`. The training
# options shared by every arm are keywords, as for `ppl_dgm.train`:
#
# ```python
# ds = ppl_dgm.compare(["m2"], ["trace_enum", "trace", "trace_graph"], seeds=[0, 1, 2],
#                      minutes=4, out="compare/m2", dataset="digits", labels=100)
# ds["snr_q_median_init"].mean("seed").to_series()   # one number per arm
# ```
#
# (in a shell: `ppl-dgm compare m2 --objectives trace_enum,trace,trace_graph --seeds 0,1,2
# --minutes 4`). The table `comparison.md`, printed below, has one row per arm, the mean ± sd
# over seeds of
#
# * **test ELBO**: the bound on the test set with $y$ summed out exactly, whatever the training
#   objective, so that the arms report the same quantity; **IW-K log p(x)**: the importance-
#   weighted estimate with $K$ = `iw_samples` on the first `iw_subset` test points; **test error**;
# * **ms/step** and **CPU ms/step**: wall-clock and process CPU milliseconds per optimiser step in
#   the steady state (the steps after the first epoch, which carries one-off costs). On a machine
#   shared with other jobs the wall clock counts their time too; the CPU time does not;
# * **SNR q** / **SNR p** at **init** and **end**: the median over the guide's (q) and the model's
#   (p) parameter elements of $|\mathbb E\, g| / \mathrm{sd}(g)$ over `grad_draws` draws of the
#   gradient at fixed parameters and batch, at initialisation and after training;
# * **Var loss** at **init** and **end**: the variance of the loss estimate (nats² per point).
#
# Here: the bundled digits, tiny networks and a few steps (quick), or a longer run (`--full`).


# %%
def run_comparison(quick: bool, mnist: bool, folder, data_dir: str | None) -> dict:
    data = {"dataset": "mnist", "data_dir": data_dir} if mnist else {"dataset": "digits"}
    hparams = {"hidden": [32], "z_dim": 4} if quick else {"hidden": [256], "z_dim": 16}
    ds = ppl_dgm.compare(["m2"], ["trace_enum", "trace", "trace_graph"],
                         seeds=[0] if quick else [0, 1, 2], epochs=2 if quick else 10, out=folder,
                         hparams=hparams, iw_samples=20 if quick else 500,
                         iw_subset=50 if quick else 500, grad_draws=20 if quick else 100,
                         labels=100, device="cpu", threads=1, batch_size=50,
                         labelled_batch_size=50, steps_per_epoch=5 if quick else 50, **data)
    print((folder / "comparison.md").read_text())
    snr_q = ds["snr_q_median_init"].mean("seed").to_series()  # the Dataset, read by arm
    enumerated = snr_q["m2/trace_enum/pyro"]
    print("guide SNR at initialisation, against summing y out: " + ", ".join(
        f"{arm} {value / enumerated:.2f}x" for arm, value in snr_q.items()))
    return {"dataset": ds, "table": (folder / "comparison.md").read_text()}


# %%
def main(quick: bool = True, mnist: bool = False, out: str | None = None, keep: bool = False,
         data_dir: str | None = None) -> dict:
    """Run the tutorial; returns the numbers it shows and the paths of its figures."""
    start = time.perf_counter()
    folder = output_dir("07_compare", out)
    far = snr_against_k(2.5, draws=200 if quick else 2000)
    near = snr_against_k(0.9, draws=200 if quick else 2000)
    toy = {"k": far["k"], "snr_q": far["snr_q"], "snr_p": near["snr_p"]}
    for k, q, p in zip(toy["k"], toy["snr_q"], toy["snr_p"], strict=True):
        print(f"IWAE-{k:<4} guide SNR (mu 2.5) {q:.3f}   model SNR (mu 0.9) {p:.3f}")
    result = run_comparison(quick, mnist, folder, data_dir)
    ds = result["dataset"]
    figure = folder / "comparison.png"
    removed = cleanup([folder / "runs"], keep)
    print("figure:", figure, f"({time.perf_counter() - start:.1f} s)")
    return {"toy": toy, "sizes": dict(ds.sizes), "arms": [str(a) for a in ds.arm.values],
            "snr_q_init": {str(a): float(ds.snr_q_median_init.sel(arm=a).mean())
                           for a in ds.arm.values},
            "loss_var_init": {str(a): float(ds.loss_var_init.sel(arm=a).mean())
                              for a in ds.arm.values},
            "test_elbo": {str(a): float(ds.test_elbo.sel(arm=a).mean()) for a in ds.arm.values},
            "files": [str(folder / name) for name in ("comparison.nc", "comparison.csv",
                                                      "comparison.md")],
            "figures": [figure], "removed": removed, "seconds": time.perf_counter() - start,
            "finite": all(math.isfinite(v) for v in np.ravel(ds.test_elbo.values))}


# %%
if __name__ == "__main__":
    run_main(main, "Tutorial 7: inference algorithms compared, with gradient SNR.")
