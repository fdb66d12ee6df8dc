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
# # 3. The ladder VAE: precision-weighted merge, warm-up, batch norm, active units, IW and Pareto-k
#
# The LVAE (Sønderby, Raiko, Maaløe, Sønderby and Winther 2016) keeps the hierarchical generative
# model
#
# $$p(x, z_{1..L}) = p(z_L) \prod_{i=1}^{L-1} p(z_i \mid z_{i+1})\; p(x \mid z_1)$$
#
# and changes the guide. A deterministic bottom-up pass gives each layer a *likelihood estimate*
# $\mathcal N(\hat\mu_i, \hat\sigma_i^2)$ from $x$; sampling then goes top-down, and layer $i$
# combines the estimate with the generative model's top-down prediction
# $\mathcal N(\mu_{p,i}, \sigma_{p,i}^2)$ (computed from the sampled $z_{i+1}$) by the
# **precision-weighted merge**
#
# $$\sigma_{q,i}^2 = \frac{1}{\hat\sigma_i^{-2} + \sigma_{p,i}^{-2}}, \qquad
#   \mu_{q,i} = \bigl(\hat\mu_i \hat\sigma_i^{-2} + \mu_{p,i}\sigma_{p,i}^{-2}\bigr)\,\sigma_{q,i}^2,$$
#
# which is the normalised product of the two Gaussian densities. This tutorial
#
# 1. checks the merge against a numerical product of densities, and checks that the library's
#    ladder guide samples each $z_i$ from exactly that merge;
# 2. trains two small LVAEs, one with the paper's **warm-up** of the KL term and **batch norm**,
#    one without either, and counts **active units** per layer (Burda et al.'s
#    $\operatorname{Cov}_x(\mathbb E_q[z_u\mid x]) > 0.01$);
# 3. estimates $\log p(x)$ by **importance weighting** and reads the **Pareto-$\hat k$** of each
#    point's weights: what a large $\hat k$ means; the estimate computed here by hand against the
#    library's own (`run.evaluate`).
#
# The runs go through the library's Python API: `ppl_dgm.train` trains, `run.history` holds the
# per-epoch records, `run.pair` the trained pair, `run.evaluate` estimates the log-likelihood.

# %%
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from pyro import poutine

import ppl_dgm
from ppl_dgm.guides.ladder import precision_weighted_merge
from ppl_dgm.infer.importance import log_weights
from ppl_dgm.infer.psis import pareto_k
from ppl_dgm.results import atomic_write
from ppl_dgm.tutorial import cleanup, output_dir, run_main

# %% [markdown]
# ## The merge is a product of densities
#
# Take one coordinate: a bottom-up estimate $\mathcal N(1.5, 0.5^2)$ and a top-down prediction
# $\mathcal N(-1, 1)$. Multiply the two densities on a fine grid, normalise by the trapezoidal rule,
# and read off the mean and standard deviation by quadrature.


# %%
def merge_against_quadrature(loc_hat: float = 1.5, scale_hat: float = 0.5, loc_p: float = -1.0,
                             scale_p: float = 1.0) -> dict[str, float]:
    loc, scale = precision_weighted_merge(*(torch.tensor(v, dtype=torch.float64)
                                            for v in (loc_hat, scale_hat, loc_p, scale_p)))
    grid = np.linspace(-10, 10, 200_001)

    def normal(m: float, s: float) -> np.ndarray:
        return np.exp(-0.5 * ((grid - m) / s) ** 2) / (s * math.sqrt(2 * math.pi))

    product = normal(loc_hat, scale_hat) * normal(loc_p, scale_p)
    product /= np.trapezoid(product, grid)
    mean = np.trapezoid(grid * product, grid)
    std = math.sqrt(np.trapezoid((grid - mean) ** 2 * product, grid))
    return {"merge_loc": loc.item(), "merge_scale": scale.item(), "quadrature_loc": float(mean),
            "quadrature_scale": std}


@torch.no_grad()
def guide_uses_merge(pair, x: torch.Tensor) -> float:
    """Largest difference between the guide's q(z_i | .) parameters and the merge recomputed here."""
    pair.eval()
    trace = poutine.trace(pair.guide).get_trace(x, None)
    estimates = pair.q.up(x)
    worst = 0.0
    for i in range(len(pair.q.z_dims) - 1, 0, -1):
        loc_p, scale_p = pair.q.top_down[i - 1](trace.nodes[f"z{i + 1}"]["value"])
        loc, scale = precision_weighted_merge(*estimates[i - 1], loc_p, scale_p)
        fn = trace.nodes[f"z{i}"]["fn"].base_dist
        worst = max(worst, (fn.loc - loc).abs().max().item(), (fn.scale - scale).abs().max().item())
    return worst


