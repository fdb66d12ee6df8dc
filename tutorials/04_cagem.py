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
# # 4. Semi-supervised generation: CaGeM with 100 labels and with none
#
# M2 and the auxiliary models use a few labels to *classify*. The cluster-aware generative model
# (CaGeM; Maaløe, Fraccaro and Winther 2017) turns this around: a few labels should make the
# *generative* model better. Its structure here is **reconstructed from the paper's abstract**
# (see `models/cagem.py`): a two-layer hierarchical VAE whose upper layer also depends on a
# categorical cluster variable $y$,
#
# $$p(x, y, z_1, z_2) = p(y)\, p(z_2)\, p(z_1 \mid y, z_2)\, p(x \mid z_1), \qquad
#   q(z_1, y, z_2 \mid x) = q(z_1 \mid x)\, q(y \mid z_1, x)\, q(z_2 \mid z_1, y).$$
#
# For an unlabelled point $y$ is summed out exactly (parallel enumeration):
#
# $$-\mathcal U(x) = \mathbb E_{q(z_1\mid x)}\Bigl[\sum_y q(y \mid z_1, x)\bigl(
#   \mathbb E_{q(z_2\mid z_1,y)}[\log p(x, y, z_1, z_2) - \log q(z_1\mid x)
#   - \log q(z_2 \mid z_1, y)] - \log q(y\mid z_1, x)\bigr)\Bigr];$$
#
# a labelled point has $y$ observed and adds M2's classification term
# $\alpha \log q(y \mid z_1, x)$. With `labels=0` there is no labelled point at all: $y$ is a
# cluster variable with $K$ values (`hparams={"n_clusters": K}`) that the model invents for
# itself.
#
# This tutorial
#
# 1. checks that Pyro's `TraceEnum_ELBO` computes exactly the sum over $y$ written out by hand;
# 2. trains the same model with 100 labels and with none (same seed, data and number of steps);
# 3. shows their clusters side by side: one row of samples per value of $y$;
# 4. compares their importance-weighted log-likelihoods on the same test points (y summed exactly
#    inside the estimator), with the paired standard error of the difference, and reads the
#    unsupervised model's clusters against the true classes (clustering accuracy under the best
#    one-to-one assignment).
#
# The runs go through the library's Python API: `ppl_dgm.train` trains, `run.evaluate` estimates
# the log-likelihood, `run.pair` and `run.trainer()` give the trained pair and the run's test data.

# %%
from __future__ import annotations

import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO
from torch.distributions import Bernoulli, Normal
from torch.nn import functional as F

import ppl_dgm
from ppl_dgm import results
from ppl_dgm.plots import grid_image
from ppl_dgm.tutorial import cleanup, output_dir, run_main

warnings.filterwarnings("ignore", message="TraceEnum_ELBO found no sample sites")

# %% [markdown]
# ## The sum over clusters, by hand
#
# Fix the guide's Gaussian noise ($z = \mu + \sigma\varepsilon$ for given $\varepsilon$) so that
# the ELBO is a deterministic function, then compute the unlabelled bound twice: by Pyro, which
# enumerates $y$ in a tensor dimension left of the data plate, and by a loop over the $K$ values.


