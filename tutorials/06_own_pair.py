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
# # 6. Write your own pair: a Gaussian-mixture-prior VAE
#
# This tutorial writes a model/guide pair from an empty file in a folder of your own, outside the
# library, and trains, resumes, evaluates and samples it through the same Python API as the
# built-in pairs (`ppl_dgm.train`, `run.resume`, `run.evaluate`, `run.sample`; the `ppl-dgm`
# commands do the same from a shell). The model is a VAE whose prior over $z$ is a **mixture of
# Gaussians with one learned component per class**:
#
# $$p(y) = \mathrm{Cat}(1/K), \qquad p(z \mid y) = \mathcal N\bigl(\mu_y, \operatorname{diag}
#   \sigma_y^2\bigr), \qquad p(x \mid z) = \mathrm{Bernoulli}(f_\theta(z)),$$
#
# with $\mu_y$ and $\log\sigma_y$ free parameters ($K \times d$ each). Summing out $y$ gives the
# mixture prior $p(z) = \frac1K\sum_y \mathcal N(z; \mu_y, \sigma_y^2)$. The guide is
# $q(y \mid x)\, q(z \mid x, y)$; the decoder sees only $z$, so whatever the label says about
# $x$ has to be carried by where $z$ lies. As in M2, a labelled point observes $y$ (and adds
# $\alpha \log q(y\mid x)$), an unlabelled point sums $y$ out exactly: one $z$ per label and point,
# each scored under its own component $p(z\mid y)$.
#
# The contract a pair must meet is written in one place, the docstring of `ppl_dgm/contract.py`
# (`ppl_dgm.train` and `ppl-dgm train` check it on four training points before the first step).
# In short:
#
# * `build(hparams, data) -> Pair(p, q)`, decorated with `@model_spec(task=..., hparams=...,
#   train=...)` to declare the task and the defaults;
# * `p` and `q` are `nn.Module`s whose `forward(x, y=None, *, beta=1.0)` are Pyro programs over
#   the same site names, in a `pyro.plate("data", B)`; `beta` scales the latent sites (warm-up);
# * a semi-supervised guide has `classify(x, num_samples=1) -> (B, K)` probabilities and samples
#   `"y"` with `infer={"enumerate": "parallel"}` when `y` is `None`
#   (`ppl_dgm.guides.label.label_site` does both halves);
# * optionally `p.sample_x(n, y=None)` for `run.sample()` (`ppl-dgm sample`).

# %%
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

import ppl_dgm
from ppl_dgm.tutorial import cleanup, output_dir, run_main

# %% [markdown]
# ## The file
#
# This is the whole pair. The tutorial writes it to `my_models/gmvae.py` in its output folder
# (`--out DIR`, by default `~/.cache/ppl_dgm/tutorials/06_own_pair`); in your own project it is
# simply a file you write.

