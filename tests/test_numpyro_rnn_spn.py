"""NumPyro RNN-SPN / FFN-SPN / CNN: the JAX spatial transformer against torch's ``affine_grid`` /
``grid_sample``, the identity initialisation and glimpse sizes, the loss against the cross-entropy
by hand, the torch networks' weights giving the same logits, and a short CLI run with ``evaluate``.

Canvases are 60 x 60 (the smallest multiple of ten on which the RNN-SPN's 3x down-sampled glimpses
still pass its three convolutions) with T = 2 positions and a few filters per layer. Compilation
dominates: each check runs as one function compiled with XLA's optimisation passes off
(:func:`compiled`), and shape-only checks are traced, never compiled (``jax.eval_shape``).
"""

import json
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from numpyro import handlers
from numpyro.infer import Trace_ELBO

from ppl_dgm import registry, results
from ppl_dgm.cli import main
from ppl_dgm.infer.numpyro_objectives import TraceELBO, supervised
from ppl_dgm.nn.spatial_jax import glimpse_size, transform
from tests.conftest import mnist_dir

SIDE, T = 60, 2
INFO = SimpleNamespace(image_shape=(SIDE, SIDE), x_dim=SIDE * SIDE, n_classes=10, sequence_length=T)
TINY = {
    "rnn-spn": {"loc_filters": 3, "rnn_units": 8, "filters": 3, "dense": 12},
    "ffn-spn": {"loc_filters": 3, "loc_dense": 6, "filters": 3, "dense": 12},
    "cnn-seq": {"filters": 3, "dense": 12},
}


def build(name, backend="numpyro", **hparams):
    return registry.get(name, backend).builder()({**TINY[name], **hparams}, INFO)


def canvases(b=2, seed=0):
    return np.random.default_rng(seed).random((b, SIDE, SIDE)).astype(np.float32)


FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def compiled(fn, *args):
    """``fn(*args)`` as one XLA computation compiled without the optimisation passes."""
    return jax.jit(fn).lower(*args).compile(compiler_options=FAST)(*args)


def init(pair, x, seed=0):
    """The parameters the model program initialises (site ``net$params``); traceable."""
    trace = handlers.trace(handlers.seed(pair.model, seed)).get_trace(x, None)
    return {name: site["value"] for name, site in trace.items() if site["type"] == "param"}


def init_params(pair, x, seed=0):
    """:func:`init`, compiled."""
    return compiled(lambda x: init(pair, x, seed), x)


def perturb_affine(params, seed=1, scale=0.05):
    """Move the affine head off the identity, so that the glimpses depend on the canvas."""
    rng = np.random.default_rng(seed)

    def move(path, value):
        if "affine" in jax.tree_util.keystr(path):
            return value + scale * rng.standard_normal(value.shape).astype(np.float32)
        return value

    return jax.tree_util.tree_map_with_path(move, params)


def bilinear_by_hand(image, size):
    """Resize with bilinear interpolation, sample points at pixel centres (align_corners=False)."""
    h, w = image.shape
    out = np.zeros((size, size))
    for i in range(size):
        for j in range(size):
            r, c = (i + 0.5) * h / size - 0.5, (j + 0.5) * w / size - 0.5
            r0, c0 = int(np.floor(r)), int(np.floor(c))
            dr, dc = r - r0, c - c0
            out[i, j] = ((1 - dr) * (1 - dc) * image[r0, c0] + (1 - dr) * dc * image[r0, c0 + 1]
                         + dr * (1 - dc) * image[r0 + 1, c0] + dr * dc * image[r0 + 1, c0 + 1])
    return out


