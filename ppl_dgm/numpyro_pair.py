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

    ``sampling_classifier``: the classifier averages over sampled latents (ADGM/SDGM's q(y | a, x)
    over draws of a) and is called as ``classifier(params, x, num_samples=S, rng_key=key)``.
    ``particles_in_program``: the programs draw their Monte Carlo particles themselves (from the
    ``num_particles`` the trainer puts in the hparams), so a trainer's ELBO runs one particle.
    ``iw_enumerate``: the importance-weighted estimator sums the guide's enumerated sites exactly
    instead of sampling them (``ppl_dgm.infer.numpyro_importance``; CaGeM's y).
    ``frozen``: names of networks (parameter sites ``NAME$params``) that the optimiser leaves at
    their initial values (no update at all, weight prior included).
    """

    model: Callable[..., Any]
    guide: Callable[..., Any]
    max_plate_nesting: int = 1
    classifier: Callable[..., jax.Array] | None = None
    sampler: Callable[..., jax.Array] | None = None
    sampling_classifier: bool = False
    particles_in_program: bool = False
    iw_enumerate: bool = False
    frozen: tuple[str, ...] = ()

    def classify(self, params: Params, x: jax.Array, num_samples: int = 1,
                 rng_key: jax.Array | None = None) -> jax.Array:
        """Class probabilities ``(B, n_classes)`` from the guide's classifier.

        A sampling classifier averages over ``num_samples`` draws keyed by ``rng_key`` (required
        then); a deterministic one ignores both.
        """
        if self.classifier is None:
            raise TypeError("this pair's guide has no classifier: pass NumPyroPair(..., classifier=fn), "
                            "fn(params, x) -> class probabilities (B, n_classes) (ppl_dgm.contract)")
        if self.sampling_classifier:
            if rng_key is None:
                raise ValueError("this pair's classifier samples its latents: pass rng_key")
            return self.classifier(params, x, num_samples=num_samples, rng_key=rng_key)
        return self.classifier(params, x)

    def sample_x(self, params: Params, rng_key: jax.Array, n: int,
                 y: jax.Array | None = None) -> jax.Array:
        """Bernoulli means of ``n`` samples from the generative model (class-conditional if given)."""
        if self.sampler is None:
            raise TypeError("this pair's model cannot sample x: pass NumPyroPair(..., sampler=fn), "
                            "fn(params, rng_key, n, y) -> (n, x_dim) Bernoulli means (ppl_dgm.contract)")
        return self.sampler(params, rng_key, n, y)
