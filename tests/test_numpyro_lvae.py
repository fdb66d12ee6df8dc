"""NumPyro VAE and LVAE: the precision-weighted merge against the normalised product of the two
densities, the ELBO of 2-layer pairs against a bound written out by hand in jax.numpy with the same
noise (networks included), the 1-layer ladder guide against the plain guide, the Pyro pair's weights
giving the same ELBO, and a short CLI run on digits with its IW evaluation.

The noise is fixed with a ``substitute_fn`` that draws the guide's Gaussian site ``z_i`` as
loc + eps_i * scale for given eps_i: the values stay functions of the guide's networks, so the ELBO
scores them as it scores its own draws.
"""

import json
import math
import warnings
from functools import partial
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro import handlers
from numpyro.infer import Trace_ELBO

from ppl_dgm import registry, results
from ppl_dgm.cli import main
from ppl_dgm.guides.ladder_numpyro import precision_weighted_merge

X_DIM, B, BETA = 7, 5, 0.6
MIN_SCALE = 1e-5 ** 0.5


def tiny_pair(guide, z_dims=(3, 2), hidden_dims=(6, 4), batch_norm=False, share=True):
    hparams = {"guide": guide, "z_dims": list(z_dims), "hidden_dims": list(hidden_dims),
               "activation": "leaky_relu", "batch_norm": batch_norm, "min_scale": MIN_SCALE,
               "share_top_down": share, "num_particles": 1}
    return registry.get("lvae", "numpyro").builder()(hparams, SimpleNamespace(x_dim=X_DIM))


def _traced_params(pair):
    x = jnp.zeros((2, X_DIM))
    guide_trace = handlers.trace(handlers.seed(pair.guide, 0)).get_trace(x, None)
    model_trace = handlers.trace(handlers.seed(handlers.replay(pair.model, guide_trace),
                                               0)).get_trace(x, None)
    return {name: site["value"] for trace in (guide_trace, model_trace)
            for name, site in trace.items() if site["type"] in ("param", "mutable")}


def init_params(pair, seed=0):
    """Random N(0, 0.5^2) parameters with the programs' own structure (``jax.eval_shape`` of their
    initialisation: nothing compiled); batch-norm running statistics mean 0, variance 1."""
    shapes = jax.eval_shape(partial(_traced_params, pair))
    rng = np.random.default_rng(seed + 100)

    def draw(path, s):
        key = jax.tree_util.keystr(path)
        if "$state" in key:
            return (np.ones if "var" in key else np.zeros)(s.shape, np.float32)
        return 0.5 * rng.standard_normal(s.shape).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


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


def trace_loss(pair, params, x, eps, beta=BETA, train=True):
    """Trace_ELBO's loss (summed over the batch) with the guide's noise fixed to ``eps``."""
    guide = handlers.substitute(pair.guide, substitute_fn=fixed_noise(eps))
    return Trace_ELBO().loss(jax.random.PRNGKey(3), params, pair.model, guide, x, None, beta=beta,
                             train=train)


# ------------------------------------------------------------------ the networks and bound by hand
def log_normal(v, loc, scale):
    return (-0.5 * ((v - loc) / scale) ** 2 - jnp.log(scale) - 0.5 * math.log(2 * math.pi)).sum(-1)


def log_bernoulli(x, logits):
    return (x * logits - jnp.logaddexp(0.0, logits)).sum(-1)


def _linear(p, u):
    return u @ p["kernel"] + p["bias"]


def _leaky(h):
    return jnp.where(h > 0, h, 0.01 * h)


def hand_mlp(p, u):
    """Two leaky-ReLU hidden layers (no batch norm)."""
    return _leaky(_linear(p["dense_1"], _leaky(_linear(p["input_0"], u))))


def hand_layer(params, name, u):
    """(h, loc, scale) of a Gaussian layer: variance softplus(.) + min_scale^2 (the authors')."""
    p = params[f"{name}$params"]
    h = hand_mlp(p["mlp"], u)
    var = jnp.log1p(jnp.exp(_linear(p["head"]["logvar"], h))) + MIN_SCALE ** 2
    return h, _linear(p["head"]["loc"], h), jnp.sqrt(var)


