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
# # 8. The same pair in Pyro and NumPyro
#
# Every pair of this library exists twice: a Pyro program on PyTorch (`models/m2.py`) and a NumPyro
# program on JAX (`models/m2_numpyro.py`), trained by `backend="pyro"` or `backend="numpyro"`. This
# tutorial writes one small model, a VAE with
#
# $$p(z) = \mathcal N(0, I), \quad p(x\mid z) = \mathrm{Bernoulli}(f_\theta(z)), \qquad
#   q(z \mid x) = \mathcal N(\mu_\phi(x), \operatorname{diag}\sigma_\phi^2(x)),$$
#
# in both languages side by side, and then
#
# 1. copies the weights of the PyTorch networks into the JAX parameters and checks that both
#    programs give **the same ELBO**: exactly for the same noise $\epsilon$
#    ($z = \mu + \sigma\epsilon$), and within Monte Carlo error for each library's own estimator;
# 2. measures the **speed** of a training step in each (Pyro's `SVI.step` runs the Python program
#    every step; NumPyro's `svi.update` is traced once and compiled by `jax.jit`), one CPU thread
#    each.
#
# The programs here are written by hand, and trained by each library's own `SVI`, to show the two
# languages; the library's pairs choose their backend with one option of the Python API (last
# section). It needs the `jax` extra (`pip install -e ".[jax]"`).

# %%
from __future__ import annotations

import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as ndist
import pyro
import pyro.distributions as pdist
import torch
from torch import nn

from ppl_dgm.threads import apply_threads, start_xla
from ppl_dgm.tutorial import output_dir, run_main

# %% [markdown]
# ## The Pyro program
#
# The networks are `torch.nn` modules registered with `pyro.module`; the data sit in a
# `pyro.plate`, and the latent `z` has its event dimension declared with `to_event(1)`.

