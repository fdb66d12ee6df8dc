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
# # 1. M2: labelled and unlabelled data, and a label summed out exactly
#
# M2 (Kingma, Rezende, Mohamed and Welling 2014) is a generative model of images $x$ with a class
# label $y$ and a continuous style $z$:
#
# $$p(y) = \mathrm{Cat}(1/K), \quad p(z) = \mathcal N(0, I), \quad
#   p(x \mid y, z) = \mathrm{Bernoulli}(f_\theta(y, z)),$$
#
# with the inference model (the guide) $q(y \mid x)\, q(z \mid x, y)$. A labelled point gives the bound
#
# $$-\mathcal L(x, y) = \mathbb E_{q(z|x,y)}[\log p(x, y, z) - \log q(z \mid x, y)],$$
#
# an unlabelled point the bound in which the label is *summed out* under the guide:
#
# $$-\mathcal U(x) = \sum_y q(y \mid x)\,\bigl(-\mathcal L(x, y)\bigr) + \mathcal H[q(y \mid x)],$$
#
# and since $q(y\mid x)$ appears only in $\mathcal U$, the labelled points also train the classifier
# through the classification term $\alpha \log q(y \mid x)$. The objective is
#
# $$\mathcal J = \sum_{(x,y)\in\text{labelled}} \bigl[\mathcal L(x,y) - \alpha \log q(y\mid x)\bigr]
#   + \sum_{x \in \text{unlabelled}} \mathcal U(x).$$
#
# This tutorial shows, with the library's M2 pair (`models/m2.py`, `guides/label.py`):
#
# 1. a short training run through the library's Python API (`ppl_dgm.train`), its per-epoch
#    records, and samples from $p(x \mid y, z)$ per class (`run.sample`);
# 2. the two kinds of data as one program: the `data` plate, `y` observed or enumerated;
# 3. that `TraceEnum_ELBO` computes exactly the sum over the 10 labels above (checked by hand),
#    and that the classification term is $\alpha \log q(y\mid x)$;
# 4. why the sum matters: the spread of the **gradients** of the classifier's weights when $y$ is
#    summed out against when it is sampled (score-function estimator).
#
# Run it as a script (`python tutorials/01_m2.py`, `--full` for a longer run, `--mnist` for MNIST)
# or open it as a notebook (`jupytext --to notebook tutorials/01_m2.py`).

# %%
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceEnum_ELBO
from pyro.poutine.util import site_is_factor, site_is_subsample

import ppl_dgm
from ppl_dgm.results import atomic_write
from ppl_dgm.tutorial import cleanup, output_dir, run_main

# %% [markdown]
# ## Training through the API
#
# `ppl_dgm.train` takes the options of `ppl-dgm train` as keywords and returns a `Run`: the run
# directory (`config.json`, `history.nc`, `summary.json`, the checkpoint), read when asked for.
# The library's loop takes one step on a labelled and an unlabelled batch at a time
# (`ppl_dgm.infer.objectives.semi_supervised_loss`), with $\alpha = 0.1\,N/N_\ell$. `run.history`
# is an xarray Dataset with one record per epoch; `run.sample()` draws a grid from
# $p(x\mid y, z)$, one row per class $y$ with random styles $z \sim p(z)$.
#
# ```python
# run = ppl_dgm.train("m2", dataset="digits", labels=100, epochs=5, out="runs/m2")
# run.history[["loss", "validation_elbo", "test_error"]].to_dataframe()
# run.sample(per_class=10)
# ```


# %%
def train(folder: Path, quick: bool, mnist: bool, data_dir: str | None = None) -> ppl_dgm.Run:
    data = {"dataset": "mnist", "data_dir": data_dir} if mnist else {"dataset": "digits"}
    budget = {"epochs": 5 if quick else 60} if not mnist else {"epochs": 1 if quick else 10}
    if mnist and quick:
        budget["steps_per_epoch"] = 50
    return ppl_dgm.train("m2", labels=100, seed=0, device="cpu", threads=1, out=folder / "run",
                         progress=False, **data, **budget)


