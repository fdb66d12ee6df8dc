"""The auxiliary-variable guide family of ADGM and SDGM for the NumPyro backend
(``guides/auxiliary.py``; Maaløe, Sønderby, Sønderby, Winther 2016).

Inference model (the paper's, for both models):

    q(a, y, z | x) = q(a | x) q(y | a, x) q(z | a, y, x).

``a`` is sampled **once** per data point, before and outside the enumeration of the label: the sum
over y of the unlabelled bound is taken with the same ``a`` for every label (``TraceEnum_ELBO``
enumerates ``y`` in a dimension left of the plates, and ``a`` has none). ``y`` is then enumerated
in parallel by :func:`ppl_dgm.guides.label_numpyro.label_site` (or, for a labelled point, scored by
the classification term alpha * log q(y | a, x)), and ``z`` is sampled for each value of ``y``:

    -L(x, y) = E_q(a,z|x,y)[log p(x, y, z, a) - log q(a | x) - log q(z | a, y, x)],
    -U(x)    = E_q(a|x)[ sum_y q(y|a,x) (E_q(z|a,y,x)[log p(x,y,z,a) - log q(z|a,y,x)]
                                        - log q(y|a,x)) - log q(a|x) ].

Every network projects each of its inputs separately and sums the projections
(:class:`~ppl_dgm.nn.flax_blocks.MultiInputMLP`), so under enumeration the projections of x and a
are computed once per data point and only the label's projection varies.

Monte Carlo samples of ``a`` (``num_particles``). The Pyro pair gets them from Pyro's vectorised
particles (a plate left of the data plate); NumPyro's ``TraceEnum_ELBO`` has no such plate (its
particles are independent runs), so here the programs draw the particles themselves: in training
mode (``train=True``) with ``num_particles`` S > 1 both programs run inside
``plate("particles", S, dim=-2)`` under ``scale(1 / S)`` (:func:`particle_plate`), and the trainer
runs its ELBO with one particle. The ELBO is then the mean over the S particles, as Pyro's.
``average_y_over_particles=True`` (the registered default, the authors' code) gives the enumerated
site the distribution qbar(y|x) = 1/S sum_s q(y|a_s,x) for every particle, so that

    -U(x) ~= sum_y qbar(y|x) (1/S sum_s L_s(x, y)) + H[qbar(y|x)];

with ``False`` each particle keeps its own q(y | a_s, x) (standard particles). The labelled
classification term is, as in the authors' code, alpha * log (1/S sum_s q(y | a_s, x))
(``classification_log_mean=True``, the default; ``False``: the mean over particles of
alpha * log q(y | a_s, x)). In evaluation mode
(``train=False``: validation ELBO, importance-weighted log-likelihood, per-site KL) the programs
draw one ``a`` per data point, so the reported numbers are ordinary ELBO/IWAE estimates.

At test time the prediction averages q(y | a, x) over ``num_samples`` draws of a ~ q(a | x) (the
authors use 100): :meth:`AuxiliaryGuide.classify`. Importing this module never imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro import handlers

from ppl_dgm.guides.label_numpyro import label_site
from ppl_dgm.nn.flax_blocks import GaussianMLP, LogitsMLP, apply, network

PARTICLE_DIM, DATA_DIM = -2, -1


def average_over_particles(logits: jax.Array, event_dims: int = 1,
                           plate_dims: int = 1) -> jax.Array:
    """log of the mean of softmax(logits) over every dimension left of the ``plate_dims`` plates.

    ``logits`` has shape ``(*particles, *plates, n_classes)``; the result has shape
    ``(1,..., 1, *plates, n_classes)``: log qbar(y | x) = log (1/S) sum_s q(y | a_s, x).
    """
    lead = logits.ndim - event_dims - plate_dims
    if lead <= 0:
        return logits
    dims = tuple(range(lead))
    count = math.prod(logits.shape[:lead])
    log_q = jax.nn.log_softmax(logits, axis=-1)
    return jax.scipy.special.logsumexp(log_q, axis=dims, keepdims=True) - math.log(count)


def check_particles(num_particles: int) -> int:
    """``num_particles`` as a positive int (a clear error otherwise)."""
    if int(num_particles) != num_particles or num_particles < 1:
        raise ValueError(f"num_particles must be a positive integer (got {num_particles!r})")
    return int(num_particles)


@contextmanager
def particle_plate(num_particles: int, train: bool) -> Iterator[bool]:
    """``plate("particles", S, dim=-2)`` under ``scale(1 / S)`` in training mode when S > 1.

    Yields whether the plate is open. Use it around the data plate (``dim=-1``) in both programs:
    their ``max_plate_nesting`` is then 2 and the enumerated label sits at dimension -3.
    """
    if train and num_particles > 1:
        with handlers.scale(scale=1.0 / num_particles), \
                numpyro.plate("particles", num_particles, dim=PARTICLE_DIM):
            yield True
    else:
        yield False


class AuxiliaryGuide:
    """q(a | x) q(y | a, x) q(z | a, y, x), shared by ADGM and SDGM, as a NumPyro program.

    ``hidden`` gives every network's hidden layers (the authors: two of 500 units); ``a_dim`` and
    ``z_dim`` are 100 in the paper. ``alpha`` weighs the classification term of labelled points.
    The networks are the flax modules ``q_a`` (an MLP of x), ``q_y`` (Dense(x) + Dense(a)) and
    ``q_z`` (Dense(x) + Dense(a) + Dense(y)), with parameter sites ``q_a$params``, ... (and
    ``q_a$state``, ... with batch norm). See the module docstring for ``num_particles`` and
    ``average_y_over_particles`` and ``classification_log_mean``. ``train_q_a=False`` leaves
    q(a | x)'s weights at their initial values (the pair lists ``q_a`` in ``frozen``: the optimiser,
    weight prior included, gives it no update), as the ADGM workshop code does.
    """

    def __init__(self, x_dim: int, n_classes: int, a_dim: int, z_dim: int, hidden: Sequence[int],
                 activation: str = "relu", batch_norm: bool = False, alpha: float = 0.0,
                 average_y_over_particles: bool = True, num_particles: int = 1,
                 classification_log_mean: bool = True, weight_init: str = "torch",
                 train_q_a: bool = True) -> None:
        self.x_dim, self.n_classes, self.a_dim, self.z_dim = x_dim, n_classes, a_dim, z_dim
        self.alpha, self.batch_norm = alpha, batch_norm
        self.average_y_over_particles = bool(average_y_over_particles)
        self.classification_log_mean = bool(classification_log_mean)
        self.num_particles = check_particles(num_particles)
        self.train_q_a = bool(train_q_a)
        hidden = tuple(hidden)
        self.q_a = GaussianMLP(a_dim, hidden, activation, batch_norm, weight_init)
        self.q_y = LogitsMLP(n_classes, hidden, activation, batch_norm, weight_init)
        self.q_z = GaussianMLP(z_dim, hidden, activation, batch_norm, weight_init)

    def networks(self) -> tuple[Any, Any, Any]:
        """The registered ``(q_a, q_y, q_z)`` applies of the running program."""
        x = jnp.zeros((1, self.x_dim))
        a, y = jnp.zeros((1, self.a_dim)), jnp.zeros((1, self.n_classes))
        bn = self.batch_norm
        return (network("q_a", self.q_a, x, batch_norm=bn),
                network("q_y", self.q_y, x, a, batch_norm=bn),
                network("q_z", self.q_z, x, a, y, batch_norm=bn))

    def __call__(self, x: jax.Array, y: jax.Array | None = None, *,
                 beta: float | jax.Array = 1.0, train: bool = True) -> None:
        q_a, q_y, q_z = self.networks()
        with particle_plate(self.num_particles, train) as particles, \
                numpyro.plate("data", x.shape[0], dim=DATA_DIM):
            loc, scale = q_a(x, train=train)
            with handlers.scale(scale=beta):
                # sampled once per data point (and particle), outside the enumeration of y
                a = numpyro.sample("a", dist.Normal(loc, scale).to_event(1))
            logits = q_y(x, a, train=train)
            average = self.average_y_over_particles if y is None else self.classification_log_mean
            if particles and average:
                logits = average_over_particles(logits)
            y = label_site(logits, y, self.alpha, beta)
            loc, scale = q_z(x, a, jax.nn.one_hot(y, self.n_classes, dtype=x.dtype), train=train)
            with handlers.scale(scale=beta):
                numpyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def classify(self, params: dict[str, Any], x: jax.Array, num_samples: int = 1,
                 rng_key: jax.Array | None = None, chunk_size: int = 25) -> jax.Array:
        """(1/S) sum_s q(y | a_s, x) with a_s ~ q(a | x), S = ``num_samples``: shape (B, n_classes).

        The S standard-normal draws are ``jax.random.normal(rng_key, (S, B, a_dim))`` and go through
        the classifier ``chunk_size`` samples at a time (a ``lax.scan``), so memory stays bounded.
        Batch normalisation uses its running statistics.
        """
        if rng_key is None:
            raise ValueError("the auxiliary guide's classifier samples a: pass rng_key")
        if num_samples < 1 or chunk_size < 1:
            raise ValueError(f"num_samples and chunk_size must be positive (got {num_samples}, "
                             f"{chunk_size})")
        loc, scale = apply(self.q_a, params, "q_a", x, train=False)
        eps = jax.random.normal(rng_key, (num_samples, *loc.shape), loc.dtype)

        def probs_sum(chunk: jax.Array) -> jax.Array:
            logits = apply(self.q_y, params, "q_y", x, loc + scale * chunk, train=False)
            return jax.nn.softmax(logits, axis=-1).sum(0)

        chunk = min(chunk_size, num_samples)
        full = num_samples // chunk * chunk
        chunks = eps[:full].reshape(-1, chunk, *loc.shape)
        total, _ = jax.lax.scan(lambda acc, c: (acc + probs_sum(c), None),
                                jnp.zeros((x.shape[0], self.n_classes), loc.dtype), chunks)
        if full < num_samples:
            total = total + probs_sum(eps[full:])
        return total / num_samples

    def sample_class_probs(self, params: dict[str, Any], x: jax.Array, num_samples: int,
                           rng_key: jax.Array) -> tuple[jax.Array, jax.Array]:
        """q(y | a_s, x) for ``num_samples`` draws a_s ~ q(a | x), shape (S, B, n_classes), and
        q(a | x)'s standard deviations (B, a_dim): what the diagnostics of the auxiliary variable
        read (``ppl_dgm.infer.auxiliary_diagnostics``). Batch norm on its running statistics."""
        loc, scale = apply(self.q_a, params, "q_a", x, train=False)
        a = loc + scale * jax.random.normal(rng_key, (num_samples, *loc.shape), loc.dtype)
        return jax.nn.softmax(apply(self.q_y, params, "q_y", x, a, train=False), axis=-1), scale


def build_guide(hparams: dict[str, Any], data: Any) -> AuxiliaryGuide:
    """The auxiliary guide from a registry ``hparams`` dict (``alpha`` and ``num_particles`` from the
    trainer)."""
    return AuxiliaryGuide(
        data.x_dim, data.n_classes, a_dim=hparams["a_dim"], z_dim=hparams["z_dim"],
        hidden=list(hparams["hidden"]), activation=hparams["activation"],
        batch_norm=hparams["batch_norm"], alpha=hparams.get("alpha", 0.0),
        average_y_over_particles=hparams.get("average_y_over_particles", True),
        num_particles=hparams.get("num_particles", 1),
        classification_log_mean=hparams.get("classification_log_mean", True),
        weight_init=hparams.get("weight_init", "torch"),
        train_q_a=hparams.get("train_q_a", True),
    )
