"""A model/guide pair: the generative model p and the inference model q as one ``nn.Module``."""

from __future__ import annotations

import torch
from torch import nn


class Pair(nn.Module):
    """Holds the generative model ``p`` and the guide ``q``; both are Pyro programs.

    ``pair.model(x, y=None, beta=1.0)`` and ``pair.guide(x, y=None, beta=1.0)`` are what Pyro's ELBOs
    take. Their parameters are ordinary torch parameters, so plain torch optimisers (and data-parallel
    wrappers) train them through ``elbo.differentiable_loss``. ``y=None`` means unlabelled: models with
    a label enumerate it. ``beta`` scales the latent sites (KL warm-up); it is 1 at evaluation.
    ``iw_enumerate``: the importance-weighted estimator sums the guide's enumerated sites exactly
    instead of sampling them (``ppl_dgm.infer.importance``; CaGeM's y).
    """

    def __init__(self, p: nn.Module, q: nn.Module, max_plate_nesting: int = 1,
                 iw_enumerate: bool = False) -> None:
        super().__init__()
        self.p = p
        self.q = q
        self.max_plate_nesting = max_plate_nesting
        self.iw_enumerate = iw_enumerate

    def model(self, x: torch.Tensor, y: torch.Tensor | None = None, *, beta: float = 1.0):
        return self.p(x, y, beta=beta)

    def guide(self, x: torch.Tensor, y: torch.Tensor | None = None, *, beta: float = 1.0):
        return self.q(x, y, beta=beta)

    def classify(self, x: torch.Tensor, num_samples: int = 1) -> torch.Tensor:
        """Class probabilities ``(B, n_classes)`` from the guide's classifier."""
        if not hasattr(self.q, "classify"):
            raise TypeError(f"{type(self.q).__name__} has no classifier: add classify(x, num_samples=1) "
                            "-> class probabilities (B, n_classes) to it (ppl_dgm.contract)")
        return self.q.classify(x, num_samples=num_samples)

    def sample_x(self, n: int, y: torch.Tensor | None = None) -> torch.Tensor:
        """Bernoulli means of ``n`` samples from the generative model (class-conditional if given)."""
        if not hasattr(self.p, "sample_x"):
            raise TypeError(f"{type(self.p).__name__} cannot sample x: add sample_x(n, y=None) -> "
                            "(n, x_dim) Bernoulli means to it (ppl_dgm.contract)")
        return self.p.sample_x(n, y)