# %% [markdown]
# ## One program for both kinds of data
#
# `run.trainer()` restores the trained pair from the run's checkpoint together with the run's data
# split: a labelled subset (100 points, balanced) and the unlabelled rest. The model's
# `forward(x, y=None)` puts every site inside `pyro.plate("data", B)`. With `y` given, `y` is an
# observed site. With `y=None` the guide's `y` site carries `infer={"enumerate": "parallel"}`,
# and under `TraceEnum_ELBO` Pyro replaces the sample by all $K$ values along a new dimension to
# the **left** of the data plate: `y` has shape `(K, 1)`, and everything that depends on it, such
# as `z`, has shape `(K, B, ...)`.


# %%
def site_shapes(pair, x: torch.Tensor, y: torch.Tensor | None) -> dict[str, tuple]:
    """Shapes of the guide's and model's sites as TraceEnum_ELBO sees them (y enumerated if None)."""
    guide = poutine.trace(poutine.enum(pair.guide, first_available_dim=-2)).get_trace(x, y)
    model = poutine.trace(poutine.replay(pair.model, trace=guide)).get_trace(x, y)
    def keep(site: dict) -> bool:
        return site["type"] == "sample" and not site_is_subsample(site) and not site_is_factor(site)

    shapes = {f"q:{n}": tuple(s["value"].shape) for n, s in guide.nodes.items() if keep(s)}
    shapes.update({f"p:{n}": tuple(s["value"].shape) for n, s in model.nodes.items() if keep(s)})
    return shapes


# %% [markdown]
# ## The sum over labels, by hand
#
# With the same random numbers (the same seed), we trace the enumerated guide, replay the model on
# it, and write $-\mathcal U(x)$ out: for each of the $K$ labels the log-densities of the model and
# the guide's $z$, weighted by $q(y\mid x)$, plus the entropy of $q(y\mid x)$. It must equal minus
# `TraceEnum_ELBO`'s loss.
#
# For a labelled batch, the guide adds `pyro.factor("classification", -alpha * log q(y|x))`; the
# difference between the losses with and without it is exactly $-\alpha \sum \log q(y\mid x)$.


# %%
def unlabelled_bound_by_hand(pair, x: torch.Tensor, seed: int) -> tuple[float, float]:
    """(-TraceEnum_ELBO loss, the same bound written out as a sum over labels), same randomness."""
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    pyro.set_rng_seed(seed)
    pyro_value = -elbo.loss(pair.model, pair.guide, x, None)
    pyro.set_rng_seed(seed)
    guide = poutine.trace(poutine.enum(pair.guide, first_available_dim=-2)).get_trace(x, None)
    model = poutine.trace(poutine.replay(pair.model, trace=guide)).get_trace(x, None)
    with torch.no_grad():
        q_y = guide.nodes["y"]["fn"]                       # Categorical, batch (B,)
        log_q_y = q_y.logits.log_softmax(-1).T              # (K, B)
        log_q_z = guide.nodes["z"]["fn"].log_prob(guide.nodes["z"]["value"])  # (K, B)
        log_p = sum(model.nodes[n]["fn"].log_prob(model.nodes[n]["value"]).expand(log_q_z.shape)
                    for n in ("y", "z", "x"))               # (K, B)
        per_label = log_p - log_q_z                         # -L(x, y) for each y
        by_hand = (log_q_y.exp() * (per_label - log_q_y)).sum().item()
    return pyro_value, by_hand


def classification_term(pair, x: torch.Tensor, y: torch.Tensor, seed: int) -> tuple[float, float]:
    """(loss with alpha - loss with alpha = 0, -alpha * sum log q(y|x) computed from the classifier)."""
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    alpha = pair.q.alpha
    pyro.set_rng_seed(seed)
    with_term = elbo.loss(pair.model, pair.guide, x, y)
    pair.q.alpha = 0.0
    pyro.set_rng_seed(seed)
    without = elbo.loss(pair.model, pair.guide, x, y)
    pair.q.alpha = alpha
    with torch.no_grad():
        log_q = pair.q.classifier(x).log_softmax(-1).gather(-1, y[:, None]).sum().item()
    return with_term - without, -alpha * log_q


