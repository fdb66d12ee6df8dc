"""CaGeM, the cluster-aware generative model (Maaløe, Fraccaro, Winther 2017), as NumPyro programs.

The NumPyro twin of ``models/cagem.py`` (same sites, networks, defaults and options; the structure
is *reconstructed from the paper's abstract*, see that module's docstring for every choice made
where the abstract is silent):

    p(y) p(z2) p(z1 | y, z2) p(x | z1)       (model)
    q(z1 | x) q(y | z1, x) q(z2 | z1, y)      (guide, ``guides/cagem_numpyro.py``)

Networks (``flax_module`` sites): ``p_z1`` (:class:`~ppl_dgm.nn.flax_blocks.GaussianLayer`,
inputs ``(z2, one-hot y)``), ``p_x`` (a ``LogitsMLP`` of z1), ``q_z1`` (a ``GaussianLayer`` of x),
``classifier`` (a ``LogitsMLP`` of ``(x, z1)``, or ``(z1,)``), ``q_z2`` (a ``GaussianLayer`` of
``(z1, one-hot y)``); with batch norm their running statistics are the ``$state`` sites. The
labelled/unlabelled machinery is ``guides/label_numpyro.py``'s :func:`label_site`. Importing this
module never imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from ppl_dgm.guides.cagem_numpyro import CaGeMGuide
from ppl_dgm.infer.numpyro_site_scales import kl_scale, labelled_scale
from ppl_dgm.models.common import CAGEM_DEFAULTS as DEFAULTS
from ppl_dgm.models.common import PAPER_MIN_SCALE, cagem_labelled_weight
from ppl_dgm.models.common import cagem_network_kwargs as network_kwargs
from ppl_dgm.models.common import check_cagem_hparams as check_hparams
from ppl_dgm.nn.flax_blocks import GaussianLayer, LogitsMLP, apply, network
from ppl_dgm.numpyro_pair import NumPyroPair

__all__ = ["DEFAULTS", "CaGeMModel", "build", "labelled_scale"]


class CaGeMModel:
    """p(y) p(z2) p(z1 | y, z2) p(x | z1); ``model(x, y=None, *, beta=1.0, train=True)``. A labelled
    call's log-densities are scaled by ``labelled_weight`` (``labelled_weighting``)."""

    def __init__(self, x_dim: int, n_clusters: int, z_dims: Sequence[int],
                 hidden_dims: Sequence[int], activation: str = "leaky_relu",
                 batch_norm: bool = True, min_scale: float = PAPER_MIN_SCALE,
                 labelled_weight: float = 1.0) -> None:
        (self.z1, self.z2), (h1, h2) = z_dims, hidden_dims
        self.n_clusters, self.batch_norm = n_clusters, batch_norm
        self.labelled_weight = float(labelled_weight)
        self.p_z1 = GaussianLayer(self.z1, h2, activation, batch_norm, min_scale)
        self.p_x = LogitsMLP(x_dim, (h1, h1), activation, batch_norm)

    @property
    def n_classes(self) -> int:
        """The number of values of y (one row each in ``ppl-dgm sample``)."""
        return self.n_clusters

    def __call__(self, x: jax.Array, y: jax.Array | None = None, *,
                 beta: float | jax.Array = 1.0, train: bool = True) -> None:
        k = self.n_clusters
        p_z1 = network("p_z1", self.p_z1, jnp.zeros((1, self.z2)), jnp.zeros((1, k)),
                       batch_norm=self.batch_norm)
        p_x = network("p_x", self.p_x, jnp.zeros((1, self.z1)), batch_norm=self.batch_norm)
        with numpyro.plate("data", x.shape[0]), labelled_scale(self.labelled_weight, y):
            with kl_scale(beta):
                y = numpyro.sample("y", dist.Categorical(logits=jnp.zeros(k)), obs=y)
                z2 = numpyro.sample("z2", dist.Normal(jnp.zeros(self.z2), 1.0).to_event(1))
            _, loc, scale = p_z1(z2, jax.nn.one_hot(y, k, dtype=x.dtype), train=train)
            with kl_scale(beta):
                z1 = numpyro.sample("z1", dist.Normal(loc, scale).to_event(1))
            numpyro.sample("x", dist.Bernoulli(logits=p_x(z1, train=train)).to_event(1), obs=x)

    def sample_x(self, params: dict[str, Any], rng_key: jax.Array, n: int,
                 y: jax.Array | None = None) -> jax.Array:
        """Bernoulli means ``(n, x_dim)`` for z2 ~ p(z2), z1 ~ p(z1 | y, z2) and the given (or
        uniformly drawn) clusters (batch norm on its running statistics)."""
        key_y, key_2, key_1 = jax.random.split(rng_key, 3)
        if y is None:
            y = jax.random.randint(key_y, (n,), 0, self.n_clusters)
        z2 = jax.random.normal(key_2, (n, self.z2))
        _, loc, scale = apply(self.p_z1, params, "p_z1", z2, jax.nn.one_hot(y, self.n_clusters),
                              train=False)
        z1 = loc + scale * jax.random.normal(key_1, loc.shape)
        return jax.nn.sigmoid(apply(self.p_x, params, "p_x", z1, train=False))


def build(hparams: Mapping[str, Any], data: Any) -> NumPyroPair:
    """The NumPyro CaGeM pair (keys and defaults as ``models/cagem.py``'s :func:`build`, plus
    ``num_particles``, which the NumPyro trainer adds and this pair ignores)."""
    h = check_hparams(hparams, data)
    common = network_kwargs(h)
    weight = cagem_labelled_weight(h, data)
    p = CaGeMModel(int(data.x_dim), h["n_clusters"], **common, labelled_weight=weight)
    q = CaGeMGuide(int(data.x_dim), h["n_clusters"], alpha=float(hparams.get("alpha", 0.0)),
                   classifier_uses_x=bool(h["classifier_uses_x"]), **common,
                   labelled_weight=weight)
    return NumPyroPair(p, q, max_plate_nesting=1, classifier=q.classify, sampler=p.sample_x,
                       iw_enumerate=True)