def hand_bound(guide, params, x, eps, beta, share=True):
    """-[log p(x|z1) + beta (log p(z1|z2) + log p(z2) - log q(z1, z2 | x))] summed over points,
    for a 2-layer pair, every network and the merge computed here."""
    if guide == "hierarchical":  # q(z1 | x) q(z2 | z1), bottom-up
        _, loc1, scale1 = hand_layer(params, "q_up_0", x)
        z1 = loc1 + eps["z1"] * scale1
        _, loc2, scale2 = hand_layer(params, "q_up_1", z1)
        z2 = loc2 + eps["z2"] * scale2
    else:  # bottom-up estimates, then q(z2 | x) and the merge for q(z1 | z2, x)
        d1, loc_hat1, scale_hat1 = hand_layer(params, "q_up_0", x)
        _, loc2, scale2 = hand_layer(params, "q_up_1", d1)
        z2 = loc2 + eps["z2"] * scale2
        _, loc_p, scale_p = hand_layer(params, "top_down_0" if share else "q_top_down_0", z2)
        v_hat, v_p = scale_hat1 ** 2, scale_p ** 2
        scale1 = jnp.sqrt(v_hat * v_p / (v_hat + v_p))
        loc1 = (loc_hat1 * v_p + loc_p * v_hat) / (v_hat + v_p)
        z1 = loc1 + eps["z1"] * scale1
    _, p_loc1, p_scale1 = hand_layer(params, "top_down_0", z2)
    decoder = params["p_x$params"]
    log_px = log_bernoulli(x, _linear(decoder["logits"], hand_mlp(decoder["mlp"], z1)))
    kl = (log_normal(z1, loc1, scale1) + log_normal(z2, loc2, scale2)
          - log_normal(z1, p_loc1, p_scale1) - log_normal(z2, 0.0, 1.0))
    return -(log_px - beta * kl).sum()


# ------------------------------------------------------------------ precision-weighted merge
def test_merge_equals_normalised_product_of_densities():
    """Mean and variance of N(a) * N(b), normalised numerically on a grid; and broadcasting."""
    loc_a, scale_a = jnp.array([0.3, -1.0, 2.0]), jnp.array([0.5, 2.0, 0.1])
    loc_b, scale_b = jnp.array([-0.4, 1.5, 2.3]), jnp.array([1.2, 0.7, 0.3])
    loc, scale = precision_weighted_merge(loc_a, scale_a, loc_b, scale_b)
    grid = np.linspace(-12, 12, 400_001)
    for k in range(3):
        def logpdf(m, s):
            return -0.5 * ((grid - m) / s) ** 2 - np.log(s)
        lp = logpdf(float(loc_a[k]), float(scale_a[k])) + logpdf(float(loc_b[k]), float(scale_b[k]))
        w = np.exp(lp - lp.max())
        w /= w.sum()
        mean = (w * grid).sum()
        var = (w * (grid - mean) ** 2).sum()
        assert float(loc[k]) == pytest.approx(mean, abs=1e-5)
        assert float(scale[k]) ** 2 == pytest.approx(var, rel=1e-4)
    loc, scale = precision_weighted_merge(jnp.zeros((4, 1, 3)), jnp.ones(3), jnp.ones((2, 3)),
                                          jnp.full((3,), 1e3))
    assert loc.shape == scale.shape == (4, 2, 3)
    np.testing.assert_allclose(scale, 1.0, atol=1e-5)  # a very wide top-down: the estimate stays


# ------------------------------------------------------------------ the ELBO by hand
@pytest.mark.parametrize("guide,share", [("hierarchical", True), ("ladder", True),
                                         ("ladder", False)])
def test_two_layer_elbo_equals_the_bound_by_hand(guide, share):
    pair = tiny_pair(guide, share=share)
    params = init_params(pair, seed=1)
    x = binary(2, (B, X_DIM))
    eps = {"z1": normal(3, (B, 3)), "z2": normal(4, (B, 2))}
    loss, expected = jax.jit(lambda p: (trace_loss(pair, p, x, eps),
                                        hand_bound(guide, p, x, eps, BETA, share)))(params)
    np.testing.assert_allclose(float(loss), float(expected), rtol=1e-5, atol=1e-4)
    # beta = 0 (warm-up's start, a Python number: the latent sites are masked) leaves -log p(x|z)
    loss0 = jax.jit(lambda p: trace_loss(pair, p, x, eps, beta=0.0))(params)
    expected0 = jax.jit(lambda p: hand_bound(guide, p, x, eps, 0.0, share))(params)
    np.testing.assert_allclose(float(loss0), float(expected0), rtol=1e-5, atol=1e-4)


