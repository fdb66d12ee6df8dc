"""NumPyro M2: the enumerated ELBO against the explicit sum over labels written out by hand, the
classification term's sign and gradient, batch-norm state, and a short run of the CLI on digits.

JAX is a test dependency (CI installs the ``jax`` extra): a missing JAX fails this module loudly.
"""

import contextlib
import io
import json
import math
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro import handlers
from numpyro.infer import TraceEnum_ELBO

from ppl_dgm import registry, results
from ppl_dgm.cli import main
from ppl_dgm.infer.numpyro_objectives import EnumELBO, semi_supervised
from ppl_dgm.models.m2_numpyro import build
from ppl_dgm.nn.flax_blocks import apply

K, B, D, Z, H = 3, 4, 7, 2, 5


class Info:
    x_dim, n_classes = D, K


def tiny_pair(alpha=0.7, batch_norm=False):
    return build({"z_dim": Z, "hidden": [H], "activation": "softplus", "batch_norm": batch_norm,
                  "alpha": alpha}, Info())


def _traced_params(pair, seed):
    x = jnp.zeros((2, D))
    guide_trace = handlers.trace(handlers.seed(pair.guide, seed)).get_trace(x, None)
    model_trace = handlers.trace(handlers.seed(handlers.replay(pair.model, guide_trace),
                                               seed)).get_trace(x, None)
    return {name: site["value"] for trace in (guide_trace, model_trace)
            for name, site in trace.items() if site["type"] in ("param", "mutable")}


_INITIAL = {}


def init_params(pair, seed=0):
    """Parameters from the programs' own initialisation, perturbed so that no bias is zero.

    The tiny pairs of this module share their networks' shapes: traced (and compiled) once.
    """
    if "params" not in _INITIAL:
        _INITIAL["params"] = jax.jit(_traced_params, static_argnums=0)(pair, 0)
    leaves, tree = jax.tree.flatten(_INITIAL["params"])
    keys = jax.random.split(jax.random.PRNGKey(seed + 100), len(leaves))
    return jax.tree.unflatten(tree, [v + 0.3 * jax.random.normal(k, v.shape)
                                     for v, k in zip(leaves, keys, strict=True)])


def binary(seed, shape):
    return jax.random.bernoulli(jax.random.PRNGKey(seed), 0.4, shape).astype(jnp.float32)


def log_normal(v, loc, scale):
    return (-0.5 * ((v - loc) / scale) ** 2 - jnp.log(scale) - 0.5 * math.log(2 * math.pi)).sum(-1)


def log_q_y(pair, params, x):
    logits = apply(pair.guide.classifier, params, "classifier", x, train=False)
    return logits - jax.scipy.special.logsumexp(logits, -1, keepdims=True)


def fixed_noise(eps: dict):
    """A ``substitute_fn`` drawing the guide's Gaussian sites as loc + eps * scale with given eps.

    (Substituting z itself would cut z's dependence on the enumerated y, which TraceEnum_ELBO
    tracks to weigh log p(z) by q(y|x).)
    """

    def value(msg):
        if msg["type"] == "sample" and msg["name"] in eps:
            base = msg["fn"].base_dist
            return base.loc + eps[msg["name"]] * base.scale
        return None

    return value


def hand_bound(pair, params, x, y_value, eps, beta):
    """log p(x|y,z) + beta (log p(y) + log p(z) - log q(z|x,y)) per point, written out by hand,
    for z = loc + eps * scale."""
    onehot = jnp.broadcast_to(jax.nn.one_hot(y_value, K), (len(x), K))
    loc, scale = apply(pair.guide.encoder, params, "encoder", x, onehot, train=False)
    z = loc + eps * scale
    logits = apply(pair.model.decoder, params, "decoder", z, onehot, train=False)
    log_px = (x * logits - jnp.logaddexp(0.0, logits)).sum(-1)
    log_pz = log_normal(z, 0.0, 1.0)
    return log_px + beta * (-math.log(K) + log_pz - log_normal(z, loc, scale))


