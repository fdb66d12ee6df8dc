"""Gradient-variance diagnostics of a NumPyro trainer's objective (the twin of
``ppl_dgm.infer.gradients``; statistics in ``ppl_dgm.infer.gradient_stats``).

:func:`gradient_draws` differentiates the trainer's SVI loss (its ELBO on its wrapped programs)
``num_draws`` times, each with its own key, at the current parameters on one fixed batch (the
indices ``ppl_dgm.infer.gradients.fixed_batch`` draws, binarised once, the current warm-up beta),
with respect to the parameters SVI optimises, as ``SVI.update`` does (mutable state held fixed).
Nothing of the trainer changes. Importing this module never imports torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers

from ppl_dgm.infer.gradient_stats import summarize


def fixed_batch(trainer: Any, batch_seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """Indices of one training batch drawn with ``batch_seed`` (as the Pyro twin draws them)."""
    rng = np.random.default_rng(batch_seed)
    cfg = trainer.config
    if trainer.task == "semi-supervised":
        idx = rng.choice(trainer.unlabelled, min(cfg.batch_size, len(trainer.unlabelled)),
                         replace=False)
        idx_l = rng.choice(trainer.labelled, min(cfg.labelled_batch_size, len(trainer.labelled)),
                           replace=False)
        return idx, idx_l
    return rng.choice(len(trainer.x_train), min(cfg.batch_size, len(trainer.x_train)),
                      replace=False), None


def draw_gradients(value_and_grad: Callable[[jax.Array], tuple[jax.Array, dict[str, Any]]],
                   group_of: dict[str, str], key: jax.Array,
                   num_draws: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Call ``value_and_grad(key_i) -> (loss, {name: gradient})`` for ``num_draws`` keys folded
    from ``key``; gradients flattened per group (``group_of[name]``): ``({group: (N, P)},
    losses (N,))``."""
    groups = sorted(set(group_of.values()))
    names = sorted(group_of)
    draws: dict[str, list[np.ndarray]] = {g: [] for g in groups}
    losses = []
    for draw in range(num_draws):
        value, grads = value_and_grad(jax.random.fold_in(key, draw))
        for group in groups:
            leaves = [np.asarray(leaf, np.float64).reshape(-1) for n in names
                      if group_of[n] == group for leaf in jax.tree_util.tree_leaves(grads[n])]
            draws[group].append(np.concatenate(leaves) if leaves else np.zeros(0))
        losses.append(float(value))
    return {g: np.stack(d) for g, d in draws.items()}, np.asarray(losses, dtype=np.float64)


def _param_names(program: Any, params: dict[str, Any], args: tuple, kwargs: dict[str, Any],
                 key: jax.Array) -> set[str]:
    traced = handlers.trace(handlers.seed(handlers.substitute(program, data=params), key))
    return {name for name, site in traced.get_trace(*args, **kwargs).items()
            if site["type"] == "param"}


def gradient_draws(trainer: Any, num_draws: int = 50,
                   batch_seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``({"q": (N, P_q), "p": (N, P_p)}, losses (N,))`` at the trainer's current parameters."""
    if num_draws < 2:
        raise ValueError(f"need at least 2 gradient draws (got {num_draws})")
    svi, state = trainer.svi, trainer.svi_state
    idx, idx_l = fixed_batch(trainer, batch_seed)
    key = jax.random.PRNGKey(batch_seed)
    binarize = trainer.task != "supervised"

    def batch(rows: np.ndarray, k: jax.Array) -> jax.Array:
        x = trainer.x_train[jnp.asarray(rows, jnp.int32)]
        return jax.random.bernoulli(k, x).astype(x.dtype) if binarize else x

    k_l, k_u, k_noise = jax.random.split(key, 3)
    if trainer.task == "semi-supervised":
        args: tuple = (batch(idx_l, k_l), trainer.y_train[jnp.asarray(idx_l, jnp.int32)],
                       batch(idx, k_u))
    elif trainer.task == "supervised":
        args = (batch(idx, k_u), trainer.y_train[jnp.asarray(idx, jnp.int32)])
    else:
        args = (batch(idx, k_u),)
    kwargs = {"beta": jnp.asarray(trainer.warmup(trainer.step), jnp.float32)}
    if trainer.task == "supervised":
        kwargs = {}
    unconstrained = svi.optim.get_params(state.optim_state)
    mutable = state.mutable_state or {}

    def loss(u: dict[str, Any], k: jax.Array) -> jax.Array:
        params = {**svi.constrain_fn(u), **jax.lax.stop_gradient(mutable)}
        if mutable:
            return svi.loss.loss_with_mutable_state(k, params, svi.model, svi.guide, *args,
                                                    **kwargs)["loss"]
        return svi.loss.loss(k, params, svi.model, svi.guide, *args, **kwargs)

    grad_fn = jax.jit(jax.value_and_grad(loss))
    constrained = {**svi.constrain_fn(unconstrained), **mutable}
    model_names = _param_names(svi.model, constrained, args, kwargs, k_noise)
    names = sorted(unconstrained)
    group_of = {n: "p" if n in model_names else "q" for n in names}
    grads, losses = draw_gradients(lambda k: grad_fn(unconstrained, k), group_of, k_noise,
                                   num_draws)
    for group in ("q", "p"):
        grads.setdefault(group, np.zeros((num_draws, 0)))
    return grads, losses


def diagnose(trainer: Any, num_draws: int = 50, batch_seed: int = 0) -> dict[str, Any]:
    """:func:`gradient_draws` summarised by :func:`ppl_dgm.infer.gradient_stats.summarize`."""
    grads, losses = gradient_draws(trainer, num_draws, batch_seed)
    return summarize(grads, losses)
