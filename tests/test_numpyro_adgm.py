"""NumPyro ADGM and SDGM: the enumerated ELBO against bounds written out by hand in jax.numpy with
the same noise (one ``a`` per data point, shared by every label), the labelled bound with the
classification term, the authors' particle weighting, the sampling classifier, the weights of the
Pyro pair giving the same ELBO, and a short CLI run on digits.

The noise is fixed with a ``substitute_fn`` that draws the guide's Gaussian sites as
loc + eps * scale for given eps: the values stay functions of the guide's networks (and of the
enumerated y, for z), so ``TraceEnum_ELBO`` scores them as it scores its own draws.
"""

import json
import math
import warnings
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro import handlers
from numpyro.infer import TraceEnum_ELBO

from ppl_dgm import registry, results
from ppl_dgm.cli import main
from ppl_dgm.nn.flax_blocks import apply

X_DIM, K, A_DIM, Z_DIM, B = 6, 3, 2, 2, 4
ALPHA, BETA = 0.7, 0.6


class Info:
    x_dim, n_classes = X_DIM, K


def tiny_pair(name, num_particles=1, average=True, batch_norm=False, hidden=(5,), log_mean=True):
    hparams = {"a_dim": A_DIM, "z_dim": Z_DIM, "hidden": list(hidden), "activation": "tanh",
               "batch_norm": batch_norm, "average_y_over_particles": average, "alpha": ALPHA,
               "num_particles": num_particles, "classification_log_mean": log_mean}
    return registry.get(name, "numpyro").builder()(hparams, Info())


def _traced_params(pair):
    x = jnp.zeros((2, X_DIM))
    guide_trace = handlers.trace(handlers.seed(pair.guide, 0)).get_trace(x, None)
    model_trace = handlers.trace(handlers.seed(handlers.replay(pair.model, guide_trace),
                                               0)).get_trace(x, None)
    return {name: site["value"] for trace in (guide_trace, model_trace)
            for name, site in trace.items() if site["type"] in ("param", "mutable")}


_SHAPES = {}


def init_params(name, seed=0):
    """Random parameters with the programs' own structure (``jax.eval_shape`` of their
    initialisation), drawn by numpy: N(0, 0.5^2) weights and biases, none of them zero. (Compiling
    the initialisation, random initialisers included, costs seconds; eager JAX would compile each
    operation for each new shape.)"""
    if name not in _SHAPES:
        _SHAPES[name] = jax.eval_shape(partial(_traced_params, tiny_pair(name)))
    rng = np.random.default_rng(seed + 100)
    return jax.tree.map(lambda s: 0.5 * rng.standard_normal(s.shape).astype(np.float32),
                        _SHAPES[name])


def binary(seed, shape):
    return (np.random.default_rng(seed).random(shape) < 0.5).astype(np.float32)


def normal(seed, shape):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _normal_base(fn):
    while not hasattr(fn, "loc"):
        fn = fn.base_dist
    return fn


def fixed_noise(eps):
    """A ``substitute_fn``: the guide's Gaussian site ``name`` is loc + eps[name] * scale."""

    def value(msg):
        if msg["type"] == "sample" and msg["name"] in eps:
            base = _normal_base(msg["fn"])
            return base.loc + eps[msg["name"]] * base.scale
        return None

    return value


def enum_loss(pair, params, x, y, eps, hand=None):
    """The TraceEnum_ELBO loss (beta = BETA) with fixed noise, ``hand(params)`` (compiled with it:
    one XLA compilation, not one per operation), and the shapes of the guide's sites in each run."""
    runs = []

    def guide(*args, **kwargs):
        trace = handlers.trace(handlers.substitute(pair.guide, substitute_fn=fixed_noise(eps))
                               ).get_trace(*args, **kwargs)
        runs.append({k: tuple(s["value"].shape) for k, s in trace.items() if s["type"] == "sample"})

    elbo = TraceEnum_ELBO(max_plate_nesting=pair.max_plate_nesting)

    def both(p):
        loss = elbo.loss(jax.random.PRNGKey(3), p, pair.model, guide, x, y, beta=BETA)
        return loss, (hand(p) if hand is not None else None)

    loss, expected = jax.jit(both)(params)
    return loss, expected, runs


