"""Network blocks for the NumPyro (JAX/flax) backend, mirroring ``ppl_dgm.nn.torch_blocks``.

All blocks accept inputs with any number of leading batch dimensions, so that the extra leading
dimensions introduced by parallel enumeration (``y``) and vectorised particles broadcast through them.
Inside a NumPyro program they are registered with ``numpyro.contrib.module.flax_module`` (with
``mutable=["batch_stats"]`` when batch normalisation is on); ``train=False`` selects the running
statistics, so predictions do not depend on the composition of a test batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from numpyro.contrib.module import flax_module

from ppl_dgm.nn import PAPER_MIN_SCALE
from ppl_dgm.nn.init_rules import SMALL_STD, check_weight_init, hidden_gain

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": nn.relu,
    "leaky_relu": lambda h: nn.leaky_relu(h, 0.01),  # torch's default slope
    "softplus": nn.softplus,
    "tanh": jnp.tanh,
    "elu": nn.elu,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """An activation function by name (``relu``, ``leaky_relu``, ``softplus``, ``tanh``, ``elu``)."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose from {sorted(ACTIVATIONS)}") from None


def dense(features: int, fan_in: int, use_bias: bool = True, name: str | None = None,
          init: str = "torch", gain: float = 1.0) -> nn.Dense:
    """``nn.Dense`` initialised as ``torch.nn.Linear`` (``init="torch"``): weights and bias
    ~ U(+-1/sqrt(fan_in)); both backends then start from the same distribution of networks (flax's
    default LeCun-normal weights and zero biases would be a second difference between them).

    ``init="glorot"``: Glorot-normal weights with ``gain`` and N(0, 1e-3^2) biases; ``"small"``:
    weights and biases N(0, 1e-3^2). These are ``torch_blocks.init_weights(..., "glorot")``'s rules
    (the ADGM/SDGM authors' Lasagne initialisation), applied by the blocks below.
    """
    if init == "torch":
        bound = 1.0 / math.sqrt(fan_in)

        def uniform(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
            return jax.random.uniform(key, shape, dtype, -bound, bound)

        kernel_init = bias_init = uniform
    elif init == "glorot":
        kernel_init = nn.initializers.variance_scaling(gain ** 2, "fan_avg", "normal")
        bias_init = nn.initializers.normal(SMALL_STD)
    elif init == "small":
        kernel_init = bias_init = nn.initializers.normal(SMALL_STD)
    else:
        check_weight_init(init)  # raises: "small" is this module's own, for the heads
    return nn.Dense(features, use_bias=use_bias, kernel_init=kernel_init, bias_init=bias_init,
                    name=name)


def _hidden_init(init: str, act: str) -> dict[str, Any]:
    """``dense`` keywords of a hidden layer under the block's ``init``."""
    if init == "glorot":
        return {"init": "glorot", "gain": hidden_gain(act)}
    return {"init": init}


def batch_norm(train: bool, name: str | None = None) -> nn.BatchNorm:
    """Batch normalisation over every leading dimension (features last), torch's momentum and eps.

    Under enumeration a hidden layer has shape ``(n_labels, B, H)``: its statistics are taken over
    every row, as in ``torch_blocks.BatchNorm``. The running averages use torch's convention
    (new = 0.9 old + 0.1 batch, i.e. flax ``momentum=0.9``).
    """
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)


class MultiInputMLP(nn.Module):
    """``act(BN(sum_i W_i u_i + b))`` followed by further hidden layers.

    Each input is projected with its own ``Dense`` and the projections are summed (the authors'
    ``Dense(a) + Dense(x) + Dense(y)``) instead of concatenating the inputs: under parallel
    enumeration of ``y`` the projection of ``x`` is computed once per data point, not once per label.
    Inputs broadcast against each other, e.g. x of shape (B, D) with y of shape (10, 1, 10).
    Only the first projection has a bias (the sum needs one).
    """

    hidden: Sequence[int]
    act: str = "relu"
    batch_norm: bool = False
    weight_init: str = "torch"

    @nn.compact
    def __call__(self, *inputs: jax.Array, train: bool = True) -> jax.Array:
        if not self.hidden:
            raise ValueError("MultiInputMLP needs at least one hidden layer")
        f = activation(self.act)
        how = _hidden_init(self.weight_init, self.act)
        h = dense(self.hidden[0], inputs[0].shape[-1], name="input_0", **how)(inputs[0])
        for i, u in enumerate(inputs[1:], start=1):
            h = h + dense(self.hidden[0], u.shape[-1], use_bias=False, name=f"input_{i}",
                          **how)(u)
        if self.batch_norm:
            h = batch_norm(train, name="bn_0")(h)
        h = f(h)
        for i, width in enumerate(self.hidden[1:], start=1):
            h = dense(width, h.shape[-1], name=f"dense_{i}", **how)(h)
            if self.batch_norm:
                h = batch_norm(train, name=f"bn_{i}")(h)
            h = f(h)
        return h


