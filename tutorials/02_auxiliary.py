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
# # 2. Auxiliary variables: ADGM and SDGM
#
# The auxiliary deep generative models (Maaløe, Sønderby, Sønderby and Winther 2016) add a
# continuous variable $a$ to M2. The inference model becomes
#
# $$q(a, y, z \mid x) = q(a \mid x)\, q(y \mid a, x)\, q(z \mid a, y, x),$$
#
# a continuous mixture over $a$, richer than M2's $q(y\mid x)\,q(z\mid x, y)$. The generative model
# must then say how $a$ arises:
#
# * **ADGM**: $p(y)\,p(z)\,p(x\mid y,z)\,p(a\mid x,y,z)$: $a$ is generated *after* $x$, so the
#   marginal $p(x, y, z)$ is M2's; $a$ only enriches the guide;
# * **SDGM**: $p(y)\,p(z)\,p(a\mid y,z)\,p(x\mid a,y,z)$: $a$ is a second stochastic layer that the
#   decoder reads (a skip connection from $z$ and $y$ to $x$).
#
# The unlabelled bound sums $y$ out as in M2, but inside an expectation over $a$:
#
# $$-\mathcal U(x) = \mathbb E_{q(a|x)}\Bigl[\sum_y q(y\mid a,x)\bigl(\mathbb E_{q(z|a,y,x)}
#   [\log p(x,y,z,a) - \log q(z\mid a,y,x)] - \log q(y\mid a,x)\bigr) - \log q(a\mid x)\Bigr].$$
#
# This tutorial shows
#
# 1. **why $a$ is drawn outside the enumeration**, from the shapes of the traces: one $a$ per
#    data point, shared by the $K$ labels of the sum, because the classifier $q(y\mid a, x)$ must
#    see $a$ before $y$ exists;
# 2. what says, during a short training run of both models, whether the classifier uses $a$:
#    the mutual information $I(y; a\mid x)$ under the guide, not the $a$-term of the bound.
#
# Both models are trained through the library's Python API (`ppl_dgm.train`); the traces are
# taken of the trained pairs (`run.pair`), the records read from `run.history`.

# %%
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from pyro import poutine

import ppl_dgm
from ppl_dgm.plots import plot_site_kl
from ppl_dgm.tutorial import cleanup, output_dir, run_main

# %% [markdown]
# ## The traces under enumeration
#
# `TraceEnum_ELBO` runs the guide under `poutine.enum`: the enumerated site `y` takes all $K$
# values along a dimension left of the `data` plate, shape `(K, 1)`, and every site sampled after
# it and depending on it gets that dimension too. In `guides/auxiliary.py` the guide samples
# `a ~ q(a | x)` first, then computes the logits of $q(y\mid a,x)$ from that `a`, then enumerates
# `y`, then samples `z ~ q(z | a, y, x)` for every label. So:
#
# * `q:a` has shape `(B, a_dim)`: **no** label dimension, one draw per point, the same $a$ in all
#   $K$ terms of the sum (the bound above has $\mathbb E_{q(a|x)}$ outside $\sum_y$);
# * `q:z` has shape `(K, B, z_dim)`: one $z$ per label and point;
# * the model's $\log p(a\mid x, y, z)$ (ADGM) or $\log p(a\mid y, z)$ (SDGM) has shape `(K, B)`:
#   it depends on the enumerated $y$, although $a$'s value does not.
#
# Drawing $a$ after $y$ (inside the enumeration) would not be the paper's family: $q(y\mid a, x)$
# needs $a$, and each label would get its own $a$, so $\sum_y q(y\mid a,x)$ would mix
# distributions conditioned on different $a$'s.


# %%
def train(name: str, folder: Path, quick: bool, mnist: bool,
          data_dir: str | None = None) -> ppl_dgm.Run:
    data = {"dataset": "mnist", "data_dir": data_dir} if mnist else {"dataset": "digits"}
    options = {"epochs": 4 if quick else 100}
    hparams = {}
    if quick:  # small networks so that both models train in seconds
        hparams = {"hidden": [128, 128], "a_dim": 16, "z_dim": 16}
        options.update(lr=1e-3, num_particles=2 if name == "sdgm" else 1, classify_samples=10)
        if mnist:
            options["steps_per_epoch"] = 30
    return ppl_dgm.train(name, labels=100, seed=0, device="cpu", threads=1, hparams=hparams,
                         out=folder / f"run-{name}", progress=False, **data, **options)


def trace_shapes(pair, x: torch.Tensor) -> dict[str, tuple]:
    """Value shapes of the guide's sites and log-density shapes of the model's, y enumerated."""
    pair.eval()
    guide = poutine.trace(poutine.enum(pair.guide, first_available_dim=-2)).get_trace(x, None)
    model = poutine.trace(poutine.replay(pair.model, trace=guide)).get_trace(x, None)
    shapes = {f"q:{n} value": tuple(guide.nodes[n]["value"].shape) for n in ("a", "y", "z")}
    guide.compute_log_prob()
    model.compute_log_prob()
    shapes["q:a log_prob"] = tuple(guide.nodes["a"]["log_prob"].shape)
    shapes["p:a log_prob"] = tuple(model.nodes["a"]["log_prob"].shape)
    shapes["p:x log_prob"] = tuple(model.nodes["x"]["log_prob"].shape)
    return shapes


