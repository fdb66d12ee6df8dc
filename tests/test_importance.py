"""The importance-weighted estimate against the exact (enumerated) ELBO of a tiny M2, and against
log p(x) computed by quadrature."""

import math

import numpy as np
import pyro
import torch
from pyro.infer import TraceEnum_ELBO
from torch.nn import functional as F

from ppl_dgm.infer.importance import elbo_per_example, log_likelihood, log_weights, pareto_k
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


def test_iw_estimate_approaches_log_px_by_quadrature():
    """A one-dimensional z: log p(x) = log sum_y p(y) int N(z; 0, 1) p(x | y, z) dz by Gauss-Hermite
    quadrature, against the IW estimate with K = 5000 (y sampled by the guide, as in evaluation)."""
    torch.manual_seed(1)
    pair = build({"z_dim": 1, "hidden": [4], "activation": "tanh", "batch_norm": False},
                 Info()).eval()
    x = torch.bernoulli(torch.full((3, 6), 0.5), generator=torch.Generator().manual_seed(2))
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)        # weight exp(-z^2 / 2)
    z = torch.as_tensor(nodes, dtype=torch.float32)[:, None]
    log_w = torch.as_tensor(np.log(weights / math.sqrt(2 * math.pi)), dtype=torch.float32)
    p = pair.p
    per_label = []
    with torch.no_grad():
        for k in range(Info.n_classes):
            y = F.one_hot(torch.full((len(z),), k), Info.n_classes).float()
            logits = p.x_logits(p.decoder(z, y))                             # (Q, x_dim)
            log_px_z = torch.distributions.Bernoulli(logits=logits[:, None]).log_prob(x).sum(-1)
            per_label.append(torch.logsumexp(log_px_z + log_w[:, None], 0) - math.log(Info.n_classes))
    exact = torch.logsumexp(torch.stack(per_label), 0)                      # (B,)
    pyro.set_rng_seed(3)
    estimate = log_likelihood(pair, x, 5000, chunk_size=1000)
    assert (estimate <= exact + 0.01).all()
    torch.testing.assert_close(estimate, exact, atol=0.03, rtol=0)


def test_estimators_run_in_evaluation_mode_and_restore_the_callers_mode():
    """With batch norm, a pair left in training mode gives the evaluation-mode estimate, and stays in
    training mode afterwards."""
    torch.manual_seed(0)
    pair = build({"z_dim": 2, "hidden": [5], "activation": "softplus", "batch_norm": True}, Info())
    x = torch.bernoulli(torch.full((8, 6), 0.5), generator=torch.Generator().manual_seed(4))
    pair.train()
    for _ in range(3):  # move the running statistics away from their initial values
        pair.q.classifier(x * 3 + 1)
    pair.eval()
    pyro.set_rng_seed(5)
    expected = log_likelihood(pair, x, 64)
    pair.train()
    pyro.set_rng_seed(5)
    got = log_likelihood(pair, x, 64)
    assert pair.training and all(m.training for m in pair.modules())
    torch.testing.assert_close(got, expected)
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    pair.eval()
    pyro.set_rng_seed(6)
    e_eval = elbo_per_example(pair, elbo, x)
    pair.train()
    pyro.set_rng_seed(6)
    assert elbo_per_example(pair, elbo, x) == e_eval and pair.training
