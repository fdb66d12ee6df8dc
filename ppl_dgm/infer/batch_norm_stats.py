"""Batch-norm statistics from one pass over the training set (``ppl-dgm evaluate --bn-stats train``).

A network trained with batch normalisation is evaluated with fixed per-layer statistics. By default
(``running``) they are the running averages kept during training (torch's momentum 0.1, flax's
0.9 decay), the statistics of the last few hundred training batches, computed while the parameters
moved. The LVAE authors' code (parmesan's ``NormalizeLayer`` with ``collect=True``, called before
every test evaluation in ``run_models.py``) instead runs the whole training set through the networks
as one batch in training mode (every layer normalised with the statistics of that batch), stores
each layer's batch mean and (biased) variance, and evaluates with those: statistics of the final
parameters, over every training image.

:func:`pyro_training_pass` and :func:`numpyro_training_pass` do the same for a pair of either
backend: one run of the guide and the model (replayed on the guide's draws, ``beta = 1``, a label
``y`` enumerated as in training, one draw of every continuous latent) on all the given points as
one batch, in training mode. Each batch-norm layer's statistics are its input's mean and biased
variance over every row it sees in that pass (under enumeration: every data point and label, as in
training); a layer called more than once in the pass (a network the guide and the model share, such
as the ladder's top-down networks with ``share_top_down``) gets the mean of its calls' statistics.
A layer the pass does not reach keeps its running averages (the functions return how many layers
they set). Nothing is written to the checkpoint: the statistics replace the running averages of the
loaded pair in memory, for one evaluation.

Departures from the authors' code: the points are the run's training images (all 60,000 MNIST
images when trained with ``--validation-size 0``, as theirs; the unlabelled pool of a
semi-supervised run) binarised once with the evaluation's seed (theirs: once per run, unseeded);
the normalisation's epsilon stays the layer's own (torch/flax 1e-5; parmesan's 1e-10).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ppl_dgm.errors import UserError

BN_STATS = ("running", "train")


def check_bn_stats(value: Any) -> str:
    """``value`` if it names a source of the statistics (:data:`BN_STATS`), else :class:`UserError`."""
    if value not in BN_STATS:
        raise UserError(f"--bn-stats must be one of {list(BN_STATS)} (got {value!r})",
                        "running: the averages kept in training (default); train: one pass over "
                        "the training set, as the LVAE authors' evaluation")
    return value


def no_batch_norm(run: str) -> UserError:
    return UserError(f"{run} has no batch-norm layers: --bn-stats train would change nothing",
                     "omit --bn-stats")


# ------------------------------------------------------------------------------------- Pyro
def pyro_training_pass(pair: Any, x: Any, seed: int = 0) -> int:
    """Set the running statistics of every batch-norm layer of ``pair`` (a Pyro pair) to the
    statistics of one training-mode pass over the points ``x`` (one batch; see the module
    docstring). The torch RNG is seeded with ``seed`` for the pass and restored afterwards, and the
    modules' train/eval modes are restored. Returns the number of layers set; raises
    :class:`UserError` if the pair has none."""
    import torch
    from pyro.infer import TraceEnum_ELBO
    from torch.nn.modules.batchnorm import _BatchNorm

    from ppl_dgm.nn.torch_blocks import BatchNorm as RowBatchNorm

    layers = [m for m in pair.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not layers:
        raise no_batch_norm("the run")
    seen: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {id(m): [] for m in layers}

    def record(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        h = inputs[0].detach()
        if isinstance(module, RowBatchNorm):  # features last, every leading dimension a row
            rows = h.reshape(-1, h.shape[-1])
        else:  # torch's layout: features in dimension 1
            rows = h.transpose(1, -1).reshape(-1, h.shape[1])
        rows = rows.double()
        seen[id(module)].append((rows.mean(0), rows.var(0, unbiased=False)))

    handles = [m.register_forward_pre_hook(record) for m in layers]
    modes = [(m, m.training) for m in pair.modules()]
    devices = [x.device.index] if x.is_cuda else []
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="TraceEnum_ELBO found no sample sites")
            torch.manual_seed(seed)
            pair.train()
            TraceEnum_ELBO(max_plate_nesting=pair.max_plate_nesting).loss(
                pair.model, pair.guide, x, None, beta=1.0)
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes:
            module.train(training)
    count = 0
    with torch.no_grad():
        for m in layers:
            calls = seen[id(m)]
            if not calls:
                continue
            m.running_mean.copy_(torch.stack([mean for mean, _ in calls]).mean(0))
            m.running_var.copy_(torch.stack([var for _, var in calls]).mean(0))
            count += 1
    return count


# ------------------------------------------------------------------------------------- NumPyro
def numpyro_training_pass(pair: Any, params: dict[str, Any], x: Any,
                          rng_key: Any) -> tuple[dict[str, Any], int]:
    """The batch-norm states (``NAME$state`` sites) of a NumPyro pair after one training-mode pass
    over the points ``x`` (one batch; see the module docstring), and the number of layers set.

    A flax ``BatchNorm`` in training mode stores ``m * old + (1 - m) * batch`` (``m`` its momentum,
    ``batch`` the batch mean and biased variance it normalised with). The pass is run twice with
    the same key, every stored statistic set to 0 and then to 1: ``s0 = (1 - m) batch`` and
    ``s1 = m + (1 - m) batch``, so ``m = s1 - s0`` and ``batch = s0 / (1 - m)`` whatever the
    layer's momentum. A layer not reached by the pass (``m = 1``) keeps its state from ``params``;
    one updated twice within one program (``m`` not constant over its features) is an error.
    """
    import jax
    import jax.numpy as jnp
    from numpyro import handlers
    from numpyro.contrib.funsor import enum, plate_to_enum_plate

    states = {name: value for name, value in params.items() if name.endswith("$state")}
    if not states:
        raise no_batch_norm("the run")
    key_guide, key_model = jax.random.split(rng_key)

    def one_pass(fill: float, params: dict[str, Any], x: jax.Array) -> dict[str, Any]:
        start = {**params, **{name: jax.tree_util.tree_map(lambda a: jnp.full_like(a, fill), v)
                              for name, v in states.items()}}
        with plate_to_enum_plate(), enum(first_available_dim=-pair.max_plate_nesting - 1):
            guide = handlers.substitute(handlers.seed(pair.guide, key_guide), data=start)
            guide_trace = handlers.trace(guide).get_trace(x, None, beta=1.0, train=True)
            model = handlers.substitute(handlers.replay(handlers.seed(pair.model, key_model),
                                                        guide_trace), data=start)
            model_trace = handlers.trace(model).get_trace(x, None, beta=1.0, train=True)
        calls: dict[str, list[Any]] = {}
        for trace in (guide_trace, model_trace):
            for name, site in trace.items():
                if site["type"] == "mutable" and name in states:
                    calls.setdefault(name, []).append(site["value"])
        return {name: jax.tree_util.tree_map(lambda *a: jnp.mean(jnp.stack(a), 0), *values)
                for name, values in calls.items()}

    run = jax.jit(one_pass, static_argnums=0)
    s0, s1 = jax.device_get(run(0.0, params, x)), jax.device_get(run(1.0, params, x))
    new, count = {}, 0
    for name, old in states.items():
        if name not in s0:
            new[name] = old
            continue
        leaves0, tree = jax.tree_util.tree_flatten(s0[name])
        leaves1 = jax.tree_util.tree_leaves(s1[name])
        old_leaves = jax.tree_util.tree_leaves(old)
        out = []
        for a0, a1, kept in zip(leaves0, leaves1, old_leaves, strict=True):
            a0, a1 = np.asarray(a0, np.float64), np.asarray(a1, np.float64)
            momentum = a1 - a0
            m = float(momentum.mean())
            if m > 1 - 1e-6:  # not reached by the pass
                out.append(kept)
                continue
            if float(np.abs(momentum - m).max()) > 1e-3:
                raise RuntimeError(f"{name}: a batch-norm layer was updated more than once in one "
                                   "program; --bn-stats train cannot recover its batch statistics")
            out.append(jnp.asarray(a0 / (1.0 - m), dtype=jnp.asarray(kept).dtype))
            count += 1
        new[name] = jax.tree_util.tree_unflatten(tree, out)
    return new, count // 2  # a flax BatchNorm holds two statistics, mean and var