# %% [markdown]
# ## Warm-up and batch norm, and the active units they keep
#
# With the KL term at full weight from the first step, the upper layers' $q(z_i\mid\cdot)$ collapse
# onto their priors before the decoder has learnt to use them: those units become *inactive* and
# stay so. The LVAE paper's remedies are **warm-up** (the KL term scaled by $\beta$ rising linearly
# from 0 to 1, the option `warmup_epochs`, implemented as `poutine.scale(scale=beta)` on the latent sites)
# and **batch normalisation** in every hidden layer. Both runs below use the same small networks,
# data, seed and number of steps; they differ only in those two choices. The trainer records the
# active units and the KL per layer every epoch.


# %%
def train(quick: bool, mnist: bool, folder: Path, recipe: bool, data_dir: str | None) -> dict:
    name = "warmup_batchnorm" if recipe else "plain"
    epochs = (12 if quick else 200) if not mnist else (2 if quick else 50)
    data = {"dataset": "mnist", "data_dir": data_dir} if mnist else {"dataset": "digits"}
    options = {"epochs": epochs, "batch_size": 100, "lr": 2e-3 if quick else 1e-3,
               "warmup_epochs": epochs / 2 if recipe else 0.0}
    if mnist and quick:
        options["steps_per_epoch"] = 50
    hparams = {"batch_norm": recipe}
    if quick:
        hparams.update(z_dims=[16, 8, 4], hidden_dims=[128, 64, 32])
    run = ppl_dgm.train("lvae", seed=0, device="cpu", threads=1, hparams=hparams,
                        out=folder / f"run-{name}", progress=False, **data, **options)
    history = run.history
    last = history.isel(epoch=-1)
    units = {str(s): int(v) for s, v in zip(last["site"].values, last["active_units"].values,
                                              strict=True)}
    kl = {str(s): float(v) for s, v in zip(last["site"].values, last["kl"].values, strict=True)}
    return {"run": run, "summary": run.summary, "active_units": units, "kl": kl,
            "history": history, "name": name}


def plot_training(runs: list[dict], path: Path) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.4))
    axes = fig.subplots(1, 2)
    for run, style in zip(runs, ("-", "--"), strict=True):
        h = run["history"]
        epochs = h["epoch"].values
        for site in h["kl"]["site"].values:
            axes[0].plot(epochs, h["kl"].sel(site=site), style, label=f"{site} ({run['name']})")
        axes[1].plot(epochs, h["active_units"].sum("site"), style, label=run["name"])
    axes[0].set(xlabel="epoch", ylabel="KL per layer [nats]", title="KL of each layer")
    axes[1].set(xlabel="epoch", ylabel="active units (all layers)", title="active units")
    axes[0].legend(fontsize="x-small", ncol=2)
    axes[1].legend(fontsize="small")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    return path


# %% [markdown]
# ## Importance weighting and Pareto-$\hat k$
#
# With $K$ samples $h_k \sim q(h\mid x)$ and weights $w_k = p(x, h_k)/q(h_k\mid x)$,
#
# $$\log p(x) \gtrsim \log \frac1K \sum_{k=1}^K w_k,$$
#
# a bound that rises with $K$ towards $\log p(x)$ (the paper reports it at $K = 5000$;
# `run.evaluate(iw_samples=5000)`). How far to trust it depends on the tail of the
# weights. Pareto-smoothed importance sampling (Vehtari et al.) fits a generalised Pareto
# distribution to the largest weights; its shape $\hat k$ says how heavy the tail is. For
# $\hat k < 0.5$ the weights have finite variance and the estimate settles quickly; for
# $0.5 < \hat k < 0.7$ the variance is infinite but the estimate is still usable; for
# $\hat k > 0.7$ a handful of rare, huge weights dominate, and the estimate keeps jumping up as $K$
# grows: $q$ misses a part of the posterior that carries much of $p(x)$, and the printed number
# is an unreliable underestimate. The figure shows the running estimate against $K$ for the points
# with the smallest and largest $\hat k$, and the share of the largest single weight.
#
# The weights are drawn here from the trained pair (`run.pair`, `ppl_dgm.infer.importance.
# log_weights`). `run.evaluate(iw_samples=K, subset=n)` is the library's estimate on the same
# test points with its own draws; it also saves each point's estimate (`iw_per_example.nc` in
# the run directory), so the two are compared point by point: their mean difference must be
# within a few standard errors of zero.


# %%
@torch.no_grad()
def importance_weights(run: ppl_dgm.Run, n_points: int, num_samples: int) -> dict:
    x = run.trainer(device="cpu").x_test_binary[:n_points]  # the statically binarised test set
    torch.manual_seed(1)
    chunks = [log_weights(run.pair.eval(), x, min(500, num_samples - s))
              for s in range(0, num_samples, 500)]
    log_w = torch.cat(chunks).double()                      # (K, n)
    k_hat = pareto_k(log_w.numpy())
    iw = (torch.logsumexp(log_w, 0) - math.log(num_samples)).numpy()
    elbo = log_w.mean(0).numpy()
    top_share = (log_w.max(0).values - torch.logsumexp(log_w, 0)).exp().numpy()
    return {"log_w": log_w.numpy(), "k_hat": k_hat, "iw": iw, "elbo": elbo, "top_share": top_share}


