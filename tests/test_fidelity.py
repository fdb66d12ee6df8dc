"""Fidelity to the authors' recipes: the order of gradient clipping in both trainers (against a
recomputation of both clippings), the glimpse sampler's conventions in both backends (against
torch and a hand computation), exact gradients of the classifier in the unlabelled ADGM/SDGM bound
(q(y|a,x) must not be detached), the learning-rate schedule, and M2's ELBO across backends.
"""

from __future__ import annotations

import math
import warnings
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_numpyro_adgm import _normal_base, _torch_to_flax, enum_loss, hand_unlabelled
from test_numpyro_adgm import binary as np_binary
from test_numpyro_adgm import init_params as adgm_init_params
from test_numpyro_adgm import normal as np_normal
from test_numpyro_adgm import tiny_pair as np_tiny_pair

from ppl_dgm import registry
from ppl_dgm.config import TrainConfig, resolve
from ppl_dgm.errors import UserError


def fast_compile(fn, *args):
    """``jax.jit(fn)(*args)`` with XLA's optimisation passes off (the compilation dominates)."""
    options = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
    return jax.jit(fn).lower(*args).compile(options)(*args)


# ------------------------------------------------------------------------------ clipping order
GRADS = [np.array([3.0, -0.5, 10.0, 0.2], np.float32), np.array([[-2.0, 0.05], [0.7, -4.0]], np.float32)]
VALUE, NORM = 1.0, 1.5


def hand_clip(grads, order, value=VALUE, norm=NORM, eps=0.0):
    """Element-wise clipping to [-value, value] and global-norm clipping to ``norm``, in ``order``."""
    def by_value(gs):
        return [np.clip(g, -value, value) for g in gs]

    def by_norm(gs):
        total = math.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in gs))
        return [g * min(1.0, norm / (total + eps)) for g in gs]

    steps = [by_value, by_norm] if order == "value_then_norm" else [by_norm, by_value]
    for step in steps:
        grads = step(grads)
    return grads


def test_the_two_orders_differ_on_these_gradients():
    a, b = hand_clip(GRADS, "value_then_norm"), hand_clip(GRADS, "norm_then_value")
    assert max(np.abs(x - y).max() for x, y in zip(a, b, strict=True)) > 0.1