# %% [markdown]
# ## Is $a$ in use? The $a$-term is not a KL
#
# The bound pays, per data point, the **$a$-term** $\mathbb E_{q}\bigl[\log q(a\mid x) -
# \log p(a\mid \cdot)\bigr]$ (recorded as `a_term` in `history.nc`, on validation data). It is
# tempting to read it as "the KL of $a$" and to call $a$ collapsed when it is near zero. For the
# ADGM it is no KL: with $p(a\mid x, y, z)$,
#
# $$\mathbb E_q\bigl[\log q(a\mid x) - \log p(a\mid x,y,z)\bigr] =
#   \mathbb E\bigl[\mathrm{KL}(q(a\mid x,y,z)\,\|\,p(a\mid x,y,z))\bigr] - I_q(a; y, z\mid x),$$
#
# so it sits near zero, or below it, exactly when $a$ is informative about $y$ and $z$ and the
# model's $p(a\mid x,y,z)$ has learnt that. What says whether the classifier uses $a$ is the
# **mutual information** between the label and $a$ under the guide,
#
# $$I(y; a\mid x) = H\bigl[\mathbb E_{q(a|x)} q(y\mid a,x)\bigr] - \mathbb E_{q(a|x)}
#   H\bigl[q(y\mid a,x)\bigr],$$
#
# zero when $q(y\mid a, x)$ ignores $a$, at most $\log K$. The trainer records it at every
# evaluation (`mutual_info_y_a`, with 100 draws of $a$, `ppl_dgm.infer.auxiliary_diagnostics`),
# beside the mean standard deviation of $q(a\mid x)$ (`a_std`) and the test error with one draw of
# $a$ and with 100 (`test_error_a1`, `test_error_a100`).


# %%
@torch.no_grad()
def classifier_spread(pair, x: torch.Tensor) -> float:
    """Mean total variation between q(y | a1, x) and q(y | a2, x) for two draws a1, a2 ~ q(a | x)."""
    q = pair.eval().q
    loc, scale = q.q_a(x)
    probs = [torch.softmax(q.q_y_logits(x, loc + scale * torch.randn_like(loc)), -1) for _ in range(2)]
    return 0.5 * (probs[0] - probs[1]).abs().sum(-1).mean().item()


def train_and_record(name: str, quick: bool, mnist: bool, folder: Path,
                     data_dir: str | None) -> dict:
    run = train(name, folder, quick, mnist, data_dir)
    trainer = run.trainer(device="cpu")  # the trained pair and the run's data split
    torch.manual_seed(0)
    x = torch.bernoulli(trainer.x_train[trainer.unlabelled[:16]])
    shapes = trace_shapes(run.pair, x)
    history = run.history
    kl = history["kl"].transpose("epoch", "site")
    figure = folder / f"kl_{name}.png"
    plot_site_kl(history, figure)
    spread = classifier_spread(run.pair, trainer.x_test[:200])
    return {"shapes": shapes, "summary": run.summary, "figure": figure, "spread": spread,
            "a_term": [float(v) for v in history["a_term"].values],
            "mutual_info_y_a": [float(v) for v in history["mutual_info_y_a"].values],
            "kl_z": [float(v) for v in kl.sel(site="z").values],
            "n_classes": trainer.info.n_classes, "run_dir": run.path}


# %%
def main(quick: bool = True, mnist: bool = False, out: str | None = None, keep: bool = False,
         data_dir: str | None = None) -> dict:
    """Run the tutorial; returns the shapes, the records of a and the figure paths it shows."""
    start = time.perf_counter()
    folder = output_dir("02_auxiliary", out)
    cleanup([folder / "run-adgm", folder / "run-sdgm"], keep=False)  # left by an earlier --keep
    models = {}
    for name in ("adgm", "sdgm"):
        models[name] = record = train_and_record(name, quick, mnist, folder, data_dir)
        print(f"{name.upper()} traces with y enumerated (batch of 16):")
        for site, shape in record["shapes"].items():
            print(f"    {site:<14} {shape}")
        a_term = np.round(record["a_term"], 2).tolist()
        info = np.round(record["mutual_info_y_a"], 3).tolist()
        kl_z = np.round(record["kl_z"], 2).tolist()
        print(f"  I(y; a | x) by epoch {info} nats; the a-term {a_term} nats (not a KL); "
              f"KL of z {kl_z}")
        print(f"  q(y|a,x) moves by {record['spread']:.3f} (total variation) between two draws of a; "
              f"test accuracy {1 - record['summary']['test_error']:.3f} after "
              f"{record['summary']['epochs']} epochs")
    removed = cleanup([m["run_dir"] for m in models.values()], keep)
    figures = [m["figure"] for m in models.values()]
    print("figures:", ", ".join(map(str, figures)), f"({time.perf_counter() - start:.1f} s)")
    return {"models": models, "figures": figures, "removed": removed}


# %%
if __name__ == "__main__":
    run_main(main, "Tutorial 2: ADGM and SDGM, the auxiliary variable a and whether it is used.")
