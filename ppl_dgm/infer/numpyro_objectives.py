"""Objectives and evaluation for the NumPyro backend (the twin of ``ppl_dgm.infer.objectives``).

- :func:`semi_supervised` turns a pair's ``model``/``guide`` into programs of one training step's
  two batches: the program on the labelled batch (``y`` observed, the guide's classification factor)
  plus the program on the unlabelled batch (``y`` enumerated), each under ``handlers.scale(1 / B)``,
  so their ELBO is mean_labelled [L(x, y) + alpha * log q(y|x)] + mean_unlabelled U(x), weighted as
  the authors' code (and ``objectives.semi_supervised_loss``) weighs them.
- :func:`unsupervised` does the same for one unlabelled batch (``y`` absent), scaled by ``1 / B``
  (the mean ELBO of the batch, as ``objectives.unsupervised_loss``).
- :func:`supervised` runs a discriminative program (observed ``y``, empty guide) on one labelled
  batch scaled by ``1 / y.size``: its ``Trace_ELBO`` loss is the mean cross-entropy over the
  B x T labels, as ``objectives.supervised_loss``.
- :class:`EnumELBO` is NumPyro's ``TraceEnum_ELBO`` that also returns the mutable state (the batch
  statistics of ``flax_module(..., mutable=["batch_stats"])``), which ``TraceEnum_ELBO`` itself does
  not support, so one ``SVI.update`` trains networks with batch normalisation. :class:`TraceELBO`
  is the same for ``Trace_ELBO`` (pairs without discrete sites), keeping the state with several
  particles too (``Trace_ELBO`` drops it then).
- :func:`elbo_per_example` and :func:`site_kl` are the evaluation quantities of the Pyro trainer.

Importing this module imports JAX and NumPyro, never torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from numpyro import handlers
from numpyro.infer import (
    ELBO,
    RenyiELBO,
    Trace_ELBO,
    TraceEnum_ELBO,
    TraceGraph_ELBO,
    TraceMeanField_ELBO,
)
from numpyro.primitives import Messenger

from ppl_dgm.numpyro_pair import NumPyroPair

LABELLED, UNLABELLED = "labelled", "unlabelled"


def semi_supervised(program: Callable[..., Any]) -> Callable[..., None]:
    """``program(x, y=None, *, beta, train)`` -> ``ss(x_l, y_l, x_u, *, beta, train)``.

    The two calls get the site prefixes ``labelled/`` and ``unlabelled/`` (parameters and mutable
    state are shared: their names are not prefixed) and the scales ``1 / B_l`` and ``1 / B_u``.
    Use the same wrapping for the model and the guide. Batch-norm running statistics: both calls
    read the step's starting state and the state kept is the unlabelled call's (one update of the
    running averages per step; the Pyro trainer updates them after each of its two passes).
    """

    def ss(x_l: jax.Array, y_l: jax.Array, x_u: jax.Array, *, beta: float | jax.Array = 1.0,
           train: bool = True) -> None:
        keep = ["param", "mutable"]
        with handlers.scope(prefix=LABELLED, hide_types=keep), handlers.scale(scale=1 / len(x_l)):
            program(x_l, y_l, beta=beta, train=train)
        with handlers.scope(prefix=UNLABELLED, hide_types=keep), \
                handlers.scale(scale=1 / len(x_u)):
            program(x_u, None, beta=beta, train=train)

    return ss


def unsupervised(program: Callable[..., Any], scaled: bool = True) -> Callable[..., None]:
    """``program(x, y=None, *, beta, train)`` -> ``un(x, *, beta, train)``: the program on an
    unlabelled batch under ``handlers.scale(1 / B)`` (its ELBO is the batch mean); ``scaled=False``
    leaves the scale out (for :class:`RenyiStateELBO`, which divides its loss by B itself)."""

    def un(x: jax.Array, *, beta: float | jax.Array = 1.0, train: bool = True) -> None:
        if not scaled:
            program(x, None, beta=beta, train=train)
            return
        with handlers.scale(scale=1 / len(x)):
            program(x, None, beta=beta, train=train)

    return un


def supervised(program: Callable[..., Any]) -> Callable[..., None]:
    """``program(x, y=None, *, beta, train)`` -> ``sup(x, y, *, beta, train)``: the program on a
    labelled batch under ``handlers.scale(1 / y.size)`` (for the RNN-SPN's ``y (B, T)`` the loss
    is the mean cross-entropy over the B x T digits; ``beta`` is passed on unchanged)."""

    def sup(x: jax.Array, y: jax.Array, *, beta: float | jax.Array = 1.0,
            train: bool = True) -> None:
        with handlers.scale(scale=1 / y.size):
            program(x, y, beta=beta, train=train)

    return sup


class _collect_mutable(Messenger):
    """Keeps a reference to the value of every ``numpyro.mutable`` site in ``store``.

    ``flax_module`` updates the (copied) state dict of its site in place after applying the
    network, so once the program has run, ``store`` holds the new batch statistics.
    """

    def __init__(self, fn: Callable[..., Any], store: dict[str, Any],
                 keep_first: bool = False) -> None:
        self.store = store
        self.keep_first = keep_first
        super().__init__(fn)

    def postprocess_message(self, msg: dict[str, Any]) -> None:
        if msg["type"] == "mutable" and not (self.keep_first and msg["name"] in self.store):
            self.store[msg["name"]] = msg["value"]


class EnumELBO(ELBO):
    """``TraceEnum_ELBO`` (exact sums over enumerated guide sites) with mutable-state support.

    ``TraceEnum_ELBO`` runs the programs several times (shape inference, provenance tracking, then
    the enumerated traces it scores); the state kept is the one of the last, scored run. Particles
    (``num_particles`` > 1) are averaged in a Python loop, so the state never leaves a ``vmap``.
    """

    can_infer_discrete = True

    def __init__(self, num_particles: int = 1, max_plate_nesting: int = 1) -> None:
        super().__init__(num_particles=num_particles, vectorize_particles=False)
        self.single = TraceEnum_ELBO(num_particles=1, max_plate_nesting=max_plate_nesting)

    def loss_with_mutable_state(self, rng_key: jax.Array, param_map: dict[str, Any],
                                model: Callable[..., Any], guide: Callable[..., Any],
                                *args: Any, **kwargs: Any) -> dict[str, Any]:
        store: dict[str, Any] = {}
        model, guide = _collect_mutable(model, store), _collect_mutable(guide, store)
        keys = jax.random.split(rng_key, self.num_particles) if self.num_particles > 1 else [rng_key]
        losses = [self.single.loss(key, param_map, model, guide, *args, **kwargs) for key in keys]
        return {"loss": sum(losses) / len(losses), "mutable_state": dict(store) or None}


class TraceELBO(EnumELBO):
    """``Trace_ELBO`` with mutable-state support for any number of particles (a Python loop, as
    :class:`EnumELBO`): for pairs without discrete latent sites (the VAE and LVAE)."""

    can_infer_discrete = False

    def __init__(self, num_particles: int = 1, max_plate_nesting: int = 1) -> None:
        ELBO.__init__(self, num_particles=num_particles, vectorize_particles=False)
        self.single = Trace_ELBO(num_particles=1)


class StateELBO(EnumELBO):
    """Any NumPyro ELBO of one particle (``TraceGraph_ELBO``, ``TraceMeanField_ELBO``, ...) with
    mutable-state support, its ``num_particles`` averaged in a Python loop as :class:`EnumELBO`."""

    def __init__(self, single: ELBO, num_particles: int = 1) -> None:
        ELBO.__init__(self, num_particles=num_particles, vectorize_particles=False)
        self.single = single
        self.can_infer_discrete = getattr(single, "can_infer_discrete", False)

    def loss_with_mutable_state(self, rng_key: jax.Array, param_map: dict[str, Any],
                                model: Callable[..., Any], guide: Callable[..., Any],
                                *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The mean loss over the particles; the state of the first particle's first (scored)
        run of the programs (``TraceGraph_ELBO`` runs them again to track dependencies)."""
        store: dict[str, Any] = {}
        losses = []
        keys = jax.random.split(rng_key, self.num_particles) if self.num_particles > 1 else [rng_key]
        for i, key in enumerate(keys):
            particle_store: dict[str, Any] = {}
            m = _collect_mutable(model, particle_store, keep_first=True)
            g = _collect_mutable(guide, particle_store, keep_first=True)
            losses.append(self.single.loss(key, param_map, m, g, *args, **kwargs))
            if i == 0:
                store = particle_store
        return {"loss": sum(losses) / len(losses), "mutable_state": dict(store) or None}