# %%
PAIR_SOURCE = '''\
"""A VAE with a Gaussian-mixture prior, one learned component per class:
p(y) p(z | y) p(x | z), guide q(y | x) q(z | x, y)."""

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ppl_dgm.guides.label import label_site
from ppl_dgm.pair import Pair
from ppl_dgm.registry import model_spec


def mlp(n_in, hidden, n_out):
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, n_out))


class MixturePriorVAE(nn.Module):
    """p(y) = Cat(1/K), p(z | y) = N(loc[y], scale[y]^2), p(x | z) = Bernoulli(decoder(z))."""

    def __init__(self, x_dim, n_classes, z_dim, hidden):
        super().__init__()
        self.n_classes = n_classes
        self.loc = nn.Parameter(0.1 * torch.randn(n_classes, z_dim))  # one mean per class
        self.log_scale = nn.Parameter(torch.zeros(n_classes, z_dim))  # and one scale
        self.decoder = mlp(z_dim, hidden, x_dim)

    def forward(self, x, y=None, *, beta=1.0):
        with pyro.plate("data", x.shape[0]):
            with pyro.poutine.scale(scale=beta):
                # observed when labelled; enumerated by the guide otherwise (shape (K, 1))
                y = pyro.sample("y", dist.Categorical(logits=x.new_zeros(self.n_classes)), obs=y)
                z = pyro.sample("z", dist.Normal(self.loc[y], self.log_scale[y].exp()).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    @torch.no_grad()
    def sample_x(self, n, y=None):
        if y is None:
            y = torch.randint(self.n_classes, (n,), device=self.loc.device)
        z = dist.Normal(self.loc[y], self.log_scale[y].exp()).sample()
        return torch.sigmoid(self.decoder(z))


class Guide(nn.Module):
    """q(y | x), enumerated when y is not given, and q(z | x, y)."""

    def __init__(self, x_dim, n_classes, z_dim, hidden, alpha):
        super().__init__()
        self.alpha, self.n_classes = alpha, n_classes
        self.classifier = mlp(x_dim, hidden, n_classes)
        # q(z | x, y): the projections of x and of y are summed, so that under enumeration
        # (y of shape (K, 1)) the x part is computed once per point
        self.from_x = nn.Linear(x_dim, hidden)
        self.from_y = nn.Embedding(n_classes, hidden)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(hidden, 2 * z_dim))

    def forward(self, x, y=None, *, beta=1.0):
        with pyro.plate("data", x.shape[0]):
            y = label_site(self.classifier(x), y, self.alpha, beta)
            loc, log_scale = self.head(self.from_x(x) + self.from_y(y)).chunk(2, dim=-1)
            with pyro.poutine.scale(scale=beta):
                pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    def classify(self, x, num_samples=1):
        return torch.softmax(self.classifier(x), dim=-1)


@model_spec(task="semi-supervised", hparams={"z_dim": 8, "hidden": 256},
            train={"epochs": 30, "lr": 1e-3})
def build(hparams, data):
    """Gaussian-mixture-prior VAE: p(y) p(z | y) p(x | z), q(y | x) q(z | x, y)."""
    sizes = (data.x_dim, data.n_classes, hparams["z_dim"], hparams["hidden"])
    return Pair(MixturePriorVAE(*sizes), Guide(*sizes, alpha=hparams["alpha"]))
'''


def write_pair(folder: Path) -> Path:
    path = folder / "my_models" / "gmvae.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(PAIR_SOURCE)
    return path


# %% [markdown]
# ## Train, resume, evaluate, sample
#
# The pair is named by its file and build function, `"my_models/gmvae.py:build"` (a module on the
# path works too: `"my_package.gmvae:build"`). Everything else is the API used for the built-in
# pairs:
#
# ```python
# import ppl_dgm
#
# run = ppl_dgm.train("my_models/gmvae.py:build", dataset="digits", labels=100, epochs=10,
#                     out="runs/gmvae")
# run.config["hparams"]                 # the pair's defaults, with what hparams={...} changed
# run = run.resume(epochs=12)           # two more epochs, same run
# run.evaluate(iw_samples=200)          # IW log-likelihood, Pareto-k, test error
# run.sample()                          # runs/gmvae/samples.png, a row per class
# run = ppl_dgm.load("runs/gmvae")      # later, in another session
# ```
#
# and from a shell, `ppl-dgm train my_models/gmvae.py:build --dataset digits --labels 100
# --epochs 10 --out runs/gmvae`, `ppl-dgm train --resume --epochs 12 --out runs/gmvae`,
# `ppl-dgm evaluate runs/gmvae --iw-samples 200`, `ppl-dgm sample runs/gmvae` (and
# `ppl-dgm models my_models/gmvae.py:build` lists the effective defaults). The run directory
# records where the pair came from (`config.json`, `source`: the file's path and checksum), so
# evaluating, sampling and resuming find the file again, say so in one line if it has gone, and
# warn if it changed.


# %% [markdown]
# ## What the mixture learnt
#
# After training, `run.pair` is the trained pair (the modules of the file above, restored from
# the checkpoint) and `run.trainer()` holds the run's test data. We look at the prior: the
# distance between the class means $\lVert\mu_y - \mu_{y'}\rVert$ against the components' scales,
# and the test points' $\mathbb E_q[z\mid x]$ in the plane of the first two principal axes of
# the means, coloured by their true class, with the components' means. The
# means start close together (0.1 times a standard normal). After the quick run they are still
# close compared with the components' scales, so the components overlap and the classes are told
# apart mostly by $q(y\mid x)$; the nearest class mean already points to the right class much more
# often than chance (one in ten), and longer runs (`--full`) move the components further apart.


