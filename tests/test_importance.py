"""The importance-weighted estimate against the exact (enumerated) ELBO of a tiny M2."""

import pyro
import torch
from pyro.infer import TraceEnum_ELBO

from ppl_dgm.infer.importance import log_likelihood, log_weights, pareto_k
from ppl_dgm.models.m2 import build


class Info:
    x_dim, n_classes = 6, 3


def tiny_pair():
    torch.manual_seed(0)
    return build({"z_dim": 2, "hidden": [5], "activation": "softplus", "batch_norm": False},
                 Info()).eval()


def test_iw_at_k1_averages_to_the_elbo_and_grows_with_k():
    pair = tiny_pair()
    pyro.set_rng_seed(0)
    x = torch.bernoulli(torch.full((5, 6), 0.4))
    # exact sum over y, Monte Carlo over z with many particles
    elbo = TraceEnum_ELBO(max_plate_nesting=1, num_particles=20000, vectorize_particles=True)
    exact = -elbo.loss(pair.model, pair.guide, x, None)
    k1 = log_weights(pair, x, 20000)  # each row is an IW estimate with K = 1
    assert abs(k1.mean(0).sum().item() - exact) < 0.05 * 5
    estimates = {k: torch.stack([log_likelihood(pair, x, k, chunk_size=64).sum()
                                 for _ in range(200)]).mean().item() for k in (1, 10, 100)}
    assert estimates[1] < estimates[10] < estimates[100]
    assert estimates[10] > exact


def test_log_weights_shape_and_pareto_k():
    pair = tiny_pair()
    x = torch.bernoulli(torch.full((4, 6), 0.5))
    ll, log_w = log_likelihood(pair, x, 300, chunk_size=128, return_log_weights=True)
    assert log_w.shape == (300, 4) and ll.shape == (4,)
    assert torch.allclose(ll, torch.logsumexp(log_w, 0) - torch.log(torch.tensor(300.0)))
    k = pareto_k(log_w)
    assert k.shape == (4,)
    # a heavy-tailed set of weights is flagged, a light one is not
    heavy = torch.distributions.Pareto(1.0, 1.2).sample((2000, 1)).log()
    light = torch.randn(2000, 1) * 0.1
    assert pareto_k(heavy)[0] > 0.7 > pareto_k(light)[0]
