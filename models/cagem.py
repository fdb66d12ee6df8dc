"""CaGeM, the cluster-aware generative model (Maaløe, Fraccaro, Winther 2017).

The structure is *reconstructed from the paper's abstract* (the full text could not be checked; see
``../shared/design/papers.md`` section 3): a two-layer hierarchical VAE whose upper layer also
depends on a categorical cluster variable y,

    p(x, y, z1, z2) = p(y) p(z2) p(z1 | y, z2) p(x | z1),
    p(y) = Cat(1/K),  p(z2) = N(0, I),  p(z1 | y, z2) = N(mu(y, z2), var(y, z2)),
    p(x | z1) = Bernoulli(logits = MLP(z1)),

with the guide q(z1 | x) q(y | z1, x) q(z2 | z1, y) of ``ppl_dgm.guides.cagem``. y is summed out
exactly for unlabelled points (parallel enumeration, ``TraceEnum_ELBO``) and observed for labelled
ones, with M2's classification term alpha * log q(y | z1, x) (alpha = 0.1 N / N_labelled by default).
K is the number of classes when labels are given; trained with ``--labels 0`` the model is fully
unsupervised (no labelled batch, no classification term, every point enumerated) and K is
``n_clusters`` (``--set n_clusters=K``, at least the number of classes: 10 on MNIST; default: the
number of classes).

Choices where the abstract is silent, all options (``--set key=value``):

- ``z_dims`` / ``hidden_dims``: sizes of z1, z2 and of the deterministic layers of each
  connection, in the LVAE recipe's shape (every connection a two-layer MLP with batch norm and leaky
  ReLU, variance ``softplus(h) + min_scale**2``, ``min_scale`` sqrt(1e-5)). Defaults ``[32, 16]`` and
  ``[256, 128]``, chosen for short CPU budgets (the study in ``benchmarks/results/cagem`` gives
  each run 15 minutes at one thread; the paper's sizes are not in its abstract). The registered
  ``vae`` with ``--set z_dims=[32,16] --set hidden_dims=[256,128]`` is the same model and guide
  without y (the study's baseline).
- p(z1 | y, z2) and q(z2 | z1, y) project their two inputs with separate linear maps and sum
  (``MultiInputMLP``): the z-part is computed once, only the one-hot y part per cluster.
- ``classifier_uses_x``: q(y | z1, x) (true, default) or q(y | z1).
- KL warm-up scales every latent site, y included (as M2 does here); test-time classification reads
  q(y | z1, x) at the mean of q(z1 | x) (Pyro: ``--classify-samples S`` averages S draws of z1).
- ``labelled_weighting``: how much the labelled batch's generative terms count in a training step
  (the classification term alpha * log q(y | z1, x) keeps its own weight alpha either way; the
  validation and test figures, where y is unobserved, are not affected):

  * ``"batch_mean"``: the step's objective
    is mean_l [L(x, y) + alpha log q(y | z1, x)] + mean_u U(x), the M2/ADGM authors' weighting:
    the mean over the labelled batch weighs as much as the mean over the unlabelled batch, so 100
    labelled images carry half of every step's generative gradient.
  * ``"data_points"`` (the registered default, chosen by the equal-epoch study in
    ``benchmarks/results/cagem_epochs``: at 25 epochs it is ahead of ``batch_mean`` in IW-5000
    log-likelihood, validation ELBO and test error): each labelled image counts as one of the data
    points of the generative objective. Over the training set that objective is the sum of its terms,
    sum_{i labelled} L(x_i, y_i) + sum_{j in the unlabelled pool} U(x_j), N_l + N_u terms (N_l
    labelled images, N_u images in the unlabelled pool). Divided by N_u, so that the unlabelled
    mean keeps the weight 1 it has under ``batch_mean`` (and alpha its meaning relative to it),
    its unbiased estimate from a labelled batch drawn uniformly from the N_l labelled images and
    an unlabelled batch drawn from the pool is

        (N_l / N_u) mean_l L(x, y) + mean_u U(x),

    so every generative log-density of a labelled call (log p of y, z2, z1 and x in the model,
    log q of z1 and z2 in the guide) is scaled by w = N_l / N_u and the classification factor is
    not. The labelled and unlabelled terms weigh N_l : N_u, as the data points they stand for:
    with the pool that excludes the labelled images (``--no-include-labelled``) that is
    N_l / N : (N - N_l) / N up to the common factor N / N_u; with the default pool, which includes
    them (the authors' convention: a labelled image also has an unlabelled term), w = N_l / N,
    e.g. 100 / 50,000 = 0.002 on MNIST with 10,000 images held out. The recorded
    ``loss_labelled`` is then the weighted term.

Training defaults (``ppl_dgm.registry``) follow the LVAE/ADGM recipes: Adam, batch norm, linear
warm-up, labelled and unlabelled batches of 100, gradient norm clipped at 5.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from ppl_dgm.guides.cagem import CaGeMGuide
from ppl_dgm.infer.site_scales import kl_scale, labelled_scale
from ppl_dgm.models.common import CAGEM_DEFAULTS as DEFAULTS
from ppl_dgm.models.common import PAPER_MIN_SCALE, cagem_labelled_weight
from ppl_dgm.models.common import cagem_network_kwargs as network_kwargs
from ppl_dgm.models.common import check_cagem_hparams as check_hparams
from ppl_dgm.nn.torch_blocks import MLP, GaussianMLP
from ppl_dgm.pair import Pair

__all__ = ["DEFAULTS", "CaGeMModel", "build", "check_hparams", "labelled_scale", "network_kwargs"]


class CaGeMModel(nn.Module):
    """p(y) p(z2) p(z1 | y, z2) p(x | z1); ``forward(x, y=None, *, beta=1.0)`` is the Pyro model.

    ``p_z1`` is p(z1 | y, z2) (inputs ``(z2, one-hot y)``, two hidden layers of ``hidden_dims[1]``),
    ``decoder`` + ``logits`` is p(x | z1) (two hidden layers of ``hidden_dims[0]``), as the LVAE's
    ``top_down[0]`` and decoder with y added. ``y=None`` leaves y to the guide. A labelled call's
    log-densities are scaled by ``labelled_weight`` (see ``labelled_weighting`` above).
    """

    def __init__(self, x_dim: int, n_clusters: int, z_dims: Sequence[int],
                 hidden_dims: Sequence[int], activation: str = "leaky_relu",
                 batch_norm: bool = True, min_scale: float = PAPER_MIN_SCALE,
                 labelled_weight: float = 1.0) -> None:
        super().__init__()
        z1, z2 = z_dims
        h1, h2 = hidden_dims
        self.n_clusters, self.z_dims = n_clusters, [z1, z2]
        self.labelled_weight = float(labelled_weight)
        self.p_z1 = GaussianMLP([z2, n_clusters], h2, z1, activation, batch_norm, min_scale)
        self.decoder = MLP(z1, [h1, h1], activation, batch_norm)
        self.logits = nn.Linear(h1, x_dim)

    @property
    def n_classes(self) -> int:
        """The number of values of y (one row each in ``ppl-dgm sample``)."""
        return self.n_clusters

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, *, beta: float = 1.0):
        with pyro.plate("data", x.shape[0], dim=-1), labelled_scale(self.labelled_weight, y):
            with kl_scale(beta):
                y = pyro.sample("y", dist.Categorical(logits=x.new_zeros(self.n_clusters)), obs=y)
                z2 = pyro.sample("z2", dist.Normal(x.new_zeros(self.z_dims[1]), 1.0).to_event(1))
            loc, scale = self.p_z1(z2, F.one_hot(y, self.n_clusters).to(x.dtype))
            with kl_scale(beta):
                z1 = pyro.sample("z1", dist.Normal(loc, scale).to_event(1))
            logits = self.logits(self.decoder(z1))
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)

    @torch.no_grad()
    def sample_x(self, n: int, y: torch.Tensor | None = None) -> torch.Tensor:
        """Bernoulli means ``(n, x_dim)`` for z2 ~ p(z2), z1 ~ p(z1 | y, z2) and the given (or
        uniformly drawn) clusters y. Call ``eval()`` first (batch norm's running statistics)."""
        device = self.logits.weight.device
        if y is None:
            y = torch.randint(self.n_clusters, (n,), device=device)
        z2 = torch.randn(n, self.z_dims[1], device=device)
        loc, scale = self.p_z1(z2, F.one_hot(y.to(device), self.n_clusters).float())
        return torch.sigmoid(self.logits(self.decoder(dist.Normal(loc, scale).sample())))


def build(hparams: Mapping[str, Any], data: Any) -> Pair:
    """The CaGeM pair for ``data`` (``x_dim``, ``n_classes``, ``n_labelled``, ``n_unlabelled``);
    ``alpha`` from the hparams (the trainer adds it). Keys and defaults: :data:`DEFAULTS`."""
    h = check_hparams(hparams, data)
    common = network_kwargs(h)
    weight = cagem_labelled_weight(h, data)
    p = CaGeMModel(int(data.x_dim), h["n_clusters"], **common, labelled_weight=weight)
    q = CaGeMGuide(int(data.x_dim), h["n_clusters"], alpha=float(hparams.get("alpha", 0.0)),
                   classifier_uses_x=bool(h["classifier_uses_x"]), **common,
                   labelled_weight=weight)
    return Pair(p, q, max_plate_nesting=1, iw_enumerate=True)
