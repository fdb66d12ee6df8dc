"""SDGM, the skip deep generative model (Maaløe, Sønderby, Sønderby, Winther, ICML 2016), as a
NumPyro program.

The NumPyro twin of ``models/sdgm.py`` (same sites, same networks, same registered defaults):

Generative model:  p(y) p(z) p(a | y, z) p(x | a, y, z),
    p(y) = Cat(1/K),  p(z) = N(0, I),  p(a | y, z) = N(mu(y, z), sigma^2(y, z)),
    p(x | a, y, z) = Bernoulli(logits = f(a, y, z)).
Inference model:   q(a | x) q(y | a, x) q(z | a, y, x)  (``ppl_dgm.guides.auxiliary_numpyro``, the
same family as ADGM's).

The networks are the flax modules ``p_a`` (Dense(z) + Dense(y), then a Gaussian head) and ``p_x``
(Dense(a) + Dense(z) + Dense(y), then the logits of x). The registered default is 5 particles
(drawn inside the programs, see ``ppl_dgm.guides.auxiliary_numpyro``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro import handlers

from ppl_dgm.guides.auxiliary_numpyro import DATA_DIM, build_guide, particle_plate
from ppl_dgm.models.adgm_numpyro import AuxiliaryModel, make_pair, network_hparams
from ppl_dgm.nn.flax_blocks import apply, network
from ppl_dgm.numpyro_pair import NumPyroPair


class SDGMModel(AuxiliaryModel):
    """p(y) p(z) p(a | y, z) p(x | a, y, z); ``y=None`` leaves y to the guide (enumerated).
    ``p_a`` takes (z, y), ``p_x`` takes (a, z, y)."""

    def __call__(self, x: jax.Array, y: jax.Array | None = None, *,
                 beta: float | jax.Array = 1.0, train: bool = True) -> None:
        a0, y0, z0 = jnp.zeros((1, self.a_dim)), jnp.zeros((1, self.n_classes)), jnp.zeros((1, self.z_dim))
        p_a = network("p_a", self.p_a, z0, y0, batch_norm=self.batch_norm)
        p_x = network("p_x", self.p_x, a0, z0, y0, batch_norm=self.batch_norm)
        with particle_plate(self.num_particles, train), \
                numpyro.plate("data", x.shape[0], dim=DATA_DIM):
            with handlers.scale(scale=beta):
                y = numpyro.sample("y", dist.Categorical(logits=jnp.zeros(self.n_classes)), obs=y)
                z = numpyro.sample("z", dist.Normal(jnp.zeros(self.z_dim), 1.0).to_event(1))
                y_onehot = jax.nn.one_hot(y, self.n_classes, dtype=x.dtype)
                loc, scale = p_a(z, y_onehot, train=train)
                a = numpyro.sample("a", dist.Normal(loc, scale).to_event(1))
            numpyro.sample("x", dist.Bernoulli(logits=p_x(a, z, y_onehot, train=train)).to_event(1),
                           obs=x)

    def sample_x(self, params: dict[str, Any], rng_key: jax.Array, n: int,
                 y: jax.Array | None = None) -> jax.Array:
        """Bernoulli means of x for z ~ p(z), a ~ p(a | y, z) and the given (or random) labels."""
        key_y, key_z, key_a = jax.random.split(rng_key, 3)
        if y is None:
            y = jax.random.randint(key_y, (n,), 0, self.n_classes)
        y_onehot = jax.nn.one_hot(y, self.n_classes)
        z = jax.random.normal(key_z, (n, self.z_dim))
        loc, scale = apply(self.p_a, params, "p_a", z, y_onehot, train=False)
        a = loc + scale * jax.random.normal(key_a, loc.shape)
        return jax.nn.sigmoid(apply(self.p_x, params, "p_x", a, z, y_onehot, train=False))


def build(hparams: dict[str, Any], data: Any) -> NumPyroPair:
    """The SDGM pair for ``data`` (needs ``x_dim``, ``n_classes``; ``alpha`` and ``num_particles``
    from the hparams, which the NumPyro trainer sets)."""
    p = SDGMModel(data.x_dim, data.n_classes, **network_hparams(hparams))
    return make_pair(p, build_guide(hparams, data))