# %%
class FixNoise(poutine.messenger.Messenger):
    """Draw the guide's z1, z2 as loc + eps * scale for the given eps."""

    def __init__(self, eps: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.eps = eps

    def _pyro_sample(self, msg: dict) -> None:
        if msg["name"] in self.eps and not msg["is_observed"]:
            base = msg["fn"].base_dist
            msg["value"] = base.loc + self.eps[msg["name"]] * base.scale


@torch.no_grad()
def bound_by_hand(pair, x: torch.Tensor, eps: dict[str, torch.Tensor]) -> float:
    """sum_points sum_y q(y|z1,x) [log p(x, y, z1, z2_y) - log q(z1|x) - log q(z2_y|z1,y) - log q(y|z1,x)]."""
    p, q = pair.p, pair.q
    loc1, scale1 = q.q_z1(x)
    z1 = loc1 + eps["z1"] * scale1
    log_q_y = torch.log_softmax(q.logits(x, z1), -1)
    log_px = Bernoulli(logits=p.logits(p.decoder(z1))).log_prob(x).sum(-1)
    total = torch.zeros(len(x))
    for k in range(p.n_clusters):
        y = F.one_hot(torch.full((len(x),), k), p.n_clusters).float()
        loc2, scale2 = q.q_z2(z1, y)
        z2 = loc2 + eps["z2"] * scale2
        ploc1, pscale1 = p.p_z1(z2, y)
        bound_k = (log_px + Normal(ploc1, pscale1).log_prob(z1).sum(-1)
                   + Normal(0.0, 1.0).log_prob(z2).sum(-1) - math.log(p.n_clusters)
                   - Normal(loc1, scale1).log_prob(z1).sum(-1)
                   - Normal(loc2, scale2).log_prob(z2).sum(-1) - log_q_y[:, k])
        total = total + log_q_y[:, k].exp() * bound_k
    return total.sum().item()


def check_enumeration(pair, x: torch.Tensor) -> dict[str, float]:
    pair.eval()
    g = torch.Generator().manual_seed(0)
    eps = {"z1": torch.randn(len(x), pair.p.z_dims[0], generator=g),
           "z2": torch.randn(len(x), pair.p.z_dims[1], generator=g)}

    def guide(*args, **kwargs):
        with FixNoise(eps):
            return pair.guide(*args, **kwargs)

    with torch.no_grad():
        enum_value = -TraceEnum_ELBO(max_plate_nesting=1).loss(pair.model, guide, x, None)
    return {"enum_value": enum_value, "by_hand": bound_by_hand(pair, x, eps)}


# %% [markdown]
# ## The same model, with 100 labels and with none
#
# Both runs use the registered defaults (batch norm, leaky ReLU, Adam, gradient clipping) with small
# networks, the same seed (hence the same validation split and test binarisation) and the same
# number of steps. With labels each step also sees a batch of the labelled points, with $y$ observed
# and the classification term; without labels there is no such batch and every point is enumerated.


# %%
def train(labels: int, folder: Path, quick: bool, mnist: bool,
          data_dir: str | None) -> ppl_dgm.Run:
    epochs = (10 if quick else 100) if not mnist else (2 if quick else 30)
    data = {"dataset": "mnist", "data_dir": data_dir} if mnist else {"dataset": "digits"}
    options = {"epochs": epochs, "lr": 3e-3 if quick else 1e-3, "warmup_epochs": epochs / 5}
    if mnist and quick:
        options["steps_per_epoch"] = 50
    hparams = {"n_clusters": 10} if labels == 0 else {}
    if quick:
        hparams.update(z_dims=[8, 4], hidden_dims=[64, 32])
    return ppl_dgm.train("cagem", labels=labels, seed=0, device="cpu", threads=1, hparams=hparams,
                         out=folder / f"run-labels{labels}", progress=False, **data, **options)


# %% [markdown]
# ## Clusters side by side
#
# `sample_x(n, y)` draws $z_2 \sim p(z_2)$, $z_1 \sim p(z_1 \mid y, z_2)$ and shows the Bernoulli
# means of $p(x \mid z_1)$: one row per value of $y$. With labels, row $k$ is digit $k$. Without,
# the rows are the model's own clusters, put in the order of the classes they match best (the
# assignment behind the clustering accuracy; clusters without a class come last).


# %%
def cluster_rows(run: ppl_dgm.Run, per_row: int, order: list[int] | None = None) -> np.ndarray:
    trained = run.trainer(device="cpu")  # the pair restored from the checkpoint, and the data
    pair = trained.pair.eval()  # in eval mode: batch norm's running statistics
    torch.manual_seed(1)
    rows = order if order is not None else list(range(pair.p.n_clusters))
    y = torch.tensor(rows).repeat_interleave(per_row)
    images = pair.sample_x(len(y), y)
    return images.reshape(len(rows), per_row, *trained.info.image_shape).numpy()


def plot_clusters(labelled: np.ndarray, unlabelled: np.ndarray, path: Path,
                  titles: tuple[str, str]) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 5.4))
    for ax, images, title in zip(fig.subplots(1, 2), (labelled, unlabelled), titles, strict=True):
        rows, cols = images.shape[:2]
        ax.imshow(grid_image(images.reshape(rows * cols, *images.shape[2:]), nrow=cols),
                  cmap="gray", vmin=0, vmax=1)
        ax.set_title(title)
        ax.set_axis_off()
    fig.tight_layout()
    results.atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    return path


