"""CaGeM's ``labelled_weighting`` (issue 20), both backends: the training step's loss against the
objective written out by hand on a tiny batch, from the latent values the step drew.

    batch_mean:   -( mean_l [L(x, y) + alpha log q(y | z1, x)] + mean_u U(x) )
    data_points:  -( (N_l / N_u) mean_l L(x, y) + alpha mean_l log q(y | z1, x) + mean_u U(x) )

with L the labelled bound and U the unlabelled one (y summed out exactly), each log-density
computed here from the networks, not from the library's traces' scores.
"""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ppl_dgm import registry
from ppl_dgm.errors import UserError

X_DIM, K, ALPHA = 6, 3, 2.0
N_LABELLED, N_UNLABELLED = 6, 30
DATA = SimpleNamespace(x_dim=X_DIM, n_classes=K, n_labelled=N_LABELLED, n_unlabelled=N_UNLABELLED)
WEIGHT = {"batch_mean": 1.0, "data_points": N_LABELLED / N_UNLABELLED}


def hparams(weighting):
    return {"z_dims": [2, 2], "hidden_dims": [5, 4], "activation": "leaky_relu",
            "batch_norm": False, "min_scale": 1e-5 ** 0.5, "classifier_uses_x": True,
            "labelled_weighting": weighting, "alpha": ALPHA}


def batches(seed=0):
    rng = np.random.default_rng(seed)
    x_l = (rng.random((4, X_DIM)) < 0.5).astype(np.float32)
    y_l = np.array([0, 2, 1, 2])
    x_u = (rng.random((5, X_DIM)) < 0.5).astype(np.float32)
    return x_l, y_l, x_u


def normal_lp(x, loc, scale):
    return (-0.5 * ((x - loc) / scale) ** 2 - np.log(scale) - 0.5 * np.log(2 * np.pi)).sum(-1)


def bernoulli_lp(x, logits):
    return (x * logits - np.logaddexp(0.0, logits)).sum(-1)


def log_softmax(logits):
    return logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)


def hand_loss(nets, x_l, y_l, z_l, x_u, z_u, weight):
    """The objective by hand. ``nets`` give numpy arrays: q_z1(x) -> (loc, scale), logits(x, z1),
    q_z2(z1, onehot) -> (loc, scale), p_z1(z2, onehot) -> (loc, scale), p_x(z1) -> logits.
    ``z_l = (z1, z2)`` of the labelled call, ``z_u = (z1, z2 of shape (K, B, d))``."""
    eye = np.eye(K, dtype=np.float32)

    def generative(x, z1, z2, onehot, log_q_z1):
        log_p = (-np.log(K) + normal_lp(z2, 0.0, 1.0) + normal_lp(z1, *nets["p_z1"](z2, onehot))
                 + bernoulli_lp(x, nets["p_x"](z1)))
        return log_p - log_q_z1 - normal_lp(z2, *nets["q_z2"](z1, onehot))

    z1, z2 = z_l
    log_q_z1 = normal_lp(z1, *nets["q_z1"](x_l))
    bound_l = generative(x_l, z1, z2, eye[y_l], log_q_z1)
    log_q_y = log_softmax(nets["logits"](x_l, z1))[np.arange(len(y_l)), y_l]
    z1, z2 = z_u
    log_q_z1 = normal_lp(z1, *nets["q_z1"](x_u))
    log_q = log_softmax(nets["logits"](x_u, z1))  # (B, K)
    q = np.exp(log_q)
    per_k = np.stack([generative(x_u, z1, z2[k], np.broadcast_to(eye[k], (len(x_u), K)), 0.0)
                      for k in range(K)], -1)
    bound_u = (q * per_k).sum(-1) - log_q_z1 - (q * log_q).sum(-1)
    return -(weight * bound_l.mean() + ALPHA * log_q_y.mean() + bound_u.mean())


def _sample(trace, suffix):
    name = next(n for n in trace if n == suffix or n.endswith("/" + suffix))
    value = trace[name]["value"]
    return np.asarray(value.detach() if hasattr(value, "detach") else value, np.float64)