# %% [markdown]
# ## Summing against sampling: the spread of the gradients
#
# `Trace_ELBO` can estimate the same bound by *sampling* $y \sim q(y\mid x)$. Both estimators are
# unbiased for the gradient, but the classifier's weights $\phi$ then receive their gradient through
# the score function, $\nabla_\phi \log q(y\mid x)\,(\log p - \log q)$, whose size is that of the whole
# bound (hundreds of nats), while the enumerated sum differentiates $q(y\mid x)$ directly and its
# only noise comes from $z$. We repeat the gradient of one unlabelled batch's loss with respect to
# the classifier's parameters many times with each estimator (networks in evaluation mode, so only
# the sampling differs) and compare
#
# * the mean gradients (the same quantity: they must agree within Monte Carlo error),
# * the total variance $\operatorname{tr}\operatorname{Cov}[\hat g]$ and the gradient's
#   signal-to-noise ratio $\lVert \mathbb E \hat g\rVert / \sqrt{\operatorname{tr}\operatorname{Cov}
#   [\hat g]}$, with the common $\mathbb E \hat g$ measured by the enumerated estimator's mean
#   (less its expected noise). Averaging $n$ sampled gradients divides their variance by $n$: to
#   be as precise as one enumerated gradient, the sampled estimator needs about "variance ratio"
#   times as many samples (particles or steps).


# %%
def classifier_gradients(pair, x: torch.Tensor, elbo, repeats: int, seed: int) -> np.ndarray:
    """``repeats`` gradient estimates of the unlabelled loss w.r.t. the classifier: (repeats, P)."""
    params = [p for p in pair.q.classifier.parameters() if p.requires_grad]
    pyro.set_rng_seed(seed)
    grads = []
    for _ in range(repeats):
        loss = elbo.differentiable_loss(pair.model, pair.guide, x, None) / x.shape[0]
        grads.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]))
    return torch.stack(grads).numpy().astype(np.float64)


def gradient_spread(pair, x: torch.Tensor, repeats: int) -> dict[str, dict[str, float]]:
    import warnings

    pair.eval()
    stats = {}
    grads = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Trace_ELBO notes that it samples the enumerable y
        for name, elbo in (("enumerated", TraceEnum_ELBO(max_plate_nesting=1)),
                           ("sampled", Trace_ELBO(max_plate_nesting=1))):
            g = classifier_gradients(pair, x, elbo, repeats, seed=1)
            grads[name] = g
            stats[name] = {"mean_norm": float(np.linalg.norm(g.mean(0))),
                           "total_variance": float(g.var(0, ddof=1).sum())}
    pair.train()
    # both estimate one gradient; its size is best measured by the low-variance (enumerated) mean,
    # debiased: E|mean|^2 = |E g|^2 + tr Cov / repeats
    signal = math.sqrt(max(stats["enumerated"]["mean_norm"] ** 2
                           - stats["enumerated"]["total_variance"] / repeats, 0.0))
    for name in ("enumerated", "sampled"):
        stats[name]["snr"] = signal / math.sqrt(stats[name]["total_variance"])
    # the two means estimate one gradient: their difference, against its standard error
    diff = grads["enumerated"].mean(0) - grads["sampled"].mean(0)
    se = math.sqrt((stats["enumerated"]["total_variance"] + stats["sampled"]["total_variance"]) / repeats)
    stats["mean_difference"] = {"norm": float(np.linalg.norm(diff)), "standard_error": se}
    stats["_first_coordinate"] = {k: v[:, int(np.abs(v.mean(0)).argmax())] for k, v in grads.items()}
    return stats