# %% [markdown]
# ## Log-likelihoods on the same test points
#
# `run.evaluate` (`ppl-dgm evaluate`) estimates $\log p(x)$ with $S$ importance samples of
# $(z_1, z_2)$ and sums $y$ exactly inside each weight,
#
# $$\log p(x) \approx \log \frac1S \sum_{s} \sum_y
#   \frac{p(x, y, z_1^s, z_2^{s,y})}{q(z_1^s \mid x)\, q(z_2^{s,y} \mid z_1^s, y)},$$
#
# ($q(y\mid z_1, x)$ cancels), and saves the estimate of every test point (`iw_per_example.nc`),
# so two runs are compared point by point: the standard error of the mean difference
# $\mathrm{sd}(d)/\sqrt n$ is much smaller than either run's own.


# %%
def compare(runs: dict[int, ppl_dgm.Run], iw_samples: int, subset: int) -> dict:
    import xarray as xr

    evaluations, per_point = {}, {}
    for labels, run in runs.items():
        evaluations[labels] = run.evaluate(iw_samples=iw_samples, subset=subset, device="cpu",
                                           seed=0)
        with xr.open_dataset(run.path / "iw_per_example.nc") as ds:
            per_point[labels] = ds["log_likelihood"].values.copy()
    d = per_point[100] - per_point[0]
    return {"evaluations": evaluations, "per_point": per_point,
            "difference": float(d.mean()), "paired_se": float(d.std(ddof=1) / math.sqrt(len(d)))}


# %%
def main(quick: bool = True, mnist: bool = False, out: str | None = None, keep: bool = False,
         data_dir: str | None = None) -> dict:
    """Run the tutorial; returns the checks, evaluations and figure it shows."""
    start = time.perf_counter()
    folder = output_dir("04_cagem", out)
    cleanup([folder / "run-labels100", folder / "run-labels0"], keep=False)  # earlier --keep
    runs = {labels: train(labels, folder, quick, mnist, data_dir) for labels in (100, 0)}
    unsupervised = runs[0].trainer(device="cpu")  # the trained pair (eval mode), the test data
    check = check_enumeration(unsupervised.pair, unsupervised.x_test_binary[:32])
    comparison = compare(runs, iw_samples=100 if quick else 1000, subset=200 if quick else 2000)
    mapping = comparison["evaluations"][0]["cluster_to_class"]
    order = sorted(range(len(mapping)), key=lambda k: (mapping[k] < 0, mapping[k]))
    figure = plot_clusters(cluster_rows(runs[100], 8), cluster_rows(runs[0], 8, order),
                           folder / "clusters.png",
                           ("100 labels: one row per class",
                            "no labels: one row per cluster (best-matching class order)"))
    summaries = {labels: run.summary for labels, run in runs.items()}
    ev = comparison["evaluations"]
    print(f"sum over y: TraceEnum_ELBO {check['enum_value']:.4f}, by hand {check['by_hand']:.4f}")
    for labels in (100, 0):
        extra = (f"test error {ev[labels]['test_error']:.3f}" if labels else
                 f"clustering accuracy {ev[0]['clustering_accuracy']:.3f}, cluster sizes "
                 f"{ev[0]['cluster_sizes']}")
        print(f"labels {labels:>3}: IW log-likelihood {ev[labels]['test_log_likelihood']:.2f} "
              f"(ELBO {ev[labels]['test_elbo']:.2f}), {extra}")
    print(f"difference (100 labels - none): {comparison['difference']:+.3f} "
          f"± {comparison['paired_se']:.3f} nats (paired SE)")
    removed = cleanup([run.path for run in runs.values()], keep)
    print(f"figure: {figure} ({time.perf_counter() - start:.1f} s)")
    return {**check, **comparison, "summaries": summaries, "order": order, "figures": [figure],
            "folder": folder, "removed": removed}


if __name__ == "__main__":
    run_main(main, "Tutorial 4: CaGeM trained with 100 labels and with none, clusters and IW.")