@pytest.mark.parametrize("weighting", ["batch_mean", "data_points"])
def test_pyro_labelled_weighting_against_the_objective_by_hand(weighting):
    from pyro import poutine
    from pyro.infer import TraceEnum_ELBO

    from ppl_dgm.infer.objectives import semi_supervised_loss

    torch.manual_seed(0)
    pair = registry.get("cagem").builder()(hparams(weighting), DATA)
    p, q = pair.p, pair.q
    assert p.labelled_weight == q.labelled_weight == pytest.approx(WEIGHT[weighting])
    traces = []

    def guide(*args, **kwargs):
        handler = poutine.trace(pair.guide)
        out = handler(*args, **kwargs)
        traces.append({n: s for n, s in handler.trace.nodes.items() if s["type"] == "sample"})
        return out

    x_l, y_l, x_u = batches()
    t = {k: torch.as_tensor(v) for k, v in zip(("x_l", "y_l", "x_u"), batches(), strict=True)}
    loss, stats = semi_supervised_loss(SimpleNamespace(model=pair.model, guide=guide),
                                       TraceEnum_ELBO(max_plate_nesting=1), t["x_l"], t["y_l"],
                                       t["x_u"], beta=1.0)
    labelled, unlabelled = traces[-2], traces[-1]
    with torch.no_grad():

        def gaussian(net):
            return lambda *a: tuple(np.asarray(v, np.float64) for v in net(
                *[torch.as_tensor(np.asarray(u, np.float32)) for u in a]))

        nets = {"q_z1": gaussian(q.q_z1), "q_z2": gaussian(q.q_z2), "p_z1": gaussian(p.p_z1),
                "logits": lambda x, z1: q.logits(torch.as_tensor(x), torch.as_tensor(
                    np.asarray(z1, np.float32))).double().numpy(),
                "p_x": lambda z1: p.logits(p.decoder(torch.as_tensor(
                    np.asarray(z1, np.float32)))).double().numpy()}
        expected = hand_loss(nets, x_l, y_l, (_sample(labelled, "z1"), _sample(labelled, "z2")),
                             x_u, (_sample(unlabelled, "z1"), _sample(unlabelled, "z2")),
                             WEIGHT[weighting])
    assert _sample(unlabelled, "z2").shape[0] == K  # the sum over y was enumerated
    np.testing.assert_allclose(float(loss.detach()), expected, rtol=1e-5)
    np.testing.assert_allclose(float(stats["loss"]), expected, rtol=1e-5)


@pytest.mark.parametrize("weighting", ["batch_mean", "data_points"])
def test_numpyro_labelled_weighting_against_the_objective_by_hand(weighting):
    import jax
    import jax.numpy as jnp
    from numpyro import handlers

    from ppl_dgm.infer.numpyro_objectives import EnumELBO, semi_supervised
    from ppl_dgm.nn.flax_blocks import apply

    pair = registry.get("cagem", "numpyro").builder()(hparams(weighting), DATA)
    p, q = pair.model, pair.guide
    assert p.labelled_weight == q.labelled_weight == pytest.approx(WEIGHT[weighting])
    x_l, y_l, x_u = batches()
    model, guide = semi_supervised(pair.model), semi_supervised(pair.guide)
    args = (jnp.asarray(x_l), jnp.asarray(y_l), jnp.asarray(x_u))
    guide_trace = handlers.trace(handlers.seed(guide, 0)).get_trace(*args)
    model_trace = handlers.trace(handlers.seed(handlers.replay(model, guide_trace),
                                               1)).get_trace(*args)
    rng = np.random.default_rng(3)  # parameters away from their initialisation
    params = {name: jax.tree_util.tree_map(
        lambda a: jnp.asarray(0.5 * rng.standard_normal(a.shape), a.dtype), site["value"])
        for tr in (guide_trace, model_trace) for name, site in tr.items()
        if site["type"] == "param"}
    traces = []

    def capturing(x, y=None, **kwargs):
        with handlers.trace() as tr:
            out = pair.guide(x, y, **kwargs)
        traces.append({n: s for n, s in tr.items() if s["type"] == "sample"})
        return out

    loss = EnumELBO(1, 1).loss(jax.random.PRNGKey(7), params, model,
                               semi_supervised(capturing), *args, beta=1.0)
    labelled, unlabelled = traces[-2], traces[-1]

    def gaussian(module, name):
        return lambda *a: tuple(np.asarray(v, np.float64) for v in apply(
            module, params, name, *[jnp.asarray(u, jnp.float32) for u in a])[1:])

    nets = {"q_z1": gaussian(q.q_z1, "q_z1"), "q_z2": gaussian(q.q_z2, "q_z2"),
            "p_z1": gaussian(p.p_z1, "p_z1"),
            "logits": lambda x, z1: np.asarray(apply(q.classifier, params, "classifier",
                                                     jnp.asarray(x), jnp.asarray(z1, jnp.float32)),
                                               np.float64),
            "p_x": lambda z1: np.asarray(apply(p.p_x, params, "p_x", jnp.asarray(z1, jnp.float32)),
                                         np.float64)}
    z2_u = _sample(unlabelled, "z2")
    assert z2_u.shape[0] == K  # the sum over y was enumerated
    expected = hand_loss(nets, x_l, y_l, (_sample(labelled, "z1"), _sample(labelled, "z2")),
                         x_u, (_sample(unlabelled, "z1"), z2_u.reshape(K, len(x_u), -1)),
                         WEIGHT[weighting])
    np.testing.assert_allclose(float(loss), expected, rtol=2e-5)


def test_labelled_weighting_bad_value_and_registered_default():
    assert registry.get("cagem").hparams["labelled_weighting"] == "data_points"
    assert registry.get("cagem", "numpyro").hparams["labelled_weighting"] == "data_points"
    with pytest.raises(UserError, match="labelled_weighting=per_image is not one of"):
        registry.get("cagem").builder()(hparams("per_image"), DATA)