# %%
def mixture_figure(run: ppl_dgm.Run, path: Path) -> dict:
    import torch
    from matplotlib.figure import Figure

    from ppl_dgm.results import atomic_write

    trainer = run.trainer(device="cpu")  # the trained pair (eval mode) and the run's data
    p, q = trainer.pair.p, trainer.pair.q
    with torch.no_grad():
        loc = p.loc.numpy()
        scale = p.log_scale.exp().numpy()
        x = trainer.x_test
        labels = torch.arange(len(loc))[:, None]                          # every class, (K, 1)
        locs = q.head(q.from_x(x) + q.from_y(labels)).chunk(2, dim=-1)[0]  # (K, B, d)
        z = torch.einsum("bk,kbd->bd", q.classify(x), locs).numpy()       # E_q[z | x]
    centre = loc.mean(0)
    _, _, axes = np.linalg.svd(loc - centre, full_matrices=False)
    plane = axes[:2].T
    zp, lp = (z - centre) @ plane, (loc - centre) @ plane
    y = trainer.y_test.numpy()
    fig = Figure(figsize=(5, 4.5))
    ax = fig.add_subplot()
    points = ax.scatter(zp[:, 0], zp[:, 1], c=y, cmap="tab10", s=6, alpha=0.6)
    for k, (u, v) in enumerate(lp):
        ax.text(u, v, str(k), fontsize=14, weight="bold", ha="center", va="center")
    fig.colorbar(points, ax=ax, label="true class")
    ax.set(title="E_q[z | x] of test points, and the class means", xlabel="axis 1", ylabel="axis 2")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    distances = np.linalg.norm(loc[:, None] - loc[None], axis=-1)[np.triu_indices(len(loc), 1)]
    # nearest class mean of each test point's E_q[z | x], in units of the components' scales
    nearest = (((z[:, None] - loc[None]) / scale[None]) ** 2).sum(-1).argmin(1)
    return {"mean_distance": float(distances.mean()), "min_distance": float(distances.min()),
            "mean_scale": float(scale.mean()), "nearest_mean_accuracy": float((nearest == y).mean())}


# %%
def main(quick: bool = True, mnist: bool = False, out: str | None = None, keep: bool = False,
         data_dir: str | None = None) -> dict:
    """Write the pair, then train, resume, evaluate and sample it through the Python API."""
    start = time.perf_counter()
    folder = output_dir("06_own_pair", out)
    pair_file = write_pair(folder)
    run_dir = folder / "runs" / "gmvae"
    cleanup([run_dir], keep=False)  # a run left by an earlier --keep: start afresh
    data = {"dataset": "mnist", "data_dir": data_dir} if mnist else {"dataset": "digits"}
    epochs = 8 if quick else 60
    options = {"steps_per_epoch": 50} if mnist and quick else {}
    hparams = {"hidden": 128} if quick else {}

    run = ppl_dgm.train(f"{pair_file}:build", labels=100, epochs=epochs - 2, seed=0, device="cpu",
                        threads=1, hparams=hparams, out=run_dir, progress=False, **data, **options)
    print(f"{run}; hyperparameters {run.config['hparams']}")
    run = run.resume(epochs=epochs, progress=False)
    summary = run.summary
    print(f"resumed to {summary['epochs']} epochs: test accuracy {1 - summary['test_error']:.4f}, "
          f"test ELBO {summary['test_elbo']:.2f} nats per example")
    evaluation = run.evaluate(iw_samples=200 if quick else 5000, device="cpu")
    print(f"IW-{200 if quick else 5000} log-likelihood {evaluation['test_log_likelihood']:.2f} "
          f"nats (ELBO {evaluation['test_elbo']:.2f}); test error {evaluation['test_error']:.4f}; "
          f"Pareto k-hat above 0.7 for {evaluation['pareto_k_fraction_above_0.7']:.1%} of the "
          "test points")
    figures = [run.sample(output=folder / "samples.png", device="cpu"), folder / "mixture.png"]
    mixture = mixture_figure(run, figures[1])
    print(f"class means {mixture['mean_distance']:.2f} apart on average (closest pair "
          f"{mixture['min_distance']:.2f}); component scales {mixture['mean_scale']:.2f} on average; "
          f"the nearest class mean gives the right class for {mixture['nearest_mean_accuracy']:.1%} "
          "of the test points")
    config = run.config
    removed = cleanup([run.path], keep)
    print("figures:", ", ".join(map(str, figures)), f"({time.perf_counter() - start:.1f} s)")
    return {"pair_file": pair_file, "config": config, "summary": summary, "evaluation": evaluation,
            "mixture": mixture, "figures": figures, "removed": removed, "folder": folder,
            "epochs": epochs}


# %%
if __name__ == "__main__":
    run_main(main, "Tutorial 6: a Gaussian-mixture-prior VAE written in your own file, run by the API.")