def plot_gradients(stats: dict, path: Path) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 3.2))
    ax = fig.add_subplot()
    samples = stats["_first_coordinate"]
    lo = min(v.min() for v in samples.values())
    hi = max(v.max() for v in samples.values())
    bins = np.linspace(lo, hi, 60)
    for name, values in samples.items():
        ax.hist(values, bins=bins, alpha=0.6, label=f"y {name} (std {values.std():.3g})")
    ax.set_xlabel("gradient of one classifier weight (per data point)")
    ax.set_ylabel("repeats")
    ax.set_title("one unlabelled batch, repeated gradient estimates")
    ax.legend(fontsize="small")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    return path


# %%
def main(quick: bool = True, mnist: bool = False, out: str | None = None, keep: bool = False,
         data_dir: str | None = None) -> dict:
    """Run the tutorial; returns the numbers it shows and the paths of its figures."""
    start = time.perf_counter()
    folder = output_dir("01_m2", out)
    cleanup([folder / "run"], keep=False)  # a run left by an earlier --keep: start afresh
    run = train(folder, quick, mnist, data_dir)
    summary = run.summary
    print(f"after {summary['epochs']} epochs ({summary['steps']} steps): test accuracy "
          f"{1 - summary['test_error']:.3f}, test ELBO {summary['test_elbo']:.2f} nats")
    print(run.history[["loss", "validation_elbo", "test_error"]].to_dataframe().round(3))
    samples = run.sample(output=folder / "samples.png", per_class=10)

    trainer = run.trainer(device="cpu")  # the trained pair (eval mode) and the run's data split
    pair = run.pair
    torch.manual_seed(0)
    x_u = torch.bernoulli(trainer.x_train[trainer.unlabelled[:32]])
    x_l = torch.bernoulli(trainer.x_train[trainer.labelled[:32]])
    y_l = trainer.y_train[trainer.labelled[:32]]
    print(f"{len(trainer.labelled)} labelled and {len(trainer.unlabelled)} unlabelled training points; "
          f"alpha = {pair.q.alpha:.1f}")
    shapes_u = site_shapes(pair, x_u, None)
    shapes_l = site_shapes(pair, x_l, y_l)
    print("unlabelled batch of 32, y enumerated:", shapes_u)
    print("labelled batch of 32, y observed:   ", shapes_l)

    value, by_hand = unlabelled_bound_by_hand(pair, x_u, seed=3)
    print(f"-U(x) summed over the batch: TraceEnum_ELBO {value:.4f}, by hand {by_hand:.4f}")
    term, term_by_hand = classification_term(pair, x_l, y_l, seed=4)
    print(f"classification term in the loss: {term:.4f}; -alpha * sum log q(y|x) = {term_by_hand:.4f}")

    repeats = 100 if quick else 1000
    stats = gradient_spread(pair, x_u, repeats)
    for name in ("enumerated", "sampled"):
        s = stats[name]
        print(f"y {name:<10}: |mean gradient| {s['mean_norm']:.4f}, total variance "
              f"{s['total_variance']:.4g}, SNR {s['snr']:.3f}  ({repeats} repeats)")
    ratio = stats["sampled"]["total_variance"] / stats["enumerated"]["total_variance"]
    diff = stats["mean_difference"]
    print(f"sampling y multiplies the gradient variance by {ratio:.0f}; the means differ by "
          f"{diff['norm']:.4f} (standard error {diff['standard_error']:.4f})")

    figures = [plot_gradients(stats, folder / "gradients.png"), samples]
    n_classes = trainer.info.n_classes
    removed = cleanup([run.path], keep)
    stats.pop("_first_coordinate")
    print("figures:", ", ".join(str(f) for f in figures), f"({time.perf_counter() - start:.1f} s)")
    return {"shapes_unlabelled": shapes_u, "shapes_labelled": shapes_l, "n_classes": n_classes,
            "enum_value": value, "by_hand": by_hand, "classification": term,
            "classification_by_hand": term_by_hand, "summary": summary, "gradients": stats,
            "variance_ratio": ratio, "repeats": repeats, "figures": figures, "removed": removed,
            "folder": folder}


# %%
if __name__ == "__main__":
    run_main(main, "Tutorial 1: M2, labelled and unlabelled data, y summed out exactly.")