def _particle_loop(fn: Callable[[jax.Array], Any], keys: jax.Array) -> Any:
    """``vmap``'s result, computed one particle at a time (no mutable state leaves a transform)."""
    outs = [fn(key) for key in keys]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)


class RenyiStateELBO(EnumELBO):
    """NumPyro's ``RenyiELBO`` (``alpha``, K = ``num_particles`` particles per data point) with
    mutable-state support, on programs that are *not* scaled by ``1 / B``: the bound's log-mean-exp
    over particles is taken per data point, and the loss is then divided by the batch size (the
    first argument's length), the batch mean of ``objectives.unsupervised_loss``."""

    can_infer_discrete = False

    def __init__(self, alpha: float = 0.0, num_particles: int = 2) -> None:
        ELBO.__init__(self, num_particles=1, vectorize_particles=False)
        self.single = RenyiELBO(alpha=alpha, num_particles=num_particles)
        self.single.vectorize_particles_fn = _particle_loop

    def loss_with_mutable_state(self, rng_key: jax.Array, param_map: dict[str, Any],
                                model: Callable[..., Any], guide: Callable[..., Any],
                                *args: Any, **kwargs: Any) -> dict[str, Any]:
        out = super().loss_with_mutable_state(rng_key, param_map, model, guide, *args, **kwargs)
        return {**out, "loss": out["loss"] / len(args[0])}