def test_one_layer_ladder_guide_is_the_vae_guide():
    """Same parameter sites, same loss, with batch norm in training mode and the ELBO's own noise."""
    plain = tiny_pair("hierarchical", z_dims=[3], hidden_dims=[6], batch_norm=True)
    ladder = tiny_pair("ladder", z_dims=[3], hidden_dims=[6], batch_norm=True)
    params = init_params(plain, seed=2)
    assert set(params) == set(init_params(ladder, seed=2))
    x = binary(5, (B, X_DIM))

    def losses(p):
        key = jax.random.PRNGKey(7)
        return tuple(Trace_ELBO().loss(key, p, pair.model, pair.guide, x, None, beta=BETA)
                     for pair in (plain, ladder))

    a, b = jax.jit(losses)(params)
    assert math.isfinite(float(a))
    np.testing.assert_allclose(float(a), float(b), rtol=1e-6)


def test_any_number_of_layers_and_prior_samples():
    pair = tiny_pair("ladder", z_dims=[4, 3, 2, 2], hidden_dims=[6, 5, 4, 3], batch_norm=True,
                     share=False)
    params = init_params(pair, seed=3)
    x = binary(6, (B, X_DIM))
    order = []

    def sites(p):  # traced by jax.eval_shape: nothing compiled
        trace = handlers.trace(handlers.substitute(handlers.seed(pair.guide, 0), data=p)
                               ).get_trace(x, None, train=False)
        order.extend(n for n, s in trace.items() if s["type"] == "sample")
        return {n: s["value"] for n, s in trace.items() if s["type"] == "sample"}

    shapes = jax.eval_shape(sites, params)
    assert order == ["z4", "z3", "z2", "z1"]  # top-down, like the model
    assert {n: v.shape for n, v in shapes.items()} == {"z1": (B, 4), "z2": (B, 3), "z3": (B, 2),
                                                       "z4": (B, 2)}
    samples = jax.jit(pair.sample_x, static_argnums=2)(params, jax.random.PRNGKey(0), 4)
    assert samples.shape == (4, X_DIM) and bool(((samples >= 0) & (samples <= 1)).all())
    with pytest.raises(ValueError):
        tiny_pair("ladder", z_dims=[3, 2], hidden_dims=[6])
    with pytest.raises(ValueError):
        tiny_pair("nonsense")


# ------------------------------------------------------------------ the Pyro pair's weights
def _torch_to_flax(layer, stats=False):
    """Flax parameters of a ``GaussianLayer`` (or the decoder) from the torch modules; with
    ``stats`` their batch-norm running statistics instead (the ``$state`` site's value)."""
    from torch import nn

    def np_(t):
        return jnp.asarray(t.detach().numpy())

    def linear(m):
        return {"kernel": np_(m.weight).T, "bias": np_(m.bias)}

    def bn(m):
        if stats:
            return {"mean": np_(m.running_mean), "var": np_(m.running_var)}
        return {"scale": np_(m.weight), "bias": np_(m.bias)}

    mlp, head = layer
    lin = [mlp.inputs[0], *(m for m in mlp.rest if isinstance(m, nn.Linear))]
    bns = [m for m in [*mlp.first, *mlp.rest] if isinstance(m, nn.BatchNorm1d)]
    out = {"mlp": {"input_0": linear(lin[0]), "dense_1": linear(lin[1])}}
    out["mlp"].update({f"bn_{i}": bn(m) for i, m in enumerate(bns)})
    if isinstance(head, nn.Linear):
        out["logits"] = linear(head)
    else:
        out["head"] = {"loc": linear(head.loc), "logvar": linear(head.logvar),
                       "loc_bn": bn(head.loc_bn), "logvar_bn": bn(head.logvar_bn)}
    if stats:
        out["mlp"] = {k: v for k, v in out["mlp"].items() if k.startswith("bn")}
        out["head"] = {k: v for k, v in out.get("head", {}).items() if k.endswith("bn")}
        return {"batch_stats": {k: v for k, v in out.items() if v}}
    return out


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("guide", ["hierarchical", "ladder"])
def test_pyro_weights_give_the_same_elbo(guide, train):
    """The Pyro pair's networks (batch norm on, random affine parameters and running statistics)
    copied into the NumPyro pair: the same ELBO with the same noise, in training mode (batch
    statistics) and evaluation mode (running statistics).

    Training mode agrees to about 1e-5 only: flax's ``BatchNorm`` computes the batch variance as
    E[h^2] - E[h]^2 in float32 (``use_fast_variance``), torch in a numerically stabler way (with
    flax's ``use_fast_variance=False`` the two agree to 1e-7)."""
    import pyro
    import torch
    from pyro import poutine
    from pyro.infer import Trace_ELBO as PyroTraceELBO

    from ppl_dgm.models.lvae import build as torch_build

    class FixNoise(poutine.messenger.Messenger):
        def __init__(self, eps):
            super().__init__()
            self.eps = eps

        def _pyro_sample(self, msg):
            if msg["name"] in self.eps:
                base = _normal_base(msg["fn"])
                msg["value"] = base.loc + self.eps[msg["name"]] * base.scale

    z_dims, hidden_dims = [3, 2, 2], [6, 5, 4]
    torch.manual_seed(0)
    hp = {"guide": guide, "z_dims": z_dims, "hidden_dims": hidden_dims, "batch_norm": True,
          "min_scale": MIN_SCALE, "share_top_down": True}
    torch_pair = torch_build(hp, SimpleNamespace(x_dim=X_DIM)).train(train)
    for p in torch_pair.parameters():
        p.data.normal_(0, 0.5)
    for name, buffer in torch_pair.named_buffers():
        if name.endswith("running_mean"):
            buffer.normal_(0, 0.5)
        elif name.endswith("running_var"):
            buffer.uniform_(0.5, 2.0)
    pair = tiny_pair(guide, z_dims, hidden_dims, batch_norm=True)
    params = init_params(pair)  # the structure, and the (unused) running statistics
    tp, tq = torch_pair.p, torch_pair.q
    networks = {"p_x": (tp.decoder, tp.logits),
                **{f"top_down_{k}": (m.mlp, m.head) for k, m in enumerate(tp.top_down)},
                **{f"q_up_{k}": (m.mlp, m.head) for k, m in enumerate(tq.up)}}
    for name, layer in networks.items():
        params[f"{name}$params"] = _torch_to_flax(layer)
        params[f"{name}$state"] = _torch_to_flax(layer, stats=True)

    x = binary(8, (B, X_DIM))
    eps = {f"z{i + 1}": normal(9 + i, (B, d)) for i, d in enumerate(z_dims)}
    loss = jax.jit(lambda p: trace_loss(pair, p, x, eps, train=train))(params)

    def torch_guide(*args, **kwargs):
        with FixNoise({k: torch.tensor(v) for k, v in eps.items()}):
            return tq(*args, **kwargs)

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pyro_loss = PyroTraceELBO().loss(tp, torch_guide, torch.tensor(x), None, beta=BETA)
    pyro.clear_param_store()
    np.testing.assert_allclose(float(loss), pyro_loss, rtol=5e-5 if train else 2e-6)