def plot_importance(iw: dict, path: Path) -> Path:
    from matplotlib.figure import Figure

    log_w = iw["log_w"]
    k = np.arange(1, len(log_w) + 1)
    fig = Figure(figsize=(9, 3.4))
    axes = fig.subplots(1, 2)
    for label, j in (("smallest", int(iw["k_hat"].argmin())), ("largest", int(iw["k_hat"].argmax()))):
        running = np.logaddexp.accumulate(log_w[:, j]) - np.log(k)
        axes[0].plot(k, running - running[-1],
                     label=f"{label} k̂ = {iw['k_hat'][j]:.2f} (top weight {iw['top_share'][j]:.0%})")
    axes[0].set(xscale="log", xlabel="K (samples)", ylabel="IW estimate - final [nats]",
                title="running IW estimate of log p(x)")
    axes[0].legend(fontsize="small")
    axes[1].hist(iw["k_hat"], bins=20)
    axes[1].axvline(0.7, color="red", ls="--", label="0.7")
    axes[1].set(xlabel="Pareto k̂", ylabel="test points", title="k̂ per test point")
    axes[1].legend(fontsize="small")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    return path


# %%
def main(quick: bool = True, mnist: bool = False, out: str | None = None, keep: bool = False,
         data_dir: str | None = None) -> dict:
    """Run the tutorial; returns the numbers it shows and the paths of its figures."""
    start = time.perf_counter()
    folder = output_dir("03_lvae", out)
    cleanup([folder / "run-warmup_batchnorm", folder / "run-plain"], keep=False)  # earlier --keep
    merge = merge_against_quadrature()
    print(f"merge of N(1.5, 0.5^2) and N(-1, 1): loc {merge['merge_loc']:.6f}, scale "
          f"{merge['merge_scale']:.6f}; product of densities by quadrature: loc "
          f"{merge['quadrature_loc']:.6f}, scale {merge['quadrature_scale']:.6f}")

    runs = [train(quick, mnist, folder, recipe, data_dir) for recipe in (True, False)]
    recipe = runs[0]["run"]
    merge_error = guide_uses_merge(recipe.pair, recipe.trainer(device="cpu").x_test_binary[:64])
    print(f"the ladder guide's q(z_i | .) differs from the merge recomputed here by at most "
          f"{merge_error:.1e}")
    for run in runs:
        s = run["summary"]
        kl = ", ".join(f"{k} {v:.2f}" for k, v in run["kl"].items())
        print(f"{run['name']:<17} after {s['epochs']} epochs: test ELBO {s['test_elbo']:.2f}; "
              f"active units {run['active_units']}; KL per layer [nats] {kl}")

    num_samples, n_points = (500, 100) if quick else (5000, 1000)
    iw = importance_weights(recipe, n_points=n_points, num_samples=num_samples)
    print(f"IW-{num_samples} on {len(iw['iw'])} test points: {iw['iw'].mean():.2f} nats "
          f"(ELBO {iw['elbo'].mean():.2f}); Pareto k-hat median {np.median(iw['k_hat']):.2f}, "
          f"{(iw['k_hat'] > 0.7).mean():.0%} of points above 0.7")
    hi, lo = int(iw["k_hat"].argmax()), int(iw["k_hat"].argmin())
    print(f"largest k-hat {iw['k_hat'][hi]:.2f}: its largest weight is {iw['top_share'][hi]:.1%} of "
          f"the sum; smallest k-hat {iw['k_hat'][lo]:.2f}: {iw['top_share'][lo]:.1%}")
    library = recipe.evaluate(iw_samples=num_samples, subset=n_points, device="cpu")
    with xr.open_dataset(recipe.path / "iw_per_example.nc") as per_point:  # written by evaluate
        d = iw["iw"] - per_point["log_likelihood"].values
    print(f"run.evaluate, its own draws on the same points: IW-{num_samples} "
          f"{library['test_log_likelihood']:.2f} nats, {library['pareto_k_fraction_above_0.7']:.0%} "
          f"of points with k-hat above 0.7; here minus there, point by point: {d.mean():+.3f} "
          f"± {d.std(ddof=1) / math.sqrt(len(d)):.3f} nats")

    figures = [plot_training(runs, folder / "warmup_batchnorm.png"),
               plot_importance(iw, folder / "importance.png")]
    removed = cleanup([run["run"].path for run in runs], keep)
    print("figures:", ", ".join(map(str, figures)), f"({time.perf_counter() - start:.1f} s)")
    return {"merge": merge, "merge_error": merge_error, "figures": figures, "removed": removed,
            "runs": {r["name"]: {"summary": r["summary"], "active_units": r["active_units"],
                                 "kl": r["kl"]} for r in runs},
            "iw": {k: v for k, v in iw.items() if k != "log_w"}, "num_samples": num_samples,
            "evaluation": library}


# %%
if __name__ == "__main__":
    run_main(main, "Tutorial 3: the ladder VAE, its merge, warm-up, batch norm, IW and Pareto-k.")