def make_elbo(elbo: str, num_particles: int, max_plate_nesting: int,
              renyi_alpha: float = 0.0, discrete: bool = False) -> ELBO:
    """The trainer's ELBO for ``--elbo`` (after ``objective_names.check`` accepted it)."""
    if elbo == "trace_enum":
        return EnumELBO(num_particles, max_plate_nesting)
    if elbo == "trace":
        return TraceELBO(num_particles, max_plate_nesting)
    if elbo == "trace_graph":
        return StateELBO(TraceGraph_ELBO(num_particles=1), num_particles)
    if elbo == "trace_meanfield":
        return StateELBO(TraceMeanField_ELBO(num_particles=1), num_particles)
    if elbo == "renyi":
        return RenyiStateELBO(renyi_alpha, num_particles)
    raise ValueError(f"the NumPyro trainer has no --elbo {elbo}")


def pair_sites(pair: NumPyroPair, params: dict[str, Any], x: jax.Array,
               rng_key: jax.Array) -> tuple[list[Any], list[str]]:
    """The guide's latent sites (in order, sampled: no enumeration) on the unlabelled points ``x``
    and the model's latent site names (in order): what ``objective_names.check`` needs."""
    from ppl_dgm.infer.objective_names import GuideSite

    guide = handlers.substitute(handlers.seed(pair.guide, rng_key), data=params)
    guide_trace = handlers.trace(guide).get_trace(x, None, beta=1.0, train=False)
    model = handlers.replay(handlers.substitute(handlers.seed(pair.model, rng_key), data=params),
                            guide_trace)
    model_trace = handlers.trace(model).get_trace(x, None, beta=1.0, train=False)

    def latent(site: dict[str, Any]) -> bool:
        return site["type"] == "sample" and not site["is_observed"]

    sites = [GuideSite(name, bool(getattr(site["fn"], "has_rsample", False)))
             for name, site in guide_trace.items() if latent(site)]
    return sites, [name for name, site in model_trace.items() if latent(site)]


def elbo_per_example(pair: NumPyroPair, params: dict[str, Any], x: jax.Array,
                     rng_key: jax.Array, enumerated: bool = True) -> jax.Array:
    """The ELBO (beta = 1, y unobserved and enumerated, running batch statistics), nats per example.

    ``enumerated=False`` uses ``Trace_ELBO`` (pairs without discrete latent sites: the same value).
    """
    elbo = (TraceEnum_ELBO(max_plate_nesting=pair.max_plate_nesting) if enumerated
            else Trace_ELBO())
    return -elbo.loss(rng_key, params, pair.model, pair.guide, x, None, beta=1.0,
                      train=False) / x.shape[0]


def site_kl(pair: NumPyroPair, params: dict[str, Any], x: jax.Array,
            rng_key: jax.Array) -> dict[str, jax.Array]:
    """KL per latent site in nats per data point: mean over x of log q(site) - log p(site).

    One guide trace (discrete ``y`` sampled, not enumerated) replayed in the model, as
    ``ppl_dgm.infer.diagnostics.site_kl`` does for the Pyro backend.
    """
    guide = handlers.substitute(handlers.seed(pair.guide, rng_key), data=params)
    guide_trace = handlers.trace(guide).get_trace(x, None, beta=1.0, train=False)
    model = handlers.replay(handlers.substitute(handlers.seed(pair.model, rng_key), data=params),
                            guide_trace)
    model_trace = handlers.trace(model).get_trace(x, None, beta=1.0, train=False)
    kl = {}
    for name, site in guide_trace.items():
        if site["type"] != "sample" or site["is_observed"]:
            continue
        p_site = model_trace[name]
        log_ratio = site["fn"].log_prob(site["value"]) - p_site["fn"].log_prob(p_site["value"])
        kl[name] = jnp.mean(log_ratio)
    return kl