# ------------------------------------------------------------------------ the spatial transformer
def test_transformer_equals_torch_affine_grid_and_grid_sample():
    rng = np.random.default_rng(0)
    n, c, h, w = 6, 2, 13, 17
    images = rng.random((n, c, h, w)).astype(np.float32)
    theta = np.tile(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), (n, 1, 1))
    theta[1:] += rng.normal(0, 0.4, (n - 1, 2, 3))  # rotations, shears, zooms
    theta[3, :, 2] = [0.9, -0.8]  # glimpses reaching outside the image
    theta[4] *= 2.5
    theta[5, :, 2] = [1.7, 0.3]  # mostly off the image
    theta = theta.astype(np.float32)
    for size in (9, (7, 11), 40):
        hh, ww = (size, size) if isinstance(size, int) else size
        grid = F.affine_grid(torch.tensor(theta), [n, c, hh, ww], align_corners=False)
        expected = F.grid_sample(torch.tensor(images), grid, mode="bilinear",
                                 padding_mode="zeros", align_corners=False).numpy()
        got = np.asarray(compiled(lambda i, t, size=size: transform(i, t, size), images, theta))
        assert got.shape == expected.shape == (n, c, hh, ww)
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)  # float32 coordinates
        assert (expected[5] == 0).mean() > 0.3  # the padding was exercised

    # the gradients with respect to the image and the transform agree too
    weights = rng.standard_normal((n, c, 9, 9)).astype(np.float32)
    ti, tt = torch.tensor(images, requires_grad=True), torch.tensor(theta, requires_grad=True)
    out = F.grid_sample(ti, F.affine_grid(tt, [n, c, 9, 9], align_corners=False),
                        align_corners=False)
    (out * torch.tensor(weights)).sum().backward()
    gi, gt = compiled(jax.grad(lambda i, t: (transform(i, t, 9) * weights).sum(), argnums=(0, 1)),
                      images, theta)
    np.testing.assert_allclose(np.asarray(gi), ti.grad.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.asarray(gt), tt.grad.numpy(), atol=2e-4, rtol=1e-5)


# ------------------------------------------------------------------------ identity initialisation
def test_identity_initialisation_gives_the_downsampled_whole_canvas():
    pair = build("rnn-spn", downsample=3.0)
    x = canvases()
    # flat canvases, as the trainer's
    theta, g = compiled(lambda x: pair.model.glimpses(init(pair, x), x), x.reshape(2, -1))
    assert theta.shape == (2, T, 2, 3) and g.shape == (2, T, 20, 20)
    np.testing.assert_array_equal(np.asarray(theta), np.broadcast_to(np.eye(2, 3), (2, T, 2, 3)))
    for b in range(2):
        expected = bilinear_by_hand(x[b].astype(np.float64), 20)
        np.testing.assert_allclose(np.asarray(g[b, 0]), expected, atol=1e-5)
        np.testing.assert_array_equal(np.asarray(g[b, 1]), np.asarray(g[b, 0]))
    # with factor 2 every reader's first glimpse is the 2 x 2 average of the canvas
    expected = x.reshape(2, 30, 2, 30, 2).mean(axis=(2, 4))
    for name in ("rnn-spn", "ffn-spn", "cnn-seq"):
        pair = build(name, downsample=2.0)
        _, g = compiled(lambda x, pair=pair: pair.model.glimpses(init(pair, x), x), x)
        np.testing.assert_allclose(np.asarray(g[:, 0]), expected, atol=2e-5, rtol=0)


@pytest.mark.parametrize("factor,size", [(1, 60), (2, 30), (3, 20)])
def test_downsampling_factor_sets_the_glimpse_size(factor, size):
    assert [glimpse_size(100, d) for d in (1, 2, 3, 4)] == [100, 50, 33, 25]
    assert glimpse_size(SIDE, factor) == size
    pair = build("rnn-spn", downsample=float(factor))

    def shapes(x):
        params = init(pair, x)
        return pair.model.glimpses(params, x)[1], pair.classify(params, x)

    glimpses, probs = jax.eval_shape(shapes, canvases(1))  # traced, not run
    assert glimpses.shape == (1, T, size, size) and probs.shape == (1, T, 10)


# ------------------------------------------------------------------------ the model and its loss
@pytest.mark.parametrize("name", ["rnn-spn", "ffn-spn", "cnn-seq"])
def test_loss_is_the_mean_cross_entropy_over_digits(name):
    pair = build(name)
    x = canvases(4, seed=2).reshape(4, -1)
    y = np.random.default_rng(3).integers(0, 10, (4, T)).astype(np.int32)
    params = perturb_affine(init_params(pair, x))
    model, guide = supervised(pair.model), supervised(pair.guide)
    key = jax.random.PRNGKey(0)

    def hand(p):  # the same cross-entropy in jax.numpy, for the gradients
        lp = jax.nn.log_softmax(pair.model.logits(p, x), -1)
        return -jnp.take_along_axis(lp, y[..., None], -1).mean()

    def everything(params):
        elbo = lambda p: Trace_ELBO().loss(key, p, model, guide, x, y)  # noqa: E731
        # the trainer's ELBO (mutable-state aware) gives the same loss
        trainer_loss = TraceELBO(1, pair.max_plate_nesting).loss_with_mutable_state(
            key, params, model, guide, x, y)["loss"]
        return (pair.model.logits(params, x), elbo(params), trainer_loss, jax.grad(elbo)(params),
                jax.grad(hand)(params))

    logits, loss, trainer_loss, grads, grads_hand = compiled(everything, params)
    logits = np.asarray(logits, np.float64)
    assert logits.shape == (4, T, 10)
    log_probs = logits - logits.max(-1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
    by_hand = -np.take_along_axis(log_probs, y[..., None], -1).mean()
    np.testing.assert_allclose(float(loss), by_hand, rtol=1e-5)
    np.testing.assert_allclose(float(trainer_loss), by_hand, rtol=1e-5)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7),
                           grads, grads_hand)


