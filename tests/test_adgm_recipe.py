"""The ADGM/SDGM authors' initialisation (``weight_init="glorot"``) and weight prior
(``weight_prior_std``) on both backends, against the formulas they are taken from.

Glorot-normal (Glorot and Bengio 2010, Lasagne's ``GlorotNormal(gain)``): std = gain * sqrt(2 /
(fan_in + fan_out)), gain sqrt(2) for ReLU hidden layers, 1 for the logits; the Gaussian heads and
every bias N(0, 1e-3^2). Weight prior N(0, s^2) per weight matrix, scaled by 1/N: its gradient is
W / (s^2 N), added before clipping; biases and batch-norm parameters have none.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ppl_dgm import registry
from ppl_dgm.config import TrainConfig
from ppl_dgm.training.loop import add_weight_prior


class Data:
    x_dim, n_classes = 784, 10


HPARAMS = {**registry.get("adgm").hparams, "alpha": 1.0, "weight_init": "glorot"}
SMALL = 1e-3


def glorot_std(fan_in: int, fan_out: int, gain: float) -> float:
    return gain * math.sqrt(2.0 / (fan_in + fan_out))


def check_std(values: np.ndarray, expected: float, what: str) -> None:
    # the sample std of n >= 5000 normal draws lies within 5% of the true one (about 10 SEs)
    values = np.asarray(values).ravel()
    assert values.size >= 100, what
    tolerance = 0.05 if values.size >= 5000 else 0.2
    assert abs(values.std() / expected - 1) < tolerance, (what, values.std(), expected)


def test_torch_glorot_initialisation_of_adgm():
    torch.manual_seed(0)
    pair = registry.get("adgm").builder()(HPARAMS, Data)
    q = pair.q
    # hidden layers: x (784) -> 500 and a (100) -> 500 inputs of q(y|a,x), 500 -> 500
    check_std(q.y_net.inputs[0].weight.detach(), glorot_std(784, 500, math.sqrt(2)), "q_y x")
    check_std(q.y_net.inputs[1].weight.detach(), glorot_std(100, 500, math.sqrt(2)), "q_y a")
    check_std(q.y_net.rest[0].weight.detach(), glorot_std(500, 500, math.sqrt(2)), "q_y 500")
    check_std(q.y_logits.weight.detach(), glorot_std(500, 10, 1.0), "q_y logits")
    check_std(pair.p.x_logits.weight.detach(), glorot_std(500, 784, 1.0), "p_x logits")
    for head in (q.a_head, q.z_head, pair.p.a_head):
        for layer in (head.loc, head.logvar):
            check_std(layer.weight.detach(), SMALL, "Gaussian head")
            check_std(layer.bias.detach(), SMALL, "Gaussian head bias")
    check_std(q.y_net.inputs[0].bias.detach(), SMALL, "hidden bias")
    # a new Gaussian head is N(0, I) whatever the input: loc ~ 0, scale ~ 1
    with torch.no_grad():
        loc, scale = q.q_a(torch.rand(8, 784).bernoulli())
    assert loc.abs().max() < 0.1 and (scale - 1).abs().max() < 0.1


def test_flax_glorot_initialisation_of_adgm():
    jax = pytest.importorskip("jax")
    from ppl_dgm.nn.flax_blocks import GaussianMLP, LogitsMLP

    x, a = jax.numpy.zeros((2, 784)), jax.numpy.zeros((2, 100))
    q_y = LogitsMLP(10, (500, 500), "relu", True, "glorot")
    params = q_y.init(jax.random.PRNGKey(0), x, a, train=False)["params"]["mlp"]
    check_std(params["input_0"]["kernel"], glorot_std(784, 500, math.sqrt(2)), "x")
    check_std(params["input_1"]["kernel"], glorot_std(100, 500, math.sqrt(2)), "a")
    check_std(params["dense_1"]["kernel"], glorot_std(500, 500, math.sqrt(2)), "500")
    check_std(params["input_0"]["bias"], SMALL, "bias")
    logits = q_y.init(jax.random.PRNGKey(1), x, a, train=False)["params"]["logits"]
    check_std(logits["kernel"], glorot_std(500, 10, 1.0), "logits")
    q_a = GaussianMLP(100, (500, 500), "relu", True, "glorot")
    head = q_a.init(jax.random.PRNGKey(2), x, train=False)["params"]["head"]
    for name in ("loc", "logvar"):
        check_std(head[name]["kernel"], SMALL, name)
        check_std(head[name]["bias"], SMALL, name + " bias")


def test_unknown_weight_init_is_refused():
    with pytest.raises(ValueError, match="weight_init must be one of"):
        registry.get("adgm").builder()({**HPARAMS, "weight_init": "xavier"}, Data)


def test_pyro_weight_prior_gradient_equals_the_prior_term_differentiated():
    torch.manual_seed(0)
    weight = torch.randn(5, 3, requires_grad=True)
    bias = torch.randn(5, requires_grad=True)
    x = torch.randn(7, 3)
    std, n = 0.7, 40

    def data_loss():
        return ((x @ weight.T + bias) ** 2).mean()

    # the independent computation: the prior's term written out and differentiated by autograd
    total = data_loss() + (weight ** 2).sum() / (2 * std ** 2 * n)
    expected_w, expected_b = torch.autograd.grad(total, (weight, bias))
    data_loss().backward()
    add_weight_prior([weight, bias], std, n)
    torch.testing.assert_close(weight.grad, expected_w)
    torch.testing.assert_close(bias.grad, expected_b)  # biases carry no prior


def test_numpyro_weight_prior_enters_before_the_optimiser():
    jax = pytest.importorskip("jax")
    from ppl_dgm.training.numpyro_loop import make_optimizer

    params = {"kernel": jax.numpy.asarray([[0.5, -2.0], [1.0, 3.0]]),
              "bias": jax.numpy.asarray([0.5, -1.0])}
    zero = jax.tree_util.tree_map(jax.numpy.zeros_like, params)
    for std, moved in ((1.0, True), (0.0, False)):
        config = TrainConfig(model="adgm", lr=0.1, weight_prior_std=std)
        opt = make_optimizer(config, steps_per_epoch=10, n_train=50)
        updates, _ = opt.update(zero, opt.init(params), params)
        # Adam's first step is -lr * g / (|g| + eps): -lr * sign(W) where the prior's gradient
        # W / (s^2 N) is the only gradient; nothing for the bias (no prior) or without a prior
        expected = -0.1 * np.sign(np.asarray(params["kernel"])) if moved else 0.0
        np.testing.assert_allclose(np.asarray(updates["kernel"]), expected, atol=1e-5)
        np.testing.assert_allclose(np.asarray(updates["bias"]), 0.0)