class GaussianHead(nn.Module):
    """Diagonal Gaussian parameters ``(loc, scale)`` from a hidden layer.

    ``variance="exp"`` (default): the log-variance is unconstrained (``scale = exp(logvar / 2)``),
    never passed through a softplus, and ``min_scale`` adds an optional floor to the scale.
    ``variance="softplus"``: the head gives the variance itself, ``var = softplus(h) +
    min_scale**2`` (the LVAE authors' code, as ``torch_blocks.GaussianHead``). ``batch_norm``
    normalises the two heads (the LVAE paper does this on the latent mean/variance layers).
    """

    out_dim: int
    batch_norm: bool = False
    min_scale: float = 0.0
    variance: str = "exp"
    weight_init: str = "torch"

    @nn.compact
    def __call__(self, h: jax.Array, train: bool = True) -> tuple[jax.Array, jax.Array]:
        if self.variance not in ("exp", "softplus"):
            raise ValueError(f"variance must be 'exp' or 'softplus' (got {self.variance!r})")
        how = "small" if self.weight_init == "glorot" else self.weight_init
        loc = dense(self.out_dim, h.shape[-1], name="loc", init=how)(h)
        logvar = dense(self.out_dim, h.shape[-1], name="logvar", init=how)(h)
        if self.batch_norm:
            loc = batch_norm(train, name="loc_bn")(loc)
            logvar = batch_norm(train, name="logvar_bn")(logvar)
        if self.variance == "softplus":
            return loc, jnp.sqrt(nn.softplus(logvar) + self.min_scale ** 2)
        scale = jnp.exp(0.5 * logvar)
        if self.min_scale > 0:
            scale = scale + self.min_scale
        return loc, scale


class LogitsMLP(nn.Module):
    """Logits from several inputs: a :class:`MultiInputMLP` (submodule ``mlp``) and a linear map
    (``logits``), e.g. q(y | a, x) or p(x | y, z). The twin of ``MultiInputMLP`` + ``torch.nn.Linear``."""

    out_dim: int
    hidden: Sequence[int]
    act: str = "relu"
    batch_norm: bool = False
    weight_init: str = "torch"

    @nn.compact
    def __call__(self, *inputs: jax.Array, train: bool = True) -> jax.Array:
        h = MultiInputMLP(self.hidden, self.act, self.batch_norm, self.weight_init, name="mlp")(
            *inputs, train=train)
        return dense(self.out_dim, h.shape[-1], name="logits", init=self.weight_init)(h)


class GaussianMLP(nn.Module):
    """Diagonal Gaussian ``(loc, scale)`` from several inputs: a :class:`MultiInputMLP` (submodule
    ``mlp``) and a :class:`GaussianHead` (``head``), e.g. q(z | a, y, x) or p(a | x, y, z)."""

    out_dim: int
    hidden: Sequence[int]
    act: str = "relu"
    batch_norm: bool = False
    weight_init: str = "torch"

    @nn.compact
    def __call__(self, *inputs: jax.Array, train: bool = True) -> tuple[jax.Array, jax.Array]:
        h = MultiInputMLP(self.hidden, self.act, self.batch_norm, self.weight_init, name="mlp")(
            *inputs, train=train)
        return GaussianHead(self.out_dim, weight_init=self.weight_init, name="head")(h)


class GaussianLayer(nn.Module):
    """A Gaussian conditional: a two-layer MLP (submodule ``mlp``) then a Gaussian head (``head``).

    The LVAE's connection (``models/lvae_numpyro.py``, ``guides/hierarchical_numpyro.py``,
    ``guides/ladder_numpyro.py``; CaGeM's layers): batch norm in the hidden layers and on the
    mean/variance heads, variance ``softplus(h) + min_scale**2``. Returns ``(h, loc, scale)``: ``h``
    is the MLP's last hidden layer (the ladder guide's deterministic d_{k+1}), ``(loc, scale)`` the
    head's Gaussian. The twin of ``torch_blocks.GaussianMLP`` (``mlp.input_0, mlp.bn_0,
    mlp.dense_1, mlp.bn_1`` are the torch ``mlp.inputs[0], mlp.first[0], mlp.rest[0],
    mlp.rest[1]``; ``head.loc, head.logvar, head.loc_bn, head.logvar_bn`` the torch head's).
    """

    out_dim: int
    hidden: int
    act: str = "leaky_relu"
    batch_norm: bool = True
    min_scale: float = PAPER_MIN_SCALE
    n_hidden: int = 2
    variance: str = "softplus"

    @nn.compact
    def __call__(self, *u: jax.Array,
                 train: bool = True) -> tuple[jax.Array, jax.Array, jax.Array]:
        # several inputs (CaGeM's p(z1 | y, z2)): one projection each, summed (``mlp.input_i``)
        h = MultiInputMLP((self.hidden,) * self.n_hidden, self.act, self.batch_norm,
                          name="mlp")(*u, train=train)
        loc, scale = GaussianHead(self.out_dim, self.batch_norm, self.min_scale, self.variance,
                                  name="head")(h, train=train)
        return h, loc, scale


def network(name: str, module: nn.Module, *example_inputs: jax.Array,
            batch_norm: bool = False) -> Callable[..., Any]:
    """Register ``module`` in the running NumPyro program (``flax_module``) and return its apply.

    ``example_inputs`` initialise the parameters on the first call (site ``name$params``); with
    ``batch_norm`` the running statistics are the mutable site ``name$state``
    (``mutable=["batch_stats"]``). Call the result as ``net(*inputs, train=...)``.
    """
    return flax_module(name, module, *example_inputs,
                       mutable=["batch_stats"] if batch_norm else None)


def apply(module: nn.Module, params: dict[str, Any], name: str, *inputs: jax.Array,
          **kwargs: Any) -> Any:
    """Apply a module registered as ``name`` outside a program, reading ``params`` (evaluation).

    ``params`` holds the program's site values (``name$params`` and, with batch norm,
    ``name$state``); batch norm should be called with ``train=False`` here.
    """
    variables = {"params": params[f"{name}$params"], **params.get(f"{name}$state", {})}
    return module.apply(variables, *inputs, **kwargs)
