"""CaGeM's inference model (Maaløe, Fraccaro, Winther 2017), *reconstructed from the abstract*:

    q(z1, y, z2 | x) = q(z1 | x) q(y | z1, x) q(z2 | z1, y).

z1 is drawn bottom-up first (the plain hierarchical guide's first connection, ``guides/hierarchical.py``,
the same :class:`~ppl_dgm.nn.torch_blocks.GaussianMLP`), then the cluster ``y`` through the
enumerated-label guide family's :func:`~ppl_dgm.guides.label.label_site` (enumerated in parallel when
unlabelled, observed with the classification term alpha * log q(y | z1, x) when labelled), then z2 from
z1 and y. The ladder guide's top-down merge (``guides/ladder.py``) does not fit this order (z1 is
sampled before the upper variables), so the guide is bottom-up, like the "VAE" baseline it is
compared with.

Choices where the abstract is silent (options of :func:`ppl_dgm.models.cagem.build`):
``classifier_uses_x`` (default true: q(y | z1, x) reads x and z1, each projected by its own linear map
and summed, so under enumeration nothing is recomputed per cluster; false: q(y | z1)); the classifier
has two hidden layers of ``hidden_dims[0]`` units, like every connection of the LVAE recipe.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from ppl_dgm.guides.label import label_site
from ppl_dgm.infer.site_scales import kl_scale, labelled_scale
from ppl_dgm.models.common import PAPER_MIN_SCALE
from ppl_dgm.nn.torch_blocks import GaussianMLP, MultiInputMLP


class CaGeMGuide(nn.Module):
    """q(z1 | x) q(y | z1, x) q(z2 | z1, y); ``forward(x, y=None, *, beta=1.0)`` is the Pyro guide.

    ``q_z1`` is q(z1 | x) (two hidden layers of ``hidden_dims[0]``), ``classifier`` + ``y_logits``
    give the logits of q(y | z1, x) (inputs ``(x, z1)``, or ``(z1,)`` without ``classifier_uses_x``),
    ``q_z2`` is q(z2 | z1, y) (inputs ``(z1, one-hot y)``, two hidden layers of ``hidden_dims[1]``).
    ``alpha`` weighs the classification term of labelled points; ``beta`` scales every latent site,
    y included (KL warm-up). ``labelled_weight`` scales log q(z1) and log q(z2) of a labelled call,
    not its classification term (``labelled_weighting`` in ``models/cagem.py``).
    """

    def __init__(self, x_dim: int, n_clusters: int, z_dims: Sequence[int],
                 hidden_dims: Sequence[int], activation: str = "leaky_relu",
                 batch_norm: bool = True, min_scale: float = PAPER_MIN_SCALE, alpha: float = 0.0,
                 classifier_uses_x: bool = True, labelled_weight: float = 1.0) -> None:
        super().__init__()
        z1, z2 = z_dims
        h1, h2 = hidden_dims
        self.n_clusters, self.alpha, self.classifier_uses_x = n_clusters, alpha, classifier_uses_x
        self.labelled_weight = float(labelled_weight)
        self.q_z1 = GaussianMLP(x_dim, h1, z1, activation, batch_norm, min_scale)
        inputs = [x_dim, z1] if classifier_uses_x else [z1]
        self.classifier = MultiInputMLP(inputs, [h1, h1], activation, batch_norm)
        self.y_logits = nn.Linear(h1, n_clusters)
        self.q_z2 = GaussianMLP([z1, n_clusters], h2, z2, activation, batch_norm, min_scale)

    def logits(self, x: torch.Tensor, z1: torch.Tensor) -> torch.Tensor:
        """Logits of q(y | z1, x)."""
        h = self.classifier(x, z1) if self.classifier_uses_x else self.classifier(z1)
        return self.y_logits(h)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, *, beta: float = 1.0):
        weight = self.labelled_weight
        with pyro.plate("data", x.shape[0], dim=-1):
            loc, scale = self.q_z1(x)
            with kl_scale(beta), labelled_scale(weight, y):
                z1 = pyro.sample("z1", dist.Normal(loc, scale).to_event(1))
            labelled = y is not None
            y = label_site(self.logits(x, z1), y, self.alpha, beta)  # (not scaled by the weight)
            loc, scale = self.q_z2(z1, F.one_hot(y, self.n_clusters).to(x.dtype))
            with kl_scale(beta), labelled_scale(weight, y if labelled else None):
                pyro.sample("z2", dist.Normal(loc, scale).to_event(1))

    @torch.no_grad()
    def classify(self, x: torch.Tensor, num_samples: int = 1) -> torch.Tensor:
        """q(y | x) as probabilities ``(B, n_clusters)``: q(y | z1, x) at the mean of q(z1 | x) when
        ``num_samples`` is 1, else averaged over ``num_samples`` draws of z1."""
        loc, scale = self.q_z1(x)
        if num_samples == 1:
            return torch.softmax(self.logits(x, loc), -1)
        z1 = loc + scale * torch.randn((num_samples, *loc.shape), device=loc.device)
        return torch.softmax(self.logits(x, z1), -1).mean(0)
