"""ADGM and SDGM: the enumerated ELBO against a hand-written sum over labels with a shared ``a``.

The hand-written bounds use ``torch.distributions`` and the pair's networks as plain functions; the
noise is fixed by capturing the guide trace that Pyro's ``TraceEnum_ELBO`` itself used (the guide
is wrapped in an inner ``poutine.trace``), so the hand sum sees the very ``a`` and per-label ``z``
samples of the Pyro loss.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO
from torch.distributions import Bernoulli, Normal
from torch.nn import functional as F

from ppl_dgm import registry, results
from ppl_dgm.config import resolve
from ppl_dgm.training.loop import Trainer

X_DIM, K, A_DIM, Z_DIM, B = 6, 3, 2, 2, 4
ALPHA = 0.7


def tiny_pair(name: str, batch_norm: bool = False, average: bool = True, log_mean: bool = True):
    hparams = {"a_dim": A_DIM, "z_dim": Z_DIM, "hidden": [5], "activation": "tanh",
               "batch_norm": batch_norm, "average_y_over_particles": average, "alpha": ALPHA,
               "classification_log_mean": log_mean}
    return registry.get(name).builder()(hparams, SimpleNamespace(x_dim=X_DIM, n_classes=K))


def data():
    g = torch.Generator().manual_seed(3)
    x = torch.bernoulli(torch.full((B, X_DIM), 0.5), generator=g)
    y = torch.tensor([0, 2, 1, 2])
    return x, y


def pyro_loss_and_trace(pair, x, y, num_particles=1):
    """The TraceEnum_ELBO loss and the guide trace (values) it was computed with."""
    captured = {}

    def guide(*args, **kwargs):
        trace = poutine.trace(pair.guide).get_trace(*args, **kwargs)
        captured["trace"] = trace

    elbo = TraceEnum_ELBO(max_plate_nesting=1, num_particles=num_particles,
                          vectorize_particles=num_particles > 1)
    loss = elbo.differentiable_loss(pair.model, guide, x, y)
    return loss, captured["trace"]


def log_joint_minus_qz(name, pair, x, a, y_onehot, z):
    """log p(x, y, z, a) - log q(z | a, y, x) for one label (all tensors broadcast)."""
    p, q = pair.p, pair.q
    log_py = -math.log(K)
    log_pz = Normal(0.0, 1.0).log_prob(z).sum(-1)
    if name == "adgm":
        log_px = Bernoulli(logits=p.x_logits(p.x_net(z, y_onehot))).log_prob(x).sum(-1)
        log_pa = Normal(*p.a_head(p.a_net(x, y_onehot, z))).log_prob(a).sum(-1)
    else:
        log_pa = Normal(*p.a_head(p.a_net(z, y_onehot))).log_prob(a).sum(-1)
        log_px = Bernoulli(logits=p.x_logits(p.x_net(a, z, y_onehot))).log_prob(x).sum(-1)
    log_qz = Normal(*q.q_z(x, a, y_onehot)).log_prob(z).sum(-1)
    return log_px + log_py + log_pz + log_pa - log_qz


@pytest.mark.parametrize("name", ["adgm", "sdgm"])
def test_unlabelled_bound_is_the_sum_over_labels_with_one_a(name):
    pyro.set_rng_seed(0)
    pair = tiny_pair(name)
    x, _ = data()
    loss, trace = pyro_loss_and_trace(pair, x, None)

    a = trace.nodes["a"]["value"]
    z = trace.nodes["z"]["value"]
    # a has no enumeration dimension: one a per data point, shared by every label
    assert a.shape == (B, A_DIM)
    assert trace.nodes["a"]["fn"].batch_shape == (B,)
    assert "_enumerate_dim" not in trace.nodes["a"]["infer"]
    assert trace.nodes["y"]["infer"].get("_enumerate_dim") is not None
    assert trace.nodes["y"]["value"].shape == (K, 1)
    assert z.shape == (K, B, Z_DIM)  # one z per label

    q = pair.q
    log_qa = Normal(*q.q_a(x)).log_prob(a).sum(-1)
    log_qy = torch.log_softmax(q.q_y_logits(x, a), -1)
    bound = -log_qa
    for k in range(K):
        y_k = F.one_hot(torch.full((B,), k), K).float()
        inner = log_joint_minus_qz(name, pair, x, a, y_k, z[k]) - log_qy[:, k]
        bound = bound + log_qy[:, k].exp() * inner
    torch.testing.assert_close(loss, -bound.sum(), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name", ["adgm", "sdgm"])
def test_labelled_bound_with_classification_term(name):
    pyro.set_rng_seed(1)
    pair = tiny_pair(name)
    x, y = data()
    loss, trace = pyro_loss_and_trace(pair, x, y)
    a, z = trace.nodes["a"]["value"], trace.nodes["z"]["value"]
    assert a.shape == (B, A_DIM) and z.shape == (B, Z_DIM)
    q = pair.q
    y_onehot = F.one_hot(y, K).float()
    log_qa = Normal(*q.q_a(x)).log_prob(a).sum(-1)
    bound = log_joint_minus_qz(name, pair, x, a, y_onehot, z) - log_qa
    log_qy = torch.log_softmax(q.q_y_logits(x, a), -1).gather(-1, y[:, None])[:, 0]
    torch.testing.assert_close(loss, -(bound + ALPHA * log_qy).sum(), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name", ["adgm", "sdgm"])
@pytest.mark.parametrize("average", [True, False])
def test_vectorised_particles(name, average):
    """S particles: the authors' qbar(y|x) = mean_s q(y|a_s,x) weighting, or one q(y|a_s,x) each."""
    S = 3
    pyro.set_rng_seed(2)
    pair = tiny_pair(name, average=average)
    x, _ = data()
    loss, trace = pyro_loss_and_trace(pair, x, None, num_particles=S)
    a, z = trace.nodes["a"]["value"], trace.nodes["z"]["value"]
    assert a.shape == (S, B, A_DIM)          # particles, but no enumeration dimension
    assert z.shape == (K, S, B, Z_DIM)

    q = pair.q
    log_qa = Normal(*q.q_a(x)).log_prob(a).sum(-1)                       # (S, B)
    probs = torch.softmax(q.q_y_logits(x, a), -1)                        # (S, B, K)
    if average:
        probs = probs.mean(0, keepdim=True).expand(S, B, K)
    total = 0.0
    for s in range(S):
        bound = -log_qa[s]
        for k in range(K):
            y_k = F.one_hot(torch.full((B,), k), K).float()
            inner = log_joint_minus_qz(name, pair, x, a[s], y_k, z[k, s]) - probs[s, :, k].log()
            bound = bound + probs[s, :, k] * inner
        total = total + bound.sum()
    torch.testing.assert_close(loss, -total / S, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name", ["adgm", "sdgm"])
@pytest.mark.parametrize("log_mean", [True, False])
def test_labelled_particles_classification_term(name, log_mean):
    """S particles, labelled: the authors' alpha * log (1/S sum_s q(y|a_s,x)) (default) or the mean
    over particles of alpha * log q(y|a_s,x); values and the gradient of q(y|a,x)'s output layer."""
    S = 3
    pyro.set_rng_seed(4)
    pair = tiny_pair(name, log_mean=log_mean)
    x, y = data()
    loss, trace = pyro_loss_and_trace(pair, x, y, num_particles=S)
    a, z = trace.nodes["a"]["value"], trace.nodes["z"]["value"]
    assert a.shape == (S, B, A_DIM) and z.shape == (S, B, Z_DIM)
    q = pair.q
    y_onehot = F.one_hot(y, K).float()
    log_qa = Normal(*q.q_a(x)).log_prob(a).sum(-1)                                  # (S, B)
    bound = torch.stack([log_joint_minus_qz(name, pair, x, a[s], y_onehot, z[s]) for s in range(S)])
    log_qy = torch.log_softmax(q.q_y_logits(x, a), -1).gather(
        -1, y[None, :, None].expand(S, B, 1))[..., 0]                                # (S, B)
    if log_mean:
        term = torch.logsumexp(log_qy, 0) - math.log(S)                              # (B,)
    else:
        term = log_qy.mean(0)
    hand = -((bound - log_qa).mean(0) + ALPHA * term).sum()
    torch.testing.assert_close(loss, hand, rtol=1e-5, atol=1e-4)
    # the gradient reaching q(y | a, x)'s output layer is the classification term's alone
    weight = q.y_logits.weight
    (g_loss,) = torch.autograd.grad(loss, weight, retain_graph=True)
    (g_hand,) = torch.autograd.grad(-ALPHA * term.sum(), weight)
    assert g_hand.abs().max() > 1e-3
    torch.testing.assert_close(g_loss, g_hand, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["adgm", "sdgm"])
def test_classify_averages_over_samples_of_a(name):
    pair = tiny_pair(name, batch_norm=True).eval()
    x, _ = data()
    S = 7
    torch.manual_seed(5)
    probs = pair.classify(x, S)

    torch.manual_seed(5)
    q = pair.q
    loc, scale = q.q_a(x)
    eps = torch.randn(S, B, A_DIM)
    hand = sum(torch.softmax(q.q_y_logits(x, loc + scale * eps[s]), -1) for s in range(S)) / S
    torch.testing.assert_close(probs, hand)
    torch.testing.assert_close(probs.sum(-1), torch.ones(B))
    # it is an average over samples, not q(y | E[a], x)
    at_mean = torch.softmax(q.q_y_logits(x, loc), -1)
    assert not torch.allclose(probs, at_mean)


def test_batch_norm_pair_trains_and_reports_the_a_term(tmp_path):
    """A two-step run on the digits: finite losses, the KL of ``z`` per site and the a-term of the
    bound apart (``a_term``: for a it is no KL), and the diagnostics of a."""
    overrides = {"dataset": "digits", "epochs": 1, "steps_per_epoch": 2, "batch_size": 20,
                 "labelled_batch_size": 20, "labels": 50, "classify_samples": 3,
                 "num_particles": 2, "seed": 0}
    config = resolve(registry.get("sdgm"), overrides,
                     {"a_dim": 3, "z_dim": 3, "hidden": [8, 8]})
    assert config.lr == 3e-4 and config.clip_norm == 5.0 and config.lr_decay == 0.75
    summary = Trainer(config, tmp_path, progress=False).fit()
    assert 0.0 <= summary["test_error"] <= 1.0
    assert "a" not in summary["kl"] and "z" in summary["kl"] and math.isfinite(summary["a_term"])
    history = results.read_history(tmp_path / results.HISTORY)
    for name in ("mutual_info_y_a", "a_std", "test_error_a1", "test_error_a100"):
        assert np.isfinite(history[name].values).all(), name