def test_model_sites_plates_and_empty_guide():
    pair = build("rnn-spn")
    x, y = canvases(2).reshape(2, -1), np.array([[1, 2], [4, 5]], np.int32)
    traces = {}

    def run(x, y):  # traced under jax.eval_shape: the site metadata without running the networks
        traces["model"] = handlers.trace(handlers.seed(pair.model, 0)).get_trace(x, y)
        traces["guide"] = handlers.trace(pair.guide).get_trace(x, y)
        return handlers.seed(pair.model, 1)(x)  # without labels the model samples them

    sampled = jax.eval_shape(run, x, y)
    trace = traces["model"]
    samples = [n for n, s in trace.items() if s["type"] == "sample"]
    assert samples == ["y"] and trace["y"]["is_observed"]
    assert trace["y"]["fn"].batch_shape == (2, T)
    assert {f.name: f.dim for f in trace["y"]["cond_indep_stack"]} == {"data": -2,
                                                                        "positions": -1}
    assert traces["guide"] == {}
    assert pair.max_plate_nesting == 2
    assert sampled.shape == (2, T)
    probs = compiled(lambda x: pair.classify(init(pair, x), x), x)
    np.testing.assert_allclose(np.asarray(probs.sum(-1)), np.ones((2, T)), rtol=1e-6)


# ------------------------------------------------------------------------ against the torch nets
def _conv(net, i):
    return {"kernel": net[i].weight.detach().permute(2, 3, 1, 0).numpy(),  # OIHW -> HWIO
            "bias": net[i].bias.detach().numpy()}


def _dense(layer):
    return {"kernel": layer.weight.detach().T.numpy(), "bias": layer.bias.detach().numpy()}


def _classifier(net):
    return {"conv_0": _conv(net, 0), "conv_1": _conv(net, 3), "conv_2": _conv(net, 6),
            "hidden": _dense(net[9]), "logits": _dense(net[11])}


def torch_to_flax(name, reader):
    """The torch reader's weights as the flax module's ``net$params``."""
    params = {"classifier": _classifier(reader.classifier.net)}
    if name != "cnn-seq":
        loc = reader.loc.net
        params["loc"] = {"conv_0": _conv(loc, 1), "conv_1": _conv(loc, 4), "conv_2": _conv(loc, 7)}
        params["affine"] = {"linear": _dense(reader.affine)}
    if name == "rnn-spn":
        rnn = reader.rnn  # torch packs the gates as (r, z, n), as the flax GRU does
        params["rnn"] = {"w_i": rnn.weight_ih_l0.detach().T.numpy(),
                         "w_h": rnn.weight_hh_l0.detach().T.numpy(),
                         "b_i": rnn.bias_ih_l0.detach().numpy(),
                         "b_h": rnn.bias_hh_l0.detach().numpy()}
    if name == "ffn-spn":
        params["loc_hidden"] = _dense(reader.loc_dense[0])
    return {"net$params": params}


@pytest.mark.parametrize("name", ["rnn-spn", "ffn-spn", "cnn-seq"])
def test_torch_weights_give_the_same_logits(name):
    torch.manual_seed(0)
    torch_pair = build(name, backend="pyro")
    reader = torch_pair.p.net
    with torch.no_grad():  # a transform off the identity, random positive biases (live ReLUs)
        for pname, p in reader.named_parameters():
            p.add_((0.2 if "affine" in pname else 0.05) * torch.randn_like(p))
            if pname.endswith("bias") and "affine" not in pname:
                p.add_(0.1)
    x = canvases(3, seed=4)
    expected = reader(torch.tensor(x)).detach().numpy()
    theta_t, glimpses_t = reader.glimpses(torch.tensor(x))

    pair = build(name)
    params = torch_to_flax(name, reader)
    shapes = jax.tree_util.tree_map(np.shape, jax.eval_shape(lambda x: init(pair, x), x))
    assert jax.tree_util.tree_map(np.shape, params) == shapes  # every parameter was copied
    logits, (theta, glimpses) = compiled(
        lambda p, x: (pair.model.logits(p, x.reshape(3, -1)), pair.model.glimpses(p, x)), params, x)
    np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(theta), theta_t.detach().numpy(), atol=1e-6)
    np.testing.assert_allclose(np.asarray(glimpses), glimpses_t.detach().numpy(), atol=3e-5)


