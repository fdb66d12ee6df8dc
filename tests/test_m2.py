"""M2's enumerated ELBO against the explicit sum over labels, written out by hand."""

import math

import pyro
import pytest
import torch
import torch.distributions as td
from pyro.infer import TraceEnum_ELBO
from torch.nn import functional as F

from ppl_dgm.infer.objectives import semi_supervised_loss
from ppl_dgm.models.m2 import build

K, B, D, Z = 3, 4, 6, 2


class Info:
    x_dim, n_classes = D, K


def tiny_pair(alpha=0.7):
    torch.manual_seed(0)
    pair = build({"z_dim": Z, "hidden": [5], "activation": "softplus", "batch_norm": False,
                  "alpha": alpha}, Info())
    return pair


def hand_bound(pair, x, y_value, eps, beta):
    """log p(x|y,z) + beta (log p(y) + log p(z) - log q(z|x,y)) for z = loc + eps * scale."""
    q, p = pair.q, pair.p
    onehot = F.one_hot(torch.full((len(x),), y_value), K).float()
    loc, scale = q.z_head(q.encoder(x, onehot))
    z = loc + eps * scale
    log_px = td.Bernoulli(logits=p.x_logits(p.decoder(z, onehot))).log_prob(x).sum(-1)
    log_pz = td.Normal(0.0, 1.0).log_prob(z).sum(-1)
    log_qz = td.Normal(loc, scale).log_prob(z).sum(-1)
    return log_px + beta * (-math.log(K) + log_pz - log_qz)


@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_unlabelled_elbo_equals_explicit_sum_over_labels(beta):
    pair = tiny_pair()
    x = torch.bernoulli(torch.full((B, D), 0.4))
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    pyro.set_rng_seed(1)
    loss = elbo.differentiable_loss(pair.model, pair.guide, x, None, beta=beta)
    # The enumerated guide draws one z per (label, point): the same standard-normal noise again.
    pyro.set_rng_seed(1)
    eps = torch.randn(K, B, Z)
    log_q_y = torch.log_softmax(pair.q.classifier(x), -1)  # (B, K)
    q_y = log_q_y.exp()
    bounds = torch.stack([hand_bound(pair, x, k, eps[k], beta) for k in range(K)], -1)
    expected = (q_y * bounds).sum(-1) - beta * (q_y * log_q_y).sum(-1)
    assert torch.allclose(-loss, expected.sum(), rtol=1e-5, atol=1e-5)


def test_labelled_bound_includes_classification_term():
    alpha, beta = 0.7, 0.5
    pair = tiny_pair(alpha)
    x = torch.bernoulli(torch.full((B, D), 0.4))
    y = torch.tensor([0, 2, 1, 2])
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    pyro.set_rng_seed(2)
    loss = elbo.differentiable_loss(pair.model, pair.guide, x, y, beta=beta)
    pyro.set_rng_seed(2)
    eps = torch.randn(B, Z)
    log_q_y = torch.log_softmax(pair.q.classifier(x), -1)
    expected = 0.0
    for b in range(B):
        bound = hand_bound(pair, x[b:b + 1], int(y[b]), eps[b:b + 1], beta)
        expected = expected + bound.sum() + alpha * log_q_y[b, y[b]]
    assert torch.allclose(-loss, expected, rtol=1e-5, atol=1e-5)


def test_classification_term_gradient_points_towards_the_labels():
    """One gradient step on the labelled objective raises q(y_true | x) (fails if the sign flips)."""
    pair = tiny_pair(alpha=50.0)
    x = torch.bernoulli(torch.full((8, D), 0.5))
    y = torch.arange(8) % K
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    opt = torch.optim.SGD(pair.q.classifier.parameters(), lr=1e-3)

    def log_lik():
        return torch.log_softmax(pair.q.classifier(x), -1)[torch.arange(8), y].sum().item()

    before = log_lik()
    for _ in range(5):
        loss, _ = semi_supervised_loss(pair, elbo, x, y, x, beta=1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert log_lik() > before


def test_x_projection_is_computed_once_per_point_under_enumeration():
    pair = tiny_pair()
    x = torch.bernoulli(torch.full((B, D), 0.4))
    shapes = []
    handle = pair.q.encoder.inputs[0].register_forward_hook(
        lambda mod, inp, out: shapes.append(tuple(out.shape)))
    TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(pair.model, pair.guide, x, None)
    handle.remove()
    assert shapes == [(B, 5)]
