"""The enumerated-label guide family for the NumPyro backend: q(y | .) for M2 (``guides/label.py``).

For an unlabelled point the guide's ``y`` site is enumerated in parallel (``TraceEnum_ELBO`` then
sums over the labels exactly: -U(x) = sum_y q(y|x) (-L(x, y)) + H[q(y|x)]). For a labelled point
``y`` is not a latent variable; instead the guide adds the classification term alpha * log q(y|x)
to the objective as a ``numpyro.factor``, so a single SVI step trains everything (Kingma et al.
2014, eq. 9; as in Pyro's scANVI example).
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

from ppl_dgm.nn.flax_blocks import GaussianHead, MultiInputMLP, apply, dense, network


def label_site(logits: jax.Array, y: jax.Array | None, alpha: float,
               beta: float | jax.Array = 1.0) -> jax.Array:
    """The guide's label: enumerate ``y ~ q(y|.)`` if unlabelled, else score the classifier.

    A guide factor f enters the ELBO as -f (the ELBO is E_q[log p - log q] and a guide factor is
    part of log q), so ``f = -alpha * log q(y|.)`` adds alpha * log q(y|.) to the ELBO. NumPyro's
    ``TraceEnum_ELBO`` differentiates an observed guide site's log-density directly (no score-function
    term: it has no non-reparameterised sample upstream), like Pyro's ``has_rsample=True``.
    A Python ``beta = 0`` masks the site instead of scaling it (``handlers.scale`` refuses 0).
    """
    q_y = dist.Categorical(logits=logits)
    if y is None:
        zero = isinstance(beta, (int, float)) and beta == 0
        with handlers.mask(mask=False) if zero else handlers.scale(scale=beta):
            return numpyro.sample("y", q_y, infer={"enumerate": "parallel"})
    if alpha:
        numpyro.factor("classification", -alpha * q_y.log_prob(y))
    return y


class Classifier(nn.Module):
    """q(y | x) as logits: an MLP of x and a linear output layer."""

    n_classes: int
    hidden: Sequence[int]
    act: str = "softplus"
    batch_norm: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = True) -> jax.Array:
        h = MultiInputMLP(self.hidden, self.act, self.batch_norm, name="mlp")(x, train=train)
        return dense(self.n_classes, h.shape[-1], name="logits")(h)


class Encoder(nn.Module):
    """q(z | x, y) parameters: per-input projections of x and one-hot y summed, a Gaussian head."""

    z_dim: int
    hidden: Sequence[int]
    act: str = "softplus"
    batch_norm: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, y_onehot: jax.Array,
                 train: bool = True) -> tuple[jax.Array, jax.Array]:
        h = MultiInputMLP(self.hidden, self.act, self.batch_norm, name="mlp")(x, y_onehot,
                                                                             train=train)
        return GaussianHead(self.z_dim, name="z_head")(h)


class LabelGuide:
    """M2's inference model q(y | x) q(z | x, y) as a NumPyro program.

    The classifier is an MLP of x; q(z|x,y) projects x and one-hot y with separate linear maps and
    sums them, so under enumeration the projection of x is computed once per data point. The networks
    are the flax modules ``classifier`` and ``encoder`` (sites ``classifier$params``, ...).
    """

    def __init__(self, x_dim: int, n_classes: int, z_dim: int, hidden: Sequence[int],
                 activation: str = "softplus", batch_norm: bool = False,
                 alpha: float = 0.0) -> None:
        self.x_dim, self.n_classes, self.alpha, self.batch_norm = x_dim, n_classes, alpha, batch_norm
        self.classifier = Classifier(n_classes, tuple(hidden), activation, batch_norm)
        self.encoder = Encoder(z_dim, tuple(hidden), activation, batch_norm)

    def __call__(self, x: jax.Array, y: jax.Array | None = None, *,
                 beta: float | jax.Array = 1.0, train: bool = True) -> None:
        classifier = network("classifier", self.classifier, jnp.zeros((1, self.x_dim)),
                             batch_norm=self.batch_norm)
        encoder = network("encoder", self.encoder, jnp.zeros((1, self.x_dim)),
                          jnp.zeros((1, self.n_classes)), batch_norm=self.batch_norm)
        with numpyro.plate("data", x.shape[0]):
            y = label_site(classifier(x, train=train), y, self.alpha, beta)
            loc, scale = encoder(x, jax.nn.one_hot(y, self.n_classes, dtype=x.dtype), train=train)
            with handlers.scale(scale=beta):
                numpyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def classify(self, params: dict[str, Any], x: jax.Array) -> jax.Array:
        """q(y | x) as probabilities ``(B, n_classes)`` (batch norm on its running statistics)."""
        return jax.nn.softmax(apply(self.classifier, params, "classifier", x, train=False), -1)