def hand_unlabelled(pair, params, x, eps, beta):
    """sum_y q(y|x) bound(x, y, z_y) - beta sum_y q(y|x) log q(y|x), per point."""
    lq = log_q_y(pair, params, x)
    bounds = jnp.stack([hand_bound(pair, params, x, k, eps[k], beta) for k in range(K)], -1)
    q = jnp.exp(lq)
    return (q * bounds).sum(-1) - beta * (q * lq).sum(-1)


@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_unlabelled_elbo_equals_explicit_sum_over_labels(beta):
    pair = tiny_pair()
    params = init_params(pair)
    x = binary(1, (B, D))
    # One z per (label, point); its noise is fixed so the explicit sum can use the same values.
    eps = jax.random.normal(jax.random.PRNGKey(2), (K, B, Z))
    guide = handlers.substitute(pair.guide, substitute_fn=fixed_noise({"z": eps}))
    loss = jax.jit(lambda p: TraceEnum_ELBO(max_plate_nesting=1).loss(
        jax.random.PRNGKey(3), p, pair.model, guide, x, None, beta=beta))(params)
    expected = hand_unlabelled(pair, params, x, eps, beta).sum()
    np.testing.assert_allclose(-loss, expected, rtol=1e-5, atol=1e-4)


def test_semi_supervised_loss_is_labelled_plus_unlabelled_batch_means():
    alpha, beta, b_l = 0.7, 0.5, 5
    pair = tiny_pair(alpha)
    params = init_params(pair, seed=1)
    x_l, x_u = binary(4, (b_l, D)), binary(5, (B, D))
    y_l = jnp.array([0, 2, 1, 2, 0])
    eps_l = jax.random.normal(jax.random.PRNGKey(6), (b_l, Z))
    eps_u = jax.random.normal(jax.random.PRNGKey(7), (K, B, Z))
    guide = handlers.substitute(semi_supervised(pair.guide), substitute_fn=fixed_noise(
        {"labelled/z": eps_l, "unlabelled/z": eps_u}))
    loss = jax.jit(lambda p: EnumELBO().loss(jax.random.PRNGKey(8), p, semi_supervised(pair.model),
                                             guide, x_l, y_l, x_u, beta=beta))(params)
    lq = log_q_y(pair, params, x_l)
    labelled = sum(hand_bound(pair, params, x_l[b:b + 1], int(y_l[b]), eps_l[b:b + 1], beta).sum()
                   + alpha * lq[b, y_l[b]] for b in range(b_l))
    expected = labelled / b_l + hand_unlabelled(pair, params, x_u, eps_u, beta).sum() / B
    np.testing.assert_allclose(-loss, expected, rtol=1e-5, atol=1e-4)


def test_classification_term_is_differentiated_directly_towards_the_labels():
    """On a labelled batch the classifier enters the loss only through the classification factor:
    d loss / d classifier = -alpha * d sum log q(y|x) (no score-function surrogate), and a step
    against the gradient raises q(y_true | x) (fails if the sign flips)."""
    alpha, b_l = 50.0, 6
    pair = tiny_pair(alpha)
    params = init_params(pair, seed=2)
    x_l, y_l = binary(9, (b_l, D)), jnp.arange(b_l) % K

    def loss(p):
        return TraceEnum_ELBO(max_plate_nesting=1).loss(jax.random.PRNGKey(11), p, pair.model,
                                                         pair.guide, x_l, y_l)

    def log_lik(p):
        return log_q_y(pair, p, x_l)[jnp.arange(b_l), y_l].sum()

    g_alpha = jax.jit(jax.grad(loss))(params)["classifier$params"]
    g_lik = jax.grad(log_lik)(params)["classifier$params"]
    jax.tree.map(lambda a, g: np.testing.assert_allclose(a, -alpha * g, rtol=1e-4, atol=1e-5),
                 g_alpha, g_lik)
    stepped = dict(params)
    stepped["classifier$params"] = jax.tree.map(lambda p, g: p - 1e-3 * g,
                                                params["classifier$params"], g_alpha)
    assert log_lik(stepped) > log_lik(params)