# ------------------------------------------------------------------ the bounds, by hand
def log_normal(v, loc, scale):
    return (-0.5 * ((v - loc) / scale) ** 2 - jnp.log(scale) - 0.5 * math.log(2 * math.pi)).sum(-1)


def log_bernoulli(x, logits):
    return (x * logits - jnp.logaddexp(0.0, logits)).sum(-1)


def net(pair_part, params, name, *inputs):
    return apply(getattr(pair_part, name), params, name, *inputs, train=False)


def q_a(pair, params, x):
    return net(pair.guide, params, "q_a", x)


def log_q_y(pair, params, x, a):
    logits = net(pair.guide, params, "q_y", x, a)
    return logits - jax.scipy.special.logsumexp(logits, -1, keepdims=True)


def inner_bound(name, pair, params, x, a, y_onehot, z, beta):
    """log p(x | .) + beta (log p(y) + log p(z) + log p(a | .) - log q(z | a, y, x)), per point.

    ADGM: p(x | y, z) p(a | x, y, z); SDGM: p(a | y, z) p(x | a, y, z).
    """
    if name == "adgm":
        log_px = log_bernoulli(x, net(pair.model, params, "p_x", z, y_onehot))
        log_pa = log_normal(a, *net(pair.model, params, "p_a", x, y_onehot, z))
    else:
        log_pa = log_normal(a, *net(pair.model, params, "p_a", z, y_onehot))
        log_px = log_bernoulli(x, net(pair.model, params, "p_x", a, z, y_onehot))
    log_qz = log_normal(z, *net(pair.guide, params, "q_z", x, a, y_onehot))
    return log_px + beta * (-math.log(K) + log_normal(z, 0.0, 1.0) + log_pa - log_qz)


def hand_unlabelled(name, pair, params, x, eps_a, eps_z, beta, probs=None):
    """-beta log q(a|x) + sum_y q(y) (inner(y) - beta log q(y)), one a per point for every y.

    ``probs`` replaces q(y | a, x) as the label's weights (the particles' average)."""
    loc, scale = q_a(pair, params, x)
    a = loc + eps_a * scale
    if probs is None:
        probs = jnp.exp(log_q_y(pair, params, x, a))
    total = -beta * log_normal(a, loc, scale)
    for k in range(K):
        y_k = jnp.broadcast_to(jax.nn.one_hot(k, K), (len(x), K))
        qz_loc, qz_scale = net(pair.guide, params, "q_z", x, a, y_k)
        z = qz_loc + eps_z[k] * qz_scale
        inner = inner_bound(name, pair, params, x, a, y_k, z, beta)
        total = total + probs[:, k] * (inner - beta * jnp.log(probs[:, k]))
    return total


NAMES = ["adgm", "sdgm"]


@pytest.mark.parametrize("name", NAMES)
def test_unlabelled_bound_is_the_sum_over_labels_with_one_a(name):
    pair = tiny_pair(name)
    params = init_params(name)
    x = binary(1, (B, X_DIM))
    eps_a, eps_z = normal(2, (B, A_DIM)), normal(3, (K, B, Z_DIM))
    loss, expected, runs = enum_loss(
        pair, params, x, None, {"a": eps_a, "z": eps_z},
        lambda p: hand_unlabelled(name, pair, p, x, eps_a, eps_z, BETA).sum())
    np.testing.assert_allclose(-loss, expected, rtol=1e-5, atol=1e-4)
    # the run that enumerated y: one a per data point (no enumeration dimension), one z per label
    enumerated = [run for run in runs if run["y"] == (K, 1)]
    assert enumerated, runs
    assert all(run["a"] == (B, A_DIM) for run in runs), runs
    assert all(run["z"] == (K, B, Z_DIM) for run in enumerated), enumerated