def test_registered_with_the_pyro_pairs_defaults():
    for name in ("rnn-spn", "ffn-spn", "cnn-seq"):
        spec, pyro_spec = registry.get(name, "numpyro"), registry.get(name)
        assert spec.task == "supervised" and spec.build.startswith("ppl_dgm.models.rnn_spn_numpyro")
        assert spec.hparams == pyro_spec.hparams and spec.train == pyro_spec.train
        assert spec.train["optimizer"] == "rmsprop" and spec.train["elbo"] == "trace"


# ------------------------------------------------------------------------ the trainer and the CLI
def test_digit_and_sequence_errors_by_hand():
    from ppl_dgm.models.rnn_spn_numpyro import sequence_errors
    from ppl_dgm.training.numpyro_loop import NumPyroTrainer

    predicted = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9], [0, 1, 2]])
    y = np.array([[1, 2, 3], [4, 0, 6], [7, 0, 0], [0, 1, 2]])  # 3 of 12 digits, 2 of 4 sequences
    stub = SimpleNamespace(predictions=lambda x: predicted)  # the trainer's classifier, stubbed
    assert NumPyroTrainer.classification_error(stub, None, y) == pytest.approx(3 / 12)
    assert NumPyroTrainer.sequence_error(stub, None, y) == pytest.approx(2 / 4)
    probs = jax.nn.one_hot(predicted, 10)
    assert sequence_errors(probs, y) == {"digit_error": pytest.approx(3 / 12),
                                         "sequence_error": pytest.approx(2 / 4)}
    # single labels (M2 and the other pairs): the fraction of wrong labels, as before
    stub = SimpleNamespace(predictions=lambda x: np.array([1, 2, 3, 4]))
    assert NumPyroTrainer.classification_error(stub, None, np.array([1, 0, 3, 0])) == 0.5


@pytest.mark.skipif(mnist_dir() is None, reason="the shared MNIST file is not next to the repo")
def test_cli_numpyro_rnn_spn_trains_and_evaluates(tmp_path, monkeypatch, capsys):
    """One epoch of two RMSprop steps on 270 canvases of two digits, then ``evaluate``; both in
    this process, with the session's XLA flags (conftest.py: optimisation passes off; compilation
    dominates this run)."""
    out = tmp_path / "run"
    options = ["n_train=300", "n_test=100", f"canvas={SIDE}", f"n_digits={T}", "n_clutter=4"]
    sets = [a for k, v in TINY["rnn-spn"].items() for a in ("--set", f"{k}={v}")]
    train = ["train", "rnn-spn", "--backend", "numpyro", "--epochs", "1", "--steps-per-epoch", "2",
             "--batch-size", "20", "--device", "cpu", "--no-progress", "--out", str(out), *sets,
             *[a for o in options for a in ("--data-option", o)]]
    evaluate = ["evaluate", str(out), "--device", "cpu"]
    monkeypatch.setenv("PPL_DGM_DATA", str(mnist_dir()))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert main(train) == 0 and main(evaluate) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / results.SUMMARY).read_text())
    assert summary["backend"] == "numpyro" and summary["model"] == "rnn-spn"
    assert summary["steps"] == 2 and summary["config"]["optimizer"] == "rmsprop"
    assert summary["config"]["rmsprop_alpha"] == 0.9 and summary["n_test"] == 100
    assert summary["test_elbo"] is None and "kl" not in summary
    assert 0.0 <= summary["test_error"] <= summary["test_sequence_error"] <= 1.0
    history = results.read_history(out / results.HISTORY)
    assert "validation_elbo" not in history and "kl" not in history
    assert np.isfinite(history["loss"].values).all()
    assert 0.0 <= float(history["validation_error"].values[-1]) <= 1.0
    evaluation = json.loads((out / results.EVALUATION).read_text())
    assert evaluation["backend"] == "numpyro" and "test_log_likelihood" not in evaluation
    assert evaluation["test_error"] == summary["test_error"]
    assert evaluation["test_sequence_error"] == summary["test_sequence_error"]
    assert "test_sequence_error" in printed