@pytest.mark.parametrize("order", ["value_then_norm", "norm_then_value"])
def test_pyro_trainer_clips_in_the_configured_order(order):
    from ppl_dgm.training.loop import clip_gradients

    params = [torch.zeros(g.shape, requires_grad=True) for g in GRADS]
    for p, g in zip(params, GRADS, strict=True):
        p.grad = torch.tensor(g)
    config = SimpleNamespace(clip_value=VALUE, clip_norm=NORM, clip_order=order)
    clip_gradients(params, config)
    # torch adds 1e-6 to the norm it divides by
    for p, expected in zip(params, hand_clip(GRADS, order, eps=1e-6), strict=True):
        np.testing.assert_allclose(p.grad.numpy(), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("order", ["value_then_norm", "norm_then_value"])
def test_numpyro_optimizer_clips_in_the_configured_order(order):
    """RMSprop's first step is lr * g / (sqrt(0.01 g^2) + eps) of the clipped gradient g (optax,
    eps outside the square root): with lr = 1 and eps = 1 a strictly monotone map of g."""
    from ppl_dgm.training.numpyro_loop import make_optimizer

    config = TrainConfig(model="m2", optimizer="rmsprop", lr=1.0, rmsprop_alpha=0.99, rmsprop_eps=1.0,
                         clip_value=VALUE, clip_norm=NORM, clip_order=order)
    opt = make_optimizer(config, steps_per_epoch=10)
    params = [jnp.zeros(g.shape) for g in GRADS]
    updates, _ = jax.jit(opt.update)([jnp.asarray(g) for g in GRADS], opt.init(params), params)
    for u, g in zip(updates, hand_clip(GRADS, order), strict=True):
        np.testing.assert_allclose(np.asarray(u), -g / (np.sqrt(0.01 * g ** 2) + 1.0), rtol=2e-5)


def test_registered_recipes_clip_as_their_authors():
    for backend in ("pyro", "numpyro"):
        for name in ("adgm", "sdgm"):  # global norm 5 first, then element-wise to [-1, 1]
            config = resolve(registry.get(name, backend), {})
            assert (config.clip_norm, config.clip_value, config.clip_order) == (
                5.0, 1.0, "norm_then_value")
        for name in ("rnn-spn", "ffn-spn", "cnn-seq"):  # element-wise 1 first, then the norm 5
            config = resolve(registry.get(name, backend), {})
            assert (config.clip_norm, config.clip_value, config.clip_order) == (
                5.0, 1.0, "value_then_norm")
    assert TrainConfig(model="m2").clip_order == "value_then_norm"  # earlier runs' behaviour
    with pytest.raises(UserError, match="clip-order"):
        TrainConfig(model="m2", clip_order="value_first")


# ------------------------------------------------------------------------------ glimpse sampler
@pytest.mark.parametrize("align_corners, padding_mode", [(True, "border"), (True, "zeros"),
                                                         (False, "border")])
def test_glimpse_options_agree_across_backends(align_corners, padding_mode):
    """(The defaults, False and zeros, are compared in test_numpyro_rnn_spn.)"""
    from ppl_dgm.nn import spatial, spatial_jax

    rng = np.random.default_rng(0)
    n, c, h, w = 4, 1, 11, 13
    images = rng.random((n, c, h, w)).astype(np.float32)
    theta = np.tile(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], np.float32), (n, 1, 1))
    theta[1] += rng.normal(0, 0.3, (2, 3)).astype(np.float32)
    theta[2, :, 2] = [0.8, -0.9]  # partly off the image
    theta[3] = 1.8 * theta[3] + rng.normal(0, 0.02, (2, 3))  # off the pixel lattice (kinks)
    weights = rng.standard_normal((n, c, 7, 9)).astype(np.float32)

    def fn(i, t):
        return spatial_jax.transform(i, t, (7, 9), align_corners=align_corners,
                                     padding_mode=padding_mode)

    def both(i, t, t_moved):  # one compilation: values at theta, gradients at t_moved
        return fn(i, t), jax.grad(lambda i, t: (fn(i, t) * weights).sum(), argnums=(0, 1))(
            i, t_moved)

    # gradients off the pixel lattice (on it, the bilinear weights have kinks)
    moved = theta + rng.normal(0, 0.01, theta.shape).astype(np.float32)
    got, (gi, gt) = jax.jit(both)(images, theta, moved)
    out = spatial.transform(torch.tensor(images), torch.tensor(theta), (7, 9),
                            align_corners=align_corners, padding_mode=padding_mode)
    np.testing.assert_allclose(np.asarray(got), out.numpy(), atol=1e-5, rtol=0)
    ti, tt = torch.tensor(images, requires_grad=True), torch.tensor(moved, requires_grad=True)
    out = spatial.transform(ti, tt, (7, 9), align_corners=align_corners, padding_mode=padding_mode)
    (out * torch.tensor(weights)).sum().backward()
    np.testing.assert_allclose(np.asarray(gi), ti.grad.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.asarray(gt), tt.grad.numpy(), atol=3e-4, rtol=1e-4)


