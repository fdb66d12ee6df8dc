"""M2, the semi-supervised VAE (Kingma, Rezende, Mohamed, Welling 2014), as a NumPyro program.

The NumPyro twin of ``models/m2.py`` (same sites, same networks, same defaults):

Generative model:  p(y) = Cat(1/K),  p(z) = N(0, I),  p(x | y, z) = Bernoulli(logits = f(y, z)).
Inference model:   q(y | x) q(z | x, y)   (``ppl_dgm.guides.label_numpyro.LabelGuide``).

The paper's M2 uses one hidden layer of 500 units and a 50-dimensional z; batch normalisation (on
by default, as for the Pyro pair) keeps its running statistics in the mutable site ``decoder$state``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from flax import linen as nn
from numpyro import handlers

from ppl_dgm.guides.label_numpyro import LabelGuide
from ppl_dgm.nn.flax_blocks import MultiInputMLP, apply, dense, network
from ppl_dgm.numpyro_pair import NumPyroPair


class Decoder(nn.Module):
    """Logits of p(x | y, z): per-input projections of z and one-hot y summed, then a linear map."""

    x_dim: int
    hidden: Sequence[int]
    act: str = "softplus"
    batch_norm: bool = False

    @nn.compact
    def __call__(self, z: jax.Array, y_onehot: jax.Array, train: bool = True) -> jax.Array:
        h = MultiInputMLP(self.hidden, self.act, self.batch_norm, name="mlp")(z, y_onehot,
                                                                             train=train)
        return dense(self.x_dim, h.shape[-1], name="x_logits")(h)


class M2Model:
    """p(y) p(z) p(x | y, z); ``y=None`` leaves y to the guide (enumerated when unlabelled)."""

    def __init__(self, x_dim: int, n_classes: int, z_dim: int, hidden: Sequence[int],
                 activation: str = "softplus", batch_norm: bool = False) -> None:
        self.n_classes, self.z_dim, self.batch_norm = n_classes, z_dim, batch_norm
        self.decoder = Decoder(x_dim, tuple(hidden), activation, batch_norm)

    def __call__(self, x: jax.Array, y: jax.Array | None = None, *,
                 beta: float | jax.Array = 1.0, train: bool = True) -> None:
        decoder = network("decoder", self.decoder, jnp.zeros((1, self.z_dim)),
                          jnp.zeros((1, self.n_classes)), batch_norm=self.batch_norm)
        with numpyro.plate("data", x.shape[0]):
            with handlers.scale(scale=beta):
                y = numpyro.sample("y", dist.Categorical(logits=jnp.zeros(self.n_classes)), obs=y)
                z = numpyro.sample("z", dist.Normal(jnp.zeros(self.z_dim), 1.0).to_event(1))
            logits = decoder(z, jax.nn.one_hot(y, self.n_classes, dtype=x.dtype), train=train)
            numpyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)

    def sample_x(self, params: dict[str, Any], rng_key: jax.Array, n: int,
                 y: jax.Array | None = None) -> jax.Array:
        """Bernoulli means of x for z ~ p(z) and the given (or uniformly drawn) labels."""
        key_y, key_z = jax.random.split(rng_key)
        if y is None:
            y = jax.random.randint(key_y, (n,), 0, self.n_classes)
        z = jax.random.normal(key_z, (n, self.z_dim))
        logits = apply(self.decoder, params, "decoder", z, jax.nn.one_hot(y, self.n_classes),
                       train=False)
        return jax.nn.sigmoid(logits)


def build(hparams: dict[str, Any], data: Any) -> NumPyroPair:
    """The M2 pair for ``data`` (needs ``x_dim``, ``n_classes``; ``alpha`` from the hparams)."""
    common = dict(z_dim=hparams["z_dim"], hidden=list(hparams["hidden"]),
                  activation=hparams["activation"], batch_norm=hparams["batch_norm"])
    p = M2Model(data.x_dim, data.n_classes, **common)
    q = LabelGuide(data.x_dim, data.n_classes, alpha=hparams.get("alpha", 0.0), **common)
    return NumPyroPair(p, q, max_plate_nesting=1, classifier=q.classify, sampler=p.sample_x)