# ------------------------------------------------------------------ the trainer, the CLI, evaluate
def test_cli_numpyro_lvae_on_digits_trains_and_evaluates(tmp_path):
    """One epoch of tiny networks (registered defaults otherwise: batch norm, Trace_ELBO, warm-up),
    then ``evaluate`` with 40 IW samples on 120 test points: IW >= ELBO on the same points.

    Both commands run in this process, with the session's XLA flags (conftest.py: optimisation
    passes off; the compilations dominate this run)."""
    out = tmp_path / "run"
    train = ["train", "lvae", "--backend", "numpyro", "--dataset", "digits", "--epochs", "1",
             "--device", "cpu", "--out", str(out), "--no-progress", "--batch-size", "64",
             "--set", "z_dims=[4,2]", "--set", "hidden_dims=[16,8]"]
    evaluate = ["evaluate", str(out), "--iw-samples", "40", "--subset", "120", "--device", "cpu"]
    assert main(train) == 0 and main(evaluate) == 0
    summary = json.loads((out / results.SUMMARY).read_text())
    assert summary["backend"] == "numpyro" and summary["model"] == "lvae"
    assert summary["config"]["elbo"] == "trace" and summary["test_error"] is None
    assert summary["n_labelled"] == 0 and summary["steps_per_epoch"] == summary["steps"] > 1
    assert math.isfinite(summary["test_elbo"]) and summary["test_elbo"] < 0
    assert set(summary["kl"]) == {"z1", "z2"}
    assert all(math.isfinite(v) for v in summary["kl"].values()), summary["kl"]
    history = results.read_history(out / results.HISTORY)
    assert np.isfinite(history["validation_elbo"].values).all()
    assert (out / "checkpoint.pkl").is_file() and (out / "samples_prior.png").is_file()
    evaluation = json.loads((out / results.EVALUATION).read_text())
    assert evaluation["n_test_evaluated"] == 120 and "test_error" not in evaluation
    ll, elbo = evaluation["test_log_likelihood"], evaluation["test_elbo"]
    assert math.isfinite(ll) and ll < 0
    assert ll >= elbo - 0.1, (ll, elbo)