def test_corner_aligned_border_sampler_is_the_authors_convention():
    """Lasagne's transformer: output pixel j of w at x_t = -1 + 2 j / (w - 1), source pixel
    (x_t + 1) / 2 * (W - 1), clamped at the border; by hand on a small image."""
    from ppl_dgm.nn import spatial

    rng = np.random.default_rng(1)
    image = rng.random((5, 7)).astype(np.float32)
    eye = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    same = spatial.transform(torch.tensor(image)[None, None], eye, (5, 7), align_corners=True,
                             padding_mode="border")
    np.testing.assert_allclose(same[0, 0].numpy(), image, atol=1e-6)  # the identity is exact
    # shifted right by half the width: the right half comes from the border column
    shift = torch.tensor([[[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]])
    out = spatial.transform(torch.tensor(image)[None, None], shift, (5, 7), align_corners=True,
                            padding_mode="border")[0, 0].numpy()
    expected = np.zeros_like(image)
    for i in range(5):
        for j in range(7):
            x = min((-1 + 2 * j / 6 + 1.0 + 1) / 2 * 6, 6.0)
            x0 = int(np.floor(x))
            dx = x - x0
            expected[i, j] = image[i, x0] * (1 - dx) + (image[i, min(x0 + 1, 6)] * dx)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert np.allclose(out[:, 4:], image[:, 6:7])
    with pytest.raises(ValueError, match="padding_mode"):
        spatial.transform(torch.tensor(image)[None, None], eye, 3, padding_mode="reflect")


@pytest.mark.parametrize("name", ["cnn-seq"])
def test_readers_take_the_authors_sampler_in_both_backends(name):
    """``--set align_corners=true --set padding_mode=border``: the torch reader's weights in the
    flax reader give the same glimpses and logits, and the glimpses differ from the default's."""
    from test_numpyro_rnn_spn import build, canvases, compiled, torch_to_flax

    authors = {"align_corners": True, "padding_mode": "border"}
    torch.manual_seed(0)
    reader = build(name, backend="pyro", **authors).p.net
    default = build(name, backend="pyro").p.net
    default.load_state_dict(reader.state_dict())
    with torch.no_grad():  # a transform reaching off the canvas: the padding matters
        for pname, p in reader.named_parameters():
            p.add_((0.3 if "affine" in pname else 0.05) * torch.randn_like(p))
        default.load_state_dict(reader.state_dict())
    x = canvases(2, seed=5)
    expected = reader(torch.tensor(x)).detach().numpy()
    _, glimpses_t = reader.glimpses(torch.tensor(x))
    _, glimpses_default = default.glimpses(torch.tensor(x))
    assert (glimpses_t - glimpses_default).abs().max() > 1e-3
    pair = build(name, **authors)
    assert (pair.model.net.align_corners, pair.model.net.padding_mode) == (True, "border")
    params = torch_to_flax(name, reader)
    logits, (_, glimpses) = compiled(
        lambda p, x: (pair.model.logits(p, x.reshape(2, -1)), pair.model.glimpses(p, x)), params, x)
    np.testing.assert_allclose(np.asarray(glimpses), glimpses_t.detach().numpy(), atol=3e-5)
    np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(UserError, match="padding_mode"):
        build(name, padding_mode="reflection")


# ------------------------------------------------------- the classifier in the unlabelled bound
X_DIM, K, A_DIM, Z_DIM, B = 6, 3, 2, 2, 4
ALPHA = 0.7


@pytest.mark.parametrize("name", ["adgm", "sdgm"])
def test_pyro_unlabelled_bound_differentiates_the_classifier(name):
    """d loss / d (q(y|a,x)'s parameters) equals that of the hand sum over labels: it would be zero
    (or differ) if q(y|a,x) were detached where it weighs the per-label bounds or in its entropy."""
    import pyro
    from pyro import poutine
    from pyro.infer import TraceEnum_ELBO
    from torch.distributions import Bernoulli, Normal

    pyro.set_rng_seed(0)
    hparams = {"a_dim": A_DIM, "z_dim": Z_DIM, "hidden": [5], "activation": "tanh",
               "batch_norm": False, "average_y_over_particles": True, "alpha": ALPHA,
               "classification_log_mean": True}
    pair = registry.get(name).builder()(hparams, SimpleNamespace(x_dim=X_DIM, n_classes=K))
    x = torch.bernoulli(torch.full((B, X_DIM), 0.5), generator=torch.Generator().manual_seed(3))
    captured = {}

    def guide(*args, **kwargs):
        captured["trace"] = poutine.trace(pair.guide).get_trace(*args, **kwargs)

    loss = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(pair.model, guide, x, None)
    trace = captured["trace"]
    a, z = trace.nodes["a"]["value"], trace.nodes["z"]["value"]
    p, q = pair.p, pair.q
    log_qy = torch.log_softmax(q.q_y_logits(x, a), -1)
    bound = -Normal(*q.q_a(x)).log_prob(a).sum(-1)
    for k in range(K):
        y_k = F.one_hot(torch.full((B,), k), K).float()
        if name == "adgm":
            log_px = Bernoulli(logits=p.x_logits(p.x_net(z[k], y_k))).log_prob(x).sum(-1)
            log_pa = Normal(*p.a_head(p.a_net(x, y_k, z[k]))).log_prob(a).sum(-1)
        else:
            log_pa = Normal(*p.a_head(p.a_net(z[k], y_k))).log_prob(a).sum(-1)
            log_px = Bernoulli(logits=p.x_logits(p.x_net(a, z[k], y_k))).log_prob(x).sum(-1)
        log_joint = (log_px - math.log(K) + Normal(0.0, 1.0).log_prob(z[k]).sum(-1) + log_pa
                     - Normal(*q.q_z(x, a, y_k)).log_prob(z[k]).sum(-1))
        bound = bound + log_qy[:, k].exp() * (log_joint - log_qy[:, k])
    hand = -bound.sum()
    torch.testing.assert_close(loss, hand, rtol=1e-5, atol=1e-4)
    classifier = list(q.y_net.parameters()) + list(q.y_logits.parameters())
    g_loss = torch.autograd.grad(loss, classifier, retain_graph=True)
    g_hand = torch.autograd.grad(hand, classifier)
    assert max(g.abs().max() for g in g_hand) > 1e-3
    for gl, gh in zip(g_loss, g_hand, strict=True):
        torch.testing.assert_close(gl, gh, rtol=1e-4, atol=1e-5)


def test_numpyro_unlabelled_bound_differentiates_the_classifier():
    """The same for the NumPyro pair: jax.grad of TraceEnum_ELBO's loss and of the hand sum over
    labels (test_numpyro_adgm's) agree on q(y|a,x)'s parameters, with the same noise. (ADGM and
    SDGM share the guide, where q(y|a,x) weighs the labels; ADGM's pair is taken.)"""
    from numpyro import handlers
    from numpyro.infer import TraceEnum_ELBO
    from test_numpyro_adgm import fixed_noise

    name, beta = "adgm", 0.6
    pair = np_tiny_pair(name)
    params = adgm_init_params(name, seed=7)
    x = np_binary(21, (B, X_DIM))
    eps_a, eps_z = np_normal(22, (B, A_DIM)), np_normal(23, (K, B, Z_DIM))
    guide = handlers.substitute(pair.guide, substitute_fn=fixed_noise({"a": eps_a, "z": eps_z}))
    elbo = TraceEnum_ELBO(max_plate_nesting=pair.max_plate_nesting)

    def loss(qy):
        return elbo.loss(jax.random.PRNGKey(3), {**params, "q_y$params": qy}, pair.model, guide, x,
                         None, beta=beta)

    def hand(qy):
        p = {**params, "q_y$params": qy}
        return -hand_unlabelled(name, pair, p, x, eps_a, eps_z, beta).sum()

    values, g_loss, g_hand = fast_compile(
        lambda qy: ((loss(qy), hand(qy)), jax.grad(loss)(qy), jax.grad(hand)(qy)),
        params["q_y$params"])
    np.testing.assert_allclose(values[0], values[1], rtol=1e-5, atol=1e-4)
    flat_loss, flat_hand = jax.tree.leaves(g_loss), jax.tree.leaves(g_hand)
    assert max(float(jnp.abs(g).max()) for g in flat_hand) > 1e-3
    for gl, gh in zip(flat_loss, flat_hand, strict=True):
        np.testing.assert_allclose(np.asarray(gl), np.asarray(gh), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------ lr schedule
def expected_lr(config, epoch):
    """lr in epoch ``epoch`` (0-based): lr * lr_decay ** (epoch // lr_decay_every), >= min_lr."""
    return max(config.lr * config.lr_decay ** (epoch // config.lr_decay_every), config.min_lr)


def test_lr_decay_and_min_lr_in_both_trainers(tmp_path):
    from ppl_dgm.training.loop import Trainer
    from ppl_dgm.training.numpyro_loop import learning_rate

    overrides = {"dataset": "digits", "labels": 50, "epochs": 5, "steps_per_epoch": 2,
                 "batch_size": 20, "labelled_batch_size": 20, "device": "cpu", "lr": 1e-2,
                 "lr_decay": 0.5, "lr_decay_every": 2, "min_lr": 3e-3, "eval_batch_size": 500,
                 "validation_size": 100}
    config = resolve(registry.get("m2"), overrides, {"hidden": [8], "z_dim": 2})
    trainer = Trainer(config, tmp_path, progress=False)
    used = []
    step = trainer.opt.step

    def recording_step(*args, **kwargs):
        used.append(trainer.opt.param_groups[0]["lr"])
        return step(*args, **kwargs)

    trainer.opt.step = recording_step
    trainer.fit()
    expected = [expected_lr(config, e) for e in range(config.epochs)]
    assert expected == pytest.approx([1e-2, 1e-2, 5e-3, 5e-3, 3e-3])
    # the optimiser's lr at every step of epoch e (two steps each)
    np.testing.assert_allclose(used, np.repeat(expected, 2), rtol=1e-12)
    # the history records the lr each epoch was trained with
    np.testing.assert_allclose([r["lr"] for r in trainer.history], expected, rtol=1e-12)
    # NumPyro: optax's schedule, read at every step count of the same run
    schedule = learning_rate(config, steps_per_epoch=2)
    steps = jnp.arange(2 * config.epochs)
    np.testing.assert_allclose(np.asarray(jax.jit(jax.vmap(schedule))(steps)),
                               np.repeat(expected, 2), rtol=1e-6)


# ------------------------------------------------------------------------------ M2 across backends
def test_m2_pyro_weights_give_the_same_elbo_in_numpyro():
    """The Pyro M2's networks copied into the flax M2: the same unlabelled (y enumerated) and
    labelled ELBO with the same noise of z."""
    import pyro
    from pyro import poutine
    from pyro.infer import TraceEnum_ELBO as PyroTraceEnum

    from ppl_dgm.models.m2 import build as build_torch
    from ppl_dgm.models.m2_numpyro import build as build_flax

    class FixNoise(poutine.messenger.Messenger):
        def __init__(self, eps):
            super().__init__()
            self.eps = eps

        def _pyro_sample(self, msg):
            if msg["name"] in self.eps:
                base = _normal_base(msg["fn"])
                msg["value"] = base.loc + self.eps[msg["name"]] * base.scale

    info = SimpleNamespace(x_dim=X_DIM, n_classes=K)
    hparams = {"z_dim": Z_DIM, "hidden": [5, 4], "activation": "tanh", "batch_norm": False,
               "alpha": ALPHA}
    torch.manual_seed(0)
    torch_pair = build_torch(hparams, info)
    p, q = torch_pair.p, torch_pair.q
    pair = build_flax(hparams, info)

    def rename(tree, old, new):
        return {(new if k == old else k): v for k, v in tree.items()}

    params = {"classifier$params": _torch_to_flax(q.classifier[0], q.classifier[1]),
              "encoder$params": rename(_torch_to_flax(q.encoder, q.z_head), "head", "z_head"),
              "decoder$params": rename(_torch_to_flax(p.decoder, p.x_logits), "logits", "x_logits")}
    x, y = np_binary(31, (B, X_DIM)), jnp.array([1, 0, 2, 2])
    eps_z = np_normal(32, (K, B, Z_DIM))
    losses = []
    for labels, eps in ((None, {"z": eps_z}), (y, {"z": eps_z[0]})):
        loss, _, _ = enum_loss(pair, params, x, labels, eps)
        losses.append(float(loss))

        def guide(*args, eps=eps, **kwargs):
            with FixNoise({k: torch.tensor(np.asarray(v)) for k, v in eps.items()}):
                q(*args, **kwargs)

        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", "TraceEnum_ELBO found no sample sites")
            pyro_loss = PyroTraceEnum(max_plate_nesting=1).loss(
                p, guide, torch.tensor(np.asarray(x)),
                None if labels is None else torch.tensor(np.asarray(labels)).long(), beta=0.6)
        pyro.clear_param_store()
        np.testing.assert_allclose(float(loss), pyro_loss, rtol=1e-5, atol=1e-4)
    assert losses[0] != pytest.approx(losses[1], abs=1e-2)  # two different bounds were compared