# %%
class TorchVAE(nn.Module):
    def __init__(self, x_dim: int, z_dim: int, hidden: int) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.encoder = nn.Sequential(nn.Linear(x_dim, hidden), nn.ReLU(), nn.Linear(hidden, 2 * z_dim))
        self.decoder = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, x_dim))

    def model(self, x: torch.Tensor) -> None:
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", pdist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1))
            pyro.sample("x", pdist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            loc, log_scale = self.encoder(x).chunk(2, dim=-1)
            pyro.sample("z", pdist.Normal(loc, log_scale.exp()).to_event(1))


# %% [markdown]
# ## The NumPyro program
#
# The same sites, with the networks written as functions of parameters declared by
# `numpyro.param` (Flax modules registered with `numpyro.contrib.module.flax_module` work as
# well; the library's pairs use them). A dense layer is `h @ W + b`: PyTorch stores `W`
# transposed, so copying the weights is `W = linear.weight.T`.

# %%
def mlp(params: dict, prefix: str, h: jax.Array) -> jax.Array:
    h = jax.nn.relu(h @ params[f"{prefix}.0.w"] + params[f"{prefix}.0.b"])
    return h @ params[f"{prefix}.2.w"] + params[f"{prefix}.2.b"]


def declared(prefix: str, init: dict) -> dict:
    """``numpyro.param`` for every array of ``init`` whose name starts with ``prefix``."""
    return {k: numpyro.param(k, v) for k, v in init.items() if k.startswith(prefix)}


def jax_model(x: jax.Array, init: dict, z_dim: int) -> None:
    params = declared("decoder", init)
    with numpyro.plate("data", x.shape[0]):
        z = numpyro.sample("z", ndist.Normal(jnp.zeros(z_dim), 1.0).to_event(1))
        numpyro.sample("x", ndist.Bernoulli(logits=mlp(params, "decoder", z)).to_event(1), obs=x)


def jax_guide(x: jax.Array, init: dict, z_dim: int) -> None:
    params = declared("encoder", init)
    with numpyro.plate("data", x.shape[0]):
        loc, log_scale = jnp.split(mlp(params, "encoder", x), 2, axis=-1)
        numpyro.sample("z", ndist.Normal(loc, jnp.exp(log_scale)).to_event(1))


def copy_weights(vae: TorchVAE) -> dict:
    """The PyTorch networks' weights as the NumPyro programs' parameters (float32)."""
    params = {}
    for name, tensor in vae.state_dict().items():
        net, layer, kind = name.split(".")
        value = tensor.detach().numpy()
        params[f"{net}.{layer}.{'w' if kind == 'weight' else 'b'}"] = jnp.asarray(
            value.T if kind == "weight" else value)
    return params


# %% [markdown]
# ## The same ELBO
#
# For one draw $\epsilon \sim \mathcal N(0, I)$ shared by both, $z = \mu_\phi(x) + \sigma_\phi(x)
# \epsilon$, and the single-sample ELBO is $\log p(x, z) - \log q(z\mid x)$. In Pyro we trace the
# guide and the model with `z` conditioned on that value; in NumPyro,
# `numpyro.infer.util.log_density` scores each program with `z` substituted. The two must agree to
# float32 rounding. Each library's own `Trace_ELBO` estimator (500 particles in the quick mode)
# must agree with the other within its Monte Carlo error.


# %%
def elbo_same_noise(vae: TorchVAE, params: dict, x: np.ndarray, seed: int) -> tuple[float, float]:
    from numpyro.infer.util import log_density
    from pyro import poutine

    xt = torch.as_tensor(x)
    eps = np.random.default_rng(seed).standard_normal((len(x), vae.z_dim)).astype(np.float32)
    with torch.no_grad():
        loc, log_scale = vae.encoder(xt).chunk(2, dim=-1)
        z = loc + log_scale.exp() * torch.as_tensor(eps)
        guide = poutine.trace(poutine.condition(vae.guide, data={"z": z})).get_trace(xt)
        model = poutine.trace(poutine.condition(vae.model, data={"z": z})).get_trace(xt)
        pyro_elbo = (model.log_prob_sum() - guide.log_prob_sum()).item()
    zj = {"z": jnp.asarray(z.numpy())}
    args = (jnp.asarray(x), params, vae.z_dim)
    log_p, _ = log_density(jax_model, args, {}, {**params, **zj})
    log_q, _ = log_density(jax_guide, args, {}, {**params, **zj})
    return pyro_elbo, float(log_p - log_q)


def elbo_estimators(vae: TorchVAE, params: dict, x: np.ndarray, particles: int) -> dict:
    from numpyro.infer import Trace_ELBO as NumPyroTraceELBO
    from pyro.infer import Trace_ELBO

    pyro.set_rng_seed(0)
    xt = torch.as_tensor(x)
    with torch.no_grad():
        values = [-Trace_ELBO(num_particles=particles, vectorize_particles=True, max_plate_nesting=1
                              ).loss(vae.model, vae.guide, xt) for _ in range(4)]
    xj, z_dim = jnp.asarray(x), vae.z_dim

    @jax.jit
    def loss(key: jax.Array, values: dict) -> jax.Array:  # the parameter values as param_map
        return NumPyroTraceELBO(num_particles=particles).loss(key, values, jax_model, jax_guide,
                                                              xj, values, z_dim)

    jax_values = [-float(loss(jax.random.PRNGKey(k), params)) for k in range(4)]
    return {"pyro": values, "numpyro": jax_values}


# %% [markdown]
# ## The speed of a training step
#
# Both train the same networks from the same initial weights with Adam (learning rate $10^{-3}$)
# on the same batches of 100. Pyro runs the Python program and PyTorch's autograd every step;
# NumPyro traces `svi.update` once, compiles it with `jax.jit` (the first call, timed apart), and
# then runs the compiled function. We time the steps after the first ten, with one CPU thread for
# PyTorch and for XLA (`ppl_dgm.threads.apply_threads(1)`, the `threads=1` of `ppl_dgm.train`;
# XLA reads it when JAX starts its CPU backend, so before the first JAX computation).


# %%
def time_pyro(vae: TorchVAE, batches: list[np.ndarray]) -> tuple[float, float]:
    from pyro.infer import SVI, Trace_ELBO

    pyro.clear_param_store()
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
    tensors = [torch.as_tensor(b) for b in batches]
    for b in tensors[:10]:
        svi.step(b)
    start = time.perf_counter()
    for b in tensors[10:]:
        loss = svi.step(b)
    return (time.perf_counter() - start) / (len(batches) - 10), loss / len(batches[0])


def time_numpyro(params: dict, z_dim: int, batches: list[np.ndarray]) -> tuple[float, float, float]:
    from numpyro.infer import SVI, Trace_ELBO

    svi = SVI(jax_model, jax_guide, numpyro.optim.Adam(1e-3), Trace_ELBO())
    state = svi.init(jax.random.PRNGKey(0), jnp.asarray(batches[0]), params, z_dim)
    update = jax.jit(svi.update, static_argnums=(3,))
    start = time.perf_counter()
    state, loss = update(state, jnp.asarray(batches[0]), params, z_dim)
    jax.block_until_ready(loss)
    compile_seconds = time.perf_counter() - start
    for b in batches[1:10]:
        state, loss = update(state, jnp.asarray(b), params, z_dim)
    jax.block_until_ready(loss)
    start = time.perf_counter()
    for b in batches[10:]:
        state, loss = update(state, jnp.asarray(b), params, z_dim)
    jax.block_until_ready(loss)
    seconds = (time.perf_counter() - start) / (len(batches) - 10)
    return seconds, float(loss) / len(batches[0]), compile_seconds


def plot_speed(times: dict, path: Path) -> Path:
    from matplotlib.figure import Figure

    from ppl_dgm.results import atomic_write

    fig = Figure(figsize=(5, 2.6))
    ax = fig.add_subplot()
    names = list(times)
    ax.barh(names, [1e3 * times[n] for n in names], color=["tab:orange", "tab:blue"])
    for i, n in enumerate(names):
        ax.text(1e3 * times[n], i, f" {1e3 * times[n]:.2f} ms", va="center")
    ax.set_xlabel("milliseconds per training step (batch 100, one thread)")
    ax.set_xlim(0, 1.35e3 * max(times.values()))
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    return path


# %%
def main(quick: bool = True, mnist: bool = False, out: str | None = None, keep: bool = False,
         data_dir: str | None = None) -> dict:
    """Run the tutorial; returns the ELBOs of both programs, the step times and the figure."""
    from ppl_dgm.data import binarize_static, load_dataset

    start = time.perf_counter()
    apply_threads(1)  # one CPU thread for PyTorch, and for XLA once its CPU backend starts
    start_xla(1)
    folder = output_dir("08_pyro_vs_numpyro", out)
    data = load_dataset("mnist" if mnist else "digits", data_dir)
    x = binarize_static(data.x_train.reshape(len(data.x_train), -1), seed=0).astype(np.float32)
    torch.manual_seed(0)
    vae = TorchVAE(x.shape[1], z_dim=8, hidden=200)
    params = copy_weights(vae)

    pyro_value, jax_value = elbo_same_noise(vae, params, x[:100], seed=0)
    print(f"ELBO of 100 points, same weights and noise: Pyro {pyro_value:.4f}, NumPyro "
          f"{jax_value:.4f} (difference {abs(pyro_value - jax_value):.1e})")
    particles = 500 if quick else 5000
    est = elbo_estimators(vae, params, x[:10], particles)
    mean_p, mean_j = np.mean(est["pyro"]), np.mean(est["numpyro"])
    se = math.sqrt(np.var(est["pyro"], ddof=1) / 4 + np.var(est["numpyro"], ddof=1) / 4)
    print(f"Trace_ELBO of 10 points, {particles} particles, 4 repeats: Pyro {mean_p:.3f}, NumPyro "
          f"{mean_j:.3f} (standard error of the difference {se:.3f})")

    steps = 70 if quick else 1010
    rng = np.random.default_rng(0)
    batches = [x[rng.choice(len(x), 100, replace=False)] for _ in range(steps)]
    pyro_step, pyro_loss = time_pyro(vae, batches)
    jax_step, jax_loss, compile_seconds = time_numpyro(params, vae.z_dim, batches)
    print(f"{steps - 10} timed steps: Pyro {1e3 * pyro_step:.2f} ms/step (loss {pyro_loss:.2f}), "
          f"NumPyro {1e3 * jax_step:.2f} ms/step (loss {jax_loss:.2f}; compiling took "
          f"{compile_seconds:.2f} s): NumPyro is {pyro_step / jax_step:.1f}x as fast per step")
    figure = plot_speed({"Pyro (PyTorch)": pyro_step, "NumPyro (JAX, jit)": jax_step},
                        folder / "speed.png")
    print(f"figure: {figure} ({time.perf_counter() - start:.1f} s)")
    return {"pyro_elbo": pyro_value, "numpyro_elbo": jax_value, "estimators": est,
            "estimator_se": se, "pyro_step": pyro_step, "numpyro_step": jax_step,
            "compile_seconds": compile_seconds, "pyro_loss": pyro_loss, "numpyro_loss": jax_loss,
            "figures": [figure]}


# %% [markdown]
# ## The library's pairs in both backends
#
# Every registered pair has both programs (`models/m2.py` and `models/m2_numpyro.py`), so with the
# Python API the backend is one option, and the two runs train on the same validation split and
# labelled draw for a seed and write the same records:
#
# ```python
# import ppl_dgm
#
# pyro_run = ppl_dgm.train("m2", backend="pyro", labels=100, epochs=10, out="runs/m2-pyro")
# jax_run = ppl_dgm.train("m2", backend="numpyro", labels=100, epochs=10, out="runs/m2-numpyro")
# pyro_run.pair      # the nn.Module pair; pyro_run.params is its state_dict
# jax_run.pair       # the NumPyro programs; jax_run.params holds their parameters (Flax's
#                    # kernels are (in, out): the transposes of torch's weights, as above)
# ppl_dgm.compare(["m2"], ["trace_enum"], backends=["pyro", "numpyro"], epochs=10, out="cmp")
# ```
#
# `compare` reports each backend's steady-state milliseconds per step (wall and CPU) beside its
# test figures. A NumPyro run first traces and compiles its programs (its contract check, the
# training step and the evaluations), which for the library's M2 on a CPU takes far longer than
# the compilation of the small program above; the steady-state step times leave it out. These runs
# are not part of this tutorial's quick mode, to keep it short.


# %%
if __name__ == "__main__":
    run_main(main, "Tutorial 8: one VAE written in Pyro and in NumPyro: same ELBO, step speed.")