@pytest.mark.parametrize("name", NAMES)
def test_labelled_bound_with_classification_term(name):
    pair = tiny_pair(name)
    params = init_params(name, seed=1)
    x, y = binary(4, (B, X_DIM)), jnp.array([0, 2, 1, 2])
    eps_a, eps_z = normal(5, (B, A_DIM)), normal(6, (B, Z_DIM))

    def hand(p):
        loc, scale = q_a(pair, p, x)
        a = loc + eps_a * scale
        y_onehot = jax.nn.one_hot(y, K)
        qz_loc, qz_scale = net(pair.guide, p, "q_z", x, a, y_onehot)
        z = qz_loc + eps_z * qz_scale
        bound = inner_bound(name, pair, p, x, a, y_onehot, z, BETA) - BETA * log_normal(a, loc, scale)
        classification = ALPHA * log_q_y(pair, p, x, a)[jnp.arange(B), y]
        return (bound + classification).sum()

    loss, expected, runs = enum_loss(pair, params, x, y, {"a": eps_a, "z": eps_z}, hand)
    assert all(run["a"] == (B, A_DIM) and run["z"] == (B, Z_DIM) for run in runs), runs
    np.testing.assert_allclose(-loss, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name, average", [("adgm", False), ("sdgm", True)])
def test_particles_are_a_plate_with_the_authors_label_weights(name, average):
    """S particles: a per particle and point, no enumeration dimension; the label's weights are
    qbar(y|x) = mean_s q(y|a_s,x) (``average``) or q(y|a_s,x); the ELBO is the particles' mean."""
    S = 3
    pair = tiny_pair(name, num_particles=S, average=average)
    assert pair.max_plate_nesting == 2 and pair.particles_in_program
    params = init_params(name, seed=2)
    x = binary(7, (B, X_DIM))
    eps_a, eps_z = normal(8, (S, B, A_DIM)), normal(9, (K, S, B, Z_DIM))

    def hand(p):
        loc, scale = q_a(pair, p, x)
        probs = jnp.exp(log_q_y(pair, p, x, loc + eps_a * scale))         # (S, B, K)
        if average:
            probs = jnp.broadcast_to(probs.mean(0), probs.shape)
        return sum(hand_unlabelled(name, pair, p, x, eps_a[s], eps_z[:, s], BETA, probs[s]).sum()
                   for s in range(S)) / S

    loss, expected, runs = enum_loss(pair, params, x, None, {"a": eps_a, "z": eps_z}, hand)
    assert all(run["a"] == (S, B, A_DIM) for run in runs), runs
    assert [run["z"] for run in runs if run["y"] == (K, 1, 1)] == [(K, S, B, Z_DIM)], runs
    np.testing.assert_allclose(-loss, expected, rtol=1e-5, atol=1e-4)
    # evaluation (train=False) draws one a per point: an ordinary ELBO estimate
    def eval_a(p):
        guide = handlers.seed(handlers.substitute(pair.guide, data=p), 0)
        return handlers.trace(guide).get_trace(x, None, train=False)["a"]["value"]

    assert jax.eval_shape(eval_a, params).shape == (B, A_DIM)


@pytest.mark.parametrize("name, log_mean", [("adgm", False), ("sdgm", True)])
def test_labelled_particles_classification_term(name, log_mean):
    """S particles, labelled: alpha * log (1/S sum_s q(y|a_s,x)) (the authors', default) or the mean
    over particles of alpha * log q(y|a_s,x); the ELBO is the particles' mean."""
    S = 3
    pair = tiny_pair(name, num_particles=S, log_mean=log_mean)
    params = init_params(name, seed=4)
    x, y = binary(12, (B, X_DIM)), jnp.array([0, 2, 1, 2])
    eps_a, eps_z = normal(13, (S, B, A_DIM)), normal(14, (S, B, Z_DIM))

    def hand(p):
        loc, scale = q_a(pair, p, x)
        a = loc + eps_a * scale                                              # (S, B, A)
        y_onehot = jax.nn.one_hot(y, K)
        bounds = []
        for s in range(S):
            qz_loc, qz_scale = net(pair.guide, p, "q_z", x, a[s], y_onehot)
            z = qz_loc + eps_z[s] * qz_scale
            bounds.append(inner_bound(name, pair, p, x, a[s], y_onehot, z, BETA)
                          - BETA * log_normal(a[s], loc, scale))
        log_qy = log_q_y(pair, p, x, a)[:, jnp.arange(B), y]                # (S, B)
        term = (jax.scipy.special.logsumexp(log_qy, 0) - math.log(S) if log_mean
                else log_qy.mean(0))
        return (sum(bounds) / S + ALPHA * term).sum()

    loss, expected, runs = enum_loss(pair, params, x, y, {"a": eps_a, "z": eps_z}, hand)
    np.testing.assert_allclose(-loss, expected, rtol=1e-5, atol=1e-4)


def test_classify_averages_q_y_over_draws_of_a():
    """(The guide, and so its classifier, is the same class for ADGM and SDGM.)"""
    pair = tiny_pair("adgm")
    params = init_params("adgm", seed=3)
    x, S = binary(10, (B, X_DIM)), 7
    key = jax.random.PRNGKey(11)

    def both(p):
        # chunks of 3: two through the scan, the last sample on its own
        probs = pair.guide.classify(p, x, num_samples=S, rng_key=key, chunk_size=3)
        loc, scale = q_a(pair, p, x)
        eps = jax.random.normal(key, (S, B, A_DIM))
        hand = sum(jnp.exp(log_q_y(pair, p, x, loc + scale * eps[s])) for s in range(S)) / S
        return probs, hand, jnp.exp(log_q_y(pair, p, x, loc))

    probs, hand, at_mean = jax.jit(both)(params)
    np.testing.assert_allclose(probs, hand, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probs.sum(-1), np.ones(B), rtol=1e-5)
    # an average over draws of a, not q(y | E[a], x)
    assert not np.allclose(probs, at_mean, atol=1e-4)
    with pytest.raises(ValueError, match="rng_key"):
        pair.classify(params, x, num_samples=S)


def test_bad_particle_counts_are_refused():
    with pytest.raises(ValueError, match="num_particles"):
        tiny_pair("adgm", num_particles=0)


# ------------------------------------------------------------------ the Pyro pair's weights
def _torch_to_flax(mlp, head):
    """Flax parameters of a (Logits|Gaussian)MLP from a torch MultiInputMLP and its head."""
    from torch import nn

    def linear(layer, bias=True):
        out = {"kernel": jnp.asarray(layer.weight.detach().numpy().T)}
        if bias:
            out["bias"] = jnp.asarray(layer.bias.detach().numpy())
        return out

    params = {"mlp": {f"input_{i}": linear(layer, bias=i == 0)
                      for i, layer in enumerate(mlp.inputs)}}
    rest = [m for m in mlp.rest if isinstance(m, nn.Linear)]
    params["mlp"].update({f"dense_{i}": linear(layer) for i, layer in enumerate(rest, start=1)})
    if isinstance(head, nn.Linear):
        params["logits"] = linear(head)
    else:
        params["head"] = {"loc": linear(head.loc), "logvar": linear(head.logvar)}
    return params


@pytest.mark.parametrize("name", NAMES)
def test_pyro_weights_give_the_same_elbo(name):
    """The Pyro pair's networks copied into the NumPyro pair: the same unlabelled and labelled
    ELBO with the same noise (the two programs agree on sites, scales and network inputs)."""
    import pyro
    import torch
    from pyro import poutine
    from pyro.infer import TraceEnum_ELBO as PyroTraceEnum

    class FixNoise(poutine.messenger.Messenger):
        def __init__(self, eps):
            super().__init__()
            self.eps = eps

        def _pyro_sample(self, msg):
            if msg["name"] in self.eps:
                base = _normal_base(msg["fn"])
                msg["value"] = base.loc + self.eps[msg["name"]] * base.scale

    hidden = [5, 4]
    torch.manual_seed(0)
    hparams = {"a_dim": A_DIM, "z_dim": Z_DIM, "hidden": hidden, "activation": "tanh",
               "batch_norm": False, "average_y_over_particles": True, "alpha": ALPHA}
    torch_pair = registry.get(name).builder()(hparams, Info())
    p, q = torch_pair.p, torch_pair.q
    pair = tiny_pair(name, hidden=hidden)
    params = {"q_a$params": _torch_to_flax(q.a_net, q.a_head),
              "q_y$params": _torch_to_flax(q.y_net, q.y_logits),
              "q_z$params": _torch_to_flax(q.z_net, q.z_head),
              "p_x$params": _torch_to_flax(p.x_net, p.x_logits),
              "p_a$params": _torch_to_flax(p.a_net, p.a_head)}

    x, y = binary(12, (B, X_DIM)), jnp.array([1, 0, 2, 2])
    eps_a, eps_z = normal(13, (B, A_DIM)), normal(14, (K, B, Z_DIM))
    for labels, eps in ((None, {"a": eps_a, "z": eps_z}), (y, {"a": eps_a, "z": eps_z[0]})):
        loss, _, _ = enum_loss(pair, params, x, labels, eps)

        def guide(*args, eps=eps, **kwargs):
            with FixNoise({k: torch.tensor(np.asarray(v)) for k, v in eps.items()}):
                q(*args, **kwargs)

        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", "TraceEnum_ELBO found no sample sites")
            pyro_loss = PyroTraceEnum(max_plate_nesting=1).loss(
                p, guide, torch.tensor(np.asarray(x)),
                None if labels is None else torch.tensor(np.asarray(labels)).long(), beta=BETA)
        pyro.clear_param_store()
        np.testing.assert_allclose(float(loss), pyro_loss, rtol=1e-5, atol=1e-4)


# ------------------------------------------------------------------ the trainer and the CLI
def test_registered_like_pyro_and_the_trainer_hands_the_particles_to_the_programs(tmp_path):
    from ppl_dgm.config import resolve
    from ppl_dgm.training.numpyro_loop import NumPyroTrainer

    for name in NAMES:
        spec, pyro_spec = registry.get(name, "numpyro"), registry.get(name, "pyro")
        assert spec.build == f"ppl_dgm.models.{name}_numpyro:build"
        assert (spec.hparams, spec.train) == (pyro_spec.hparams, pyro_spec.train)
    config = resolve(registry.get("sdgm", "numpyro"), {"dataset": "digits", "labels": 50,
                                                       "device": "cpu"},
                     {"hidden": [8], "a_dim": 2, "z_dim": 2})
    assert config.num_particles == 5 and config.classify_samples == 100
    # initialise=False: the SVI state's structure only (nothing compiled)
    trainer = NumPyroTrainer(config, tmp_path, progress=False, initialise=False)
    assert trainer.pair.guide.num_particles == trainer.pair.model.num_particles == 5
    assert trainer.pair.max_plate_nesting == 2
    assert trainer.elbo.num_particles == 1  # not 5 x 5 particles


def test_cli_numpyro_adgm_on_digits_writes_a_finite_summary(tmp_path):
    """Two particles (a plate inside the programs; the trainer's ELBO runs one), 5 samples of a
    per prediction, one epoch of tiny networks (registered defaults otherwise: batch norm on).

    The CLI runs in this process, with the session's XLA flags (conftest.py: optimisation passes
    off; the compilations dominate this run)."""
    out = tmp_path / "run"
    args = ["train", "adgm", "--backend", "numpyro", "--dataset", "digits", "--labels", "50",
            "--epochs", "1", "--device", "cpu", "--out", str(out), "--no-progress",
            "--num-particles", "2", "--classify-samples", "5",
            "--set", "hidden=[16]", "--set", "a_dim=4", "--set", "z_dim=4"]
    assert main(args) == 0
    summary = json.loads((out / results.SUMMARY).read_text())
    assert summary["backend"] == "numpyro" and summary["model"] == "adgm"
    assert summary["config"]["num_particles"] == 2 and summary["config"]["classify_samples"] == 5
    assert 0.0 <= summary["test_error"] <= 1.0
    assert math.isfinite(summary["test_elbo"]) and summary["test_elbo"] < 0
    # the KL per site, and the a-term apart (no KL: ppl_dgm.infer.auxiliary_diagnostics)
    assert set(summary["kl"]) == {"y", "z"} and math.isfinite(summary["a_term"])
    assert all(math.isfinite(v) for v in summary["kl"].values()), summary["kl"]
    assert (out / "checkpoint.pkl").is_file()
