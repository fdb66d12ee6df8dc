"""A model/guide pair for the NumPyro backend: two NumPyro programs and their networks' helpers.

The NumPyro counterpart of :class:`ppl_dgm.pair.Pair`. NumPyro programs are functions, their
parameters live outside them (a dict of ``numpyro.param`` and ``numpyro.mutable`` site values, as
``SVI.get_params`` plus the SVI state's mutable state give them), so the optional helpers take the
parameters explicitly. Importing this module imports JAX, never torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax

Params = dict[str, Any]


@dataclass(frozen=True)
class NumPyroPair:
    """The generative model ``model`` and the guide ``guide``, both NumPyro programs.

    Both take ``(x, y=None, *, beta=1.0, train=True)``: ``y=None`` means unlabelled (models with a
    label enumerate it in the guide), ``beta`` scales the latent sites (KL warm-up; 1 at evaluation),
    ``train=False`` makes batch normalisation use its running statistics (evaluation).
    ``classifier(params, x)`` gives q(y | x) as probabilities ``(B, n_classes)``; ``sampler(params,
    rng_key, n, y)`` gives Bernoulli means of ``n`` samples of x.
    """

    model: Callable[..., Any]
    guide: Callable[..., Any]
    max_plate_nesting: int = 1
    classifier: Callable[[Params, jax.Array], jax.Array] | None = None
    sampler: Callable[..., jax.Array] | None = None

    def classify(self, params: Params, x: jax.Array, num_samples: int = 1) -> jax.Array:
        """Class probabilities ``(B, n_classes)`` from the guide's classifier."""
        if self.classifier is None:
            raise TypeError("this pair's guide has no classifier")
        return self.classifier(params, x)

    def sample_x(self, params: Params, rng_key: jax.Array, n: int,
                 y: jax.Array | None = None) -> jax.Array:
        """Bernoulli means of ``n`` samples from the generative model (class-conditional if given)."""
        if self.sampler is None:
            raise TypeError("this pair's model cannot sample x")
        return self.sampler(params, rng_key, n, y)
