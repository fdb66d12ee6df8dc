"""ADGM, the auxiliary deep generative model (Maaløe, Sønderby, Sønderby, Winther, ICML 2016), as a
NumPyro program.

The NumPyro twin of ``models/adgm.py`` (same sites, same networks, same registered defaults):

Generative model:  p(y) p(z) p(x | y, z) p(a | x, y, z),
    p(y) = Cat(1/K),  p(z) = N(0, I),  p(x | y, z) = Bernoulli(logits = f(y, z)),
    p(a | x, y, z) = N(mu(x, y, z), sigma^2(x, y, z)).
Inference model:   q(a | x) q(y | a, x) q(z | a, y, x)  (``ppl_dgm.guides.auxiliary_numpyro``).

The networks are the flax modules ``p_x`` (Dense(z) + Dense(y), then the logits of x) and ``p_a``
(Dense(x) + Dense(y) + Dense(z), then a Gaussian head). Monte Carlo particles of ``a`` are drawn
inside the programs (see ``ppl_dgm.guides.auxiliary_numpyro``): the pair's ``max_plate_nesting`` is
2 when ``num_particles`` > 1 and the trainer then runs its ELBO with one particle.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro import handlers

from ppl_dgm.guides.auxiliary_numpyro import (
    DATA_DIM,
    AuxiliaryGuide,
    build_guide,
    check_particles,
    particle_plate,
)
from ppl_dgm.nn.flax_blocks import GaussianMLP, LogitsMLP, apply, network
from ppl_dgm.numpyro_pair import NumPyroPair


class AuxiliaryModel:
    """The constructor the NumPyro ADGM and SDGM share: a Bernoulli-logits network ``p_x`` and a
    Gaussian network ``p_a`` of the same hidden layers (their inputs differ, see each model)."""

    def __init__(self, x_dim: int, n_classes: int, a_dim: int, z_dim: int, hidden: Sequence[int],
                 activation: str = "relu", batch_norm: bool = False,
                 num_particles: int = 1, weight_init: str = "torch") -> None:
        self.x_dim, self.n_classes, self.a_dim, self.z_dim = x_dim, n_classes, a_dim, z_dim
        self.batch_norm = batch_norm
        self.num_particles = check_particles(num_particles)
        hidden = tuple(hidden)
        self.p_x = LogitsMLP(x_dim, hidden, activation, batch_norm, weight_init)
        self.p_a = GaussianMLP(a_dim, hidden, activation, batch_norm, weight_init)


class ADGMModel(AuxiliaryModel):
    """p(y) p(z) p(x | y, z) p(a | x, y, z); ``y=None`` leaves y to the guide (enumerated).
    ``p_x`` takes (z, y), ``p_a`` takes (x, y, z)."""

    def __call__(self, x: jax.Array, y: jax.Array | None = None, *,
                 beta: float | jax.Array = 1.0, train: bool = True) -> None:
        x0, y0, z0 = jnp.zeros((1, self.x_dim)), jnp.zeros((1, self.n_classes)), jnp.zeros((1, self.z_dim))
        p_x = network("p_x", self.p_x, z0, y0, batch_norm=self.batch_norm)
        p_a = network("p_a", self.p_a, x0, y0, z0, batch_norm=self.batch_norm)
        with particle_plate(self.num_particles, train), \
                numpyro.plate("data", x.shape[0], dim=DATA_DIM):
            with handlers.scale(scale=beta):
                y = numpyro.sample("y", dist.Categorical(logits=jnp.zeros(self.n_classes)), obs=y)
                z = numpyro.sample("z", dist.Normal(jnp.zeros(self.z_dim), 1.0).to_event(1))
            y_onehot = jax.nn.one_hot(y, self.n_classes, dtype=x.dtype)
            numpyro.sample("x", dist.Bernoulli(logits=p_x(z, y_onehot, train=train)).to_event(1),
                           obs=x)
            loc, scale = p_a(x, y_onehot, z, train=train)
            with handlers.scale(scale=beta):
                numpyro.sample("a", dist.Normal(loc, scale).to_event(1))

    def sample_x(self, params: dict[str, Any], rng_key: jax.Array, n: int,
                 y: jax.Array | None = None) -> jax.Array:
        """Bernoulli means of x for z ~ p(z) and the given (or uniformly drawn) labels."""
        key_y, key_z = jax.random.split(rng_key)
        if y is None:
            y = jax.random.randint(key_y, (n,), 0, self.n_classes)
        z = jax.random.normal(key_z, (n, self.z_dim))
        logits = apply(self.p_x, params, "p_x", z, jax.nn.one_hot(y, self.n_classes), train=False)
        return jax.nn.sigmoid(logits)


def network_hparams(hparams: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments shared by the NumPyro ADGM/SDGM generative models."""
    return dict(a_dim=hparams["a_dim"], z_dim=hparams["z_dim"], hidden=list(hparams["hidden"]),
                activation=hparams["activation"], batch_norm=hparams["batch_norm"],
                num_particles=hparams.get("num_particles", 1),
                weight_init=hparams.get("weight_init", "torch"))


def make_pair(p: Any, q: AuxiliaryGuide) -> NumPyroPair:
    """The pair of a generative model and the auxiliary guide (their particles must agree)."""
    if p.num_particles != q.num_particles:
        raise ValueError(f"model and guide draw different numbers of particles "
                         f"({p.num_particles} and {q.num_particles})")
    return NumPyroPair(p, q, max_plate_nesting=2 if q.num_particles > 1 else 1,
                       classifier=q.classify, sampler=p.sample_x, sampling_classifier=True,
                       particles_in_program=True, frozen=() if q.train_q_a else ("q_a",))


def build(hparams: dict[str, Any], data: Any) -> NumPyroPair:
    """The ADGM pair for ``data`` (needs ``x_dim``, ``n_classes``; ``alpha`` and ``num_particles``
    from the hparams, which the NumPyro trainer sets)."""
    p = ADGMModel(data.x_dim, data.n_classes, **network_hparams(hparams))
    return make_pair(p, build_guide(hparams, data))
