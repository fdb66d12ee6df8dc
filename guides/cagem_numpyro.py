"""CaGeM's inference model as a NumPyro program: the twin of ``guides/cagem.py`` (structure
*reconstructed from the paper's abstract*; see ``models/cagem.py``):

    q(z1, y, z2 | x) = q(z1 | x) q(y | z1, x) q(z2 | z1, y),

z1 drawn first from x, then the cluster y through ``guides/label_numpyro.py``'s :func:`label_site`
(enumerated in parallel when unlabelled, observed with the classification term when labelled), then
z2 from z1 and y. Networks: ``q_z1`` (a ``GaussianLayer`` of x), ``classifier`` (a ``LogitsMLP`` of
``(x, z1)``, or ``(z1,)`` without ``classifier_uses_x``), ``q_z2`` (a ``GaussianLayer`` of
``(z1, one-hot y)``). Importing this module never imports torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from ppl_dgm.guides.label_numpyro import label_site
from ppl_dgm.infer.numpyro_site_scales import kl_scale, labelled_scale
from ppl_dgm.models.common import PAPER_MIN_SCALE
from ppl_dgm.nn.flax_blocks import GaussianLayer, LogitsMLP, apply, network


class CaGeMGuide:
    """q(z1 | x) q(y | z1, x) q(z2 | z1, y); ``guide(x, y=None, *, beta=1.0, train=True)``.
    ``labelled_weight`` scales log q(z1) and log q(z2) of a labelled call, not its classification
    term (``labelled_weighting`` in ``models/cagem.py``)."""

    def __init__(self, x_dim: int, n_clusters: int, z_dims: Sequence[int],
                 hidden_dims: Sequence[int], activation: str = "leaky_relu",
                 batch_norm: bool = True, min_scale: float = PAPER_MIN_SCALE, alpha: float = 0.0,
                 classifier_uses_x: bool = True, labelled_weight: float = 1.0) -> None:
        (self.z1, self.z2), (h1, h2) = z_dims, hidden_dims
        self.x_dim, self.n_clusters, self.batch_norm = x_dim, n_clusters, batch_norm
        self.alpha, self.classifier_uses_x = alpha, classifier_uses_x
        self.labelled_weight = float(labelled_weight)
        self.q_z1 = GaussianLayer(self.z1, h1, activation, batch_norm, min_scale)
        self.classifier = LogitsMLP(n_clusters, (h1, h1), activation, batch_norm)
        self.q_z2 = GaussianLayer(self.z2, h2, activation, batch_norm, min_scale)

    def _classifier_inputs(self, x: jax.Array, z1: jax.Array) -> tuple[jax.Array, ...]:
        return (x, z1) if self.classifier_uses_x else (z1,)

    def __call__(self, x: jax.Array, y: jax.Array | None = None, *,
                 beta: float | jax.Array = 1.0, train: bool = True) -> None:
        k = self.n_clusters
        q_z1 = network("q_z1", self.q_z1, jnp.zeros((1, self.x_dim)), batch_norm=self.batch_norm)
        classifier = network("classifier", self.classifier,
                             *self._classifier_inputs(jnp.zeros((1, self.x_dim)),
                                                      jnp.zeros((1, self.z1))),
                             batch_norm=self.batch_norm)
        q_z2 = network("q_z2", self.q_z2, jnp.zeros((1, self.z1)), jnp.zeros((1, k)),
                       batch_norm=self.batch_norm)
        weight, labelled = self.labelled_weight, y is not None
        with numpyro.plate("data", x.shape[0]):
            _, loc, scale = q_z1(x, train=train)
            with kl_scale(beta), labelled_scale(weight, y):
                z1 = numpyro.sample("z1", dist.Normal(loc, scale).to_event(1))
            logits = classifier(*self._classifier_inputs(x, z1), train=train)
            y = label_site(logits, y, self.alpha, beta)  # (not scaled by the weight)
            _, loc, scale = q_z2(z1, jax.nn.one_hot(y, k, dtype=x.dtype), train=train)
            with kl_scale(beta), labelled_scale(weight, y if labelled else None):
                numpyro.sample("z2", dist.Normal(loc, scale).to_event(1))

    def classify(self, params: dict[str, Any], x: jax.Array) -> jax.Array:
        """q(y | x) as probabilities ``(B, n_clusters)``: q(y | z1, x) at the mean of q(z1 | x)
        (batch norm on its running statistics)."""
        _, loc, _ = apply(self.q_z1, params, "q_z1", x, train=False)
        logits = apply(self.classifier, params, "classifier", *self._classifier_inputs(x, loc),
                       train=False)
        return jax.nn.softmax(logits, -1)