def jaxpr_eqns(jaxpr):
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else [value]:
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from jaxpr_eqns(inner)


def test_x_projection_is_computed_once_per_point_under_enumeration():
    pair = tiny_pair()
    params = init_params(pair)
    x = binary(12, (B, D))
    closed = jax.make_jaxpr(lambda p: TraceEnum_ELBO(max_plate_nesting=1).loss(
        jax.random.PRNGKey(0), p, pair.model, pair.guide, x, None))(params)
    shapes = [tuple(e.outvars[0].aval.shape) for e in jaxpr_eqns(closed.jaxpr)
              if e.primitive.name == "dot_general" and e.invars[0].aval.shape[-1] == D]
    # the classifier's and the encoder's projections of x: one row per point, never per label
    assert shapes == [(B, H), (B, H)]


def test_batch_norm_state_is_trained_and_evaluation_ignores_the_batch():
    import optax
    from numpyro.infer import SVI
    from numpyro.optim import optax_to_numpyro

    pair = tiny_pair(batch_norm=True)
    svi = SVI(semi_supervised(pair.model), semi_supervised(pair.guide),
              optax_to_numpyro(optax.adam(1e-2)), EnumELBO())
    x_l, x_u, y_l = binary(13, (6, D)), binary(14, (8, D)), jnp.arange(6) % K
    state = jax.jit(svi.init)(jax.random.PRNGKey(0), x_l, y_l, x_u)
    before = state.mutable_state
    assert set(before) == {"classifier$state", "encoder$state", "decoder$state"}
    state, loss = jax.jit(svi.update)(state, x_l, y_l, x_u, beta=1.0)
    assert np.isfinite(loss)
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), before, state.mutable_state)
    assert all(v > 0 for v in jax.tree.leaves(moved))
    params = {**svi.get_params(state), **state.mutable_state}
    np.testing.assert_allclose(pair.classify(params, x_u)[:2], pair.classify(params, x_u[:2]),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("modules, absent", [
    ("ppl_dgm.training.numpyro_loop, ppl_dgm.models.m2_numpyro, ppl_dgm.evaluate, "
     "ppl_dgm.infer.numpyro_importance, ppl_dgm.models.adgm_numpyro, ppl_dgm.models.sdgm_numpyro, "
     "ppl_dgm.guides.auxiliary_numpyro", ("torch", "pyro")),
    ("ppl_dgm.training.loop, ppl_dgm.models.m2, ppl_dgm.infer.objectives, ppl_dgm.evaluate, "
     "ppl_dgm.infer.importance, ppl_dgm.models.adgm, ppl_dgm.models.sdgm, ppl_dgm.guides.auxiliary",
     ("jax", "numpyro", "flax")),
])
def test_one_backend_never_imports_the_other(modules, absent):
    code = f"import sys, ppl_dgm.cli, {modules}; print([m for m in {absent!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


PYRO_SUMMARY_KEYS = {
    "model", "backend", "dataset", "labels", "seed", "epochs", "steps", "steps_per_epoch",
    "seconds_per_epoch", "train_seconds", "device", "n_labelled", "n_unlabelled", "n_validation",
    "n_test", "test_error", "test_elbo", "config", "versions", "python", "machine", "processor",
    "cpu_count", "best_validation_epoch", "test_error_at_best_validation",
    "test_binarization_seed", "kl",
}


def test_registry_lists_m2_for_both_backends(capsys):
    assert registry.get("m2", "numpyro").build == "ppl_dgm.models.m2_numpyro:build"
    assert registry.get("m2", "numpyro").hparams == registry.get("m2", "pyro").hparams
    assert main(["models"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert {"pyro", "numpyro"} <= {row[1] for row in rows if row[0] == "m2"}


@pytest.fixture(scope="module")
def numpyro_run(tmp_path_factory):
    """A short NumPyro M2 run on digits through the CLI, shared by the tests of its run directory:
    (run directory, CLI arguments, exit status, printed output)."""
    out = tmp_path_factory.mktemp("numpyro") / "run"
    args = ["train", "m2", "--backend", "numpyro", "--dataset", "digits", "--labels", "50",
            "--epochs", "8", "--device", "cpu", "--out", str(out), "--no-progress",
            "--set", "hidden=[128]", "--set", "z_dim=16"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = main(args)
    return out, args, status, printed.getvalue()


def test_cli_numpyro_m2_on_digits_learns_and_writes_the_run_directory(numpyro_run):
    out, args, status, printed = numpyro_run
    assert status == 0
    summary = json.loads((out / results.SUMMARY).read_text())
    assert PYRO_SUMMARY_KEYS <= set(summary)
    assert summary["backend"] == "numpyro" and summary["epochs"] == 8
    assert summary["versions"]["numpyro"] and summary["versions"]["jax"]
    # chance is 0.9 error on 10 balanced classes
    assert summary["test_error"] < 0.5, summary["test_error"]
    assert -60 < summary["test_elbo"] < 0
    history = results.read_history(out / results.HISTORY)
    assert history.sizes["epoch"] == 8 and history["loss"].values[-1] < history["loss"].values[0]
    assert (out / "checkpoint.pkl").is_file() and (out / results.CONFIG).is_file()
    assert "test accuracy" in printed
    # an existing run is not overwritten without --resume
    assert main(args) == 2


EVALUATION_KEYS = {
    "backend", "iw_samples", "evaluation_seed", "classify_samples", "test_error",
    "test_log_likelihood", "test_log_likelihood_sem", "n_test_evaluated", "test_binarization_seed",
    "iw_seconds", "iw_points_per_second", "test_elbo", "pareto_k_mean", "pareto_k_max",
    "pareto_k_fraction_above_0.7", "versions", "device", "python", "machine", "cpu_count",
}


def test_cli_evaluate_and_sample_the_numpyro_run(numpyro_run, capsys):
    """``evaluate`` and ``sample`` read the run's backend from config.json (they used to load every
    run as a Pyro run) and write the Pyro path's records."""
    out, _, status, _ = numpyro_run
    assert status == 0
    # 30 particles in chunks of 7 (the last one cut), 150 points in batches of 100 (the last padded)
    assert main(["evaluate", str(out), "--iw-samples", "30", "--chunk-size", "7", "--subset", "150",
                 "--device", "cpu", "--seed", "1"]) == 0
    evaluation = json.loads((out / results.EVALUATION).read_text())
    assert EVALUATION_KEYS <= set(evaluation)
    assert evaluation["backend"] == "numpyro" and evaluation["n_test_evaluated"] == 150
    assert evaluation["iw_samples"] == 30 and evaluation["evaluation_seed"] == 1
    numbers = {k: v for k, v in evaluation.items() if isinstance(v, (int, float))}
    assert all(math.isfinite(v) for v in numbers.values()), numbers
    summary = json.loads((out / results.SUMMARY).read_text())
    assert evaluation["test_error"] == summary["test_error"]  # same classifier, same test set
    assert evaluation["test_elbo"] - 0.5 <= evaluation["test_log_likelihood"] < 0
    assert 0 <= evaluation["pareto_k_fraction_above_0.7"] <= 1
    assert summary["evaluation"]["test_log_likelihood"] == evaluation["test_log_likelihood"]
    assert "test_log_likelihood" in capsys.readouterr().out

    assert main(["sample", str(out), "--per-class", "4", "--device", "cpu"]) == 0
    assert (out / "samples.png").stat().st_size > 1000
