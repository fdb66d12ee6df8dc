"""Gradient-variance diagnostics of a Pyro trainer's objective (the twin of
``ppl_dgm.infer.numpyro_gradients``; statistics in ``ppl_dgm.infer.gradient_stats``).

:func:`gradient_draws` draws the training objective's gradient ``num_draws`` times at the
trainer's current parameters on one fixed batch (fixed indices, binarised once, the current
warm-up beta), as ``Trainer.train_step`` computes it but without clipping or an optimiser step.
Everything the run depends on (parameters, batch-norm statistics, RNG states, data tensors) is
restored afterwards, so diagnosing a run does not change it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import pyro
import torch

from ppl_dgm.infer.gradient_stats import summarize


def fixed_batch(trainer: Any, batch_seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """Indices of one training batch drawn with ``batch_seed`` (labelled ones for semi-supervised
    pairs), as both backends draw them."""
    rng = np.random.default_rng(batch_seed)
    cfg = trainer.config
    if trainer.task == "semi-supervised":
        unlabelled = np.asarray(trainer.unlabelled.cpu() if torch.is_tensor(trainer.unlabelled)
                                else trainer.unlabelled)
        labelled = np.asarray(trainer.labelled.cpu() if torch.is_tensor(trainer.labelled)
                              else trainer.labelled)
        idx = rng.choice(unlabelled, min(cfg.batch_size, len(unlabelled)), replace=False)
        idx_l = rng.choice(labelled, min(cfg.labelled_batch_size, len(labelled)), replace=False)
        return idx, idx_l
    return rng.choice(len(trainer.x_train), min(cfg.batch_size, len(trainer.x_train)),
                      replace=False), None


def _groups(pair: torch.nn.Module) -> dict[str, list[torch.nn.Parameter]]:
    """The model's parameters (``p``) and the guide's not shared with the model (``q``)."""
    p = list(pair.p.parameters())
    seen = {id(t) for t in p}
    return {"p": p, "q": [t for t in pair.q.parameters() if id(t) not in seen]}


def draw_gradients(loss_fn: Callable[[], tuple[torch.Tensor, float]],
                   groups: dict[str, list[torch.Tensor]],
                   num_draws: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Call ``loss_fn() -> (differentiable loss, loss estimate)`` ``num_draws`` times and keep the
    gradient of each group of tensors, flattened: ``({group: (N, P_group)}, losses (N,))``."""
    draws: dict[str, list[np.ndarray]] = {g: [] for g in groups}
    losses = []
    params = [t for ts in groups.values() for t in ts]
    for _ in range(num_draws):
        for t in params:
            t.grad = None
        loss, value = loss_fn()
        loss.backward()
        for group, tensors in groups.items():
            flat = [(t.grad if t.grad is not None else torch.zeros_like(t)).reshape(-1)
                    for t in tensors]
            draws[group].append(torch.cat(flat).double().cpu().numpy() if flat else np.zeros(0))
        losses.append(float(value))
    for t in params:
        t.grad = None
    return {g: np.stack(d) for g, d in draws.items()}, np.asarray(losses, dtype=np.float64)


def gradient_draws(trainer: Any, num_draws: int = 50,
                   batch_seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``({"q": (N, P_q), "p": (N, P_p)}, losses (N,))`` at the trainer's current parameters."""
    if num_draws < 2:
        raise ValueError(f"need at least 2 gradient draws (got {num_draws})")
    pair = trainer.pair
    state = copy.deepcopy(pair.state_dict())
    rng_state = torch.get_rng_state()
    cuda_state = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    x_train, y_train = trainer.x_train, trainer.y_train
    training = pair.training
    idx, idx_l = fixed_batch(trainer, batch_seed)
    rows = np.concatenate([idx, idx_l]) if idx_l is not None else idx
    groups = _groups(pair)
    store = pyro.get_param_store().get_state()  # TraceGraph_ELBO's running baselines
    try:
        torch.manual_seed(batch_seed)
        pick = torch.as_tensor(rows, device=trainer.device)
        trainer.x_train = trainer._binarize(x_train[pick])  # binarised once: a fixed batch
        trainer.y_train = y_train[pick]
        trainer._binarize = lambda x: x
        new_idx = torch.arange(len(idx), device=trainer.device)
        new_idx_l = (torch.arange(len(idx), len(rows), device=trainer.device)
                     if idx_l is not None else None)
        beta = trainer.warmup(trainer.step)
        pair.train(True)
        counter = iter(range(num_draws))

        def loss_fn() -> tuple[torch.Tensor, float]:
            torch.manual_seed(batch_seed * 1_000_003 + next(counter) + 1)
            loss, stats = trainer.compute_loss(new_idx, new_idx_l, beta)
            return loss, stats["loss"]

        out = draw_gradients(loss_fn, groups, num_draws)
    finally:
        pair.zero_grad(set_to_none=True)
        del trainer._binarize
        trainer.x_train, trainer.y_train = x_train, y_train
        pair.load_state_dict(state)
        param_store = pyro.get_param_store()
        for name in [n for n in param_store.keys() if n not in store["params"]]:
            del param_store[name]
        param_store.set_state(store)
        pair.train(training)
        torch.set_rng_state(rng_state)
        if cuda_state is not None:
            torch.cuda.set_rng_state_all(cuda_state)
    return out


def diagnose(trainer: Any, num_draws: int = 50, batch_seed: int = 0) -> dict[str, Any]:
    """:func:`gradient_draws` summarised by :func:`ppl_dgm.infer.gradient_stats.summarize`."""
    grads, losses = gradient_draws(trainer, num_draws, batch_seed)
    return summarize(grads, losses)
