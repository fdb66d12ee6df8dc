"""The LVAE generative model (Sønderby, Raiko, Maaløe, Sønderby, Winther, NIPS 2016) as a NumPyro
program.

The NumPyro twin of ``models/lvae.py`` (same sites, same networks, same registered defaults):

    p(x, z_1..z_L) = p(z_L) prod_{i=1}^{L-1} p(z_i | z_{i+1}) p(x | z_1),

    p(z_L) = N(0, I),  p(z_i | z_{i+1}) = N(mu_p,i(z_{i+1}), var_p,i(z_{i+1})),
    p(x | z_1) = Bernoulli(logits = MLP(z_1)).

Two guides: the plain bottom-up one (``ppl_dgm.guides.hierarchical_numpyro``, the paper's "VAE")
and the ladder guide (``ppl_dgm.guides.ladder_numpyro``); :func:`build` assembles either pair.

Networks (flax modules registered with ``flax_module``): ``top_down_{k}`` is p(z_{k+1} | z_{k+2})
(k = 0..L-2), a :class:`~ppl_dgm.nn.flax_blocks.GaussianLayer` (two hidden layers of
``hidden_dims[k + 1]`` units, batch norm in them and on the mean/variance heads, variance
``softplus(h) + min_scale**2``); ``p_x`` is p(x | z_1), two hidden layers of ``hidden_dims[0]``
units and the logits (no batch norm on them).
KL warm-up: every latent site's log-density is scaled by ``beta``
(:func:`~ppl_dgm.infer.numpyro_site_scales.kl_scale`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from ppl_dgm.guides.hierarchical_numpyro import HierarchicalGuide
from ppl_dgm.guides.ladder_numpyro import LadderGuide
from ppl_dgm.infer.numpyro_site_scales import kl_scale  # the annealed KL (warm-up) of each latent
from ppl_dgm.models.common import (
    PAPER_MIN_SCALE,  # the paper's variance floor, as a scale floor
    check_lvae_dims,
    check_lvae_hparams,
    lvae_layer_kwargs,
    lvae_top_down_widths,
)
from ppl_dgm.nn.flax_blocks import GaussianLayer, LogitsMLP, apply, network
from ppl_dgm.numpyro_pair import NumPyroPair


def top_down_layers(z_dims: Sequence[int], hidden_dims: Sequence[int], activation: str,
                    batch_norm: bool, min_scale: float,
                    widths: Sequence[int] | None = None) -> list[GaussianLayer]:
    """The networks of p(z_{k+1} | z_{k+2}), k = 0..L-2, with ``widths[k]`` hidden units (default
    ``hidden_dims[k + 1]``)."""
    widths = list(hidden_dims[1:] if widths is None else widths)
    if len(widths) != len(z_dims) - 1:
        raise ValueError(f"need {len(z_dims) - 1} top-down widths, got {widths}")
    return [GaussianLayer(z_dims[k], widths[k], activation, batch_norm, min_scale)
            for k in range(len(z_dims) - 1)]


class LVAEModel:
    """The generative model p; ``model(x, y=None, *, beta=1.0, train=True)`` is the NumPyro program.

    Sites ``z{L}``, ..., ``z1`` are sampled top-down (z_L first), then ``x`` is observed. ``y`` is
    accepted for the common signature and ignored (the LVAE is unsupervised).
    ``top_down_hidden[k]``: the hidden width of p(z_{k+1} | z_{k+2}) (default ``hidden_dims[k + 1]``).
    """

    def __init__(self, x_dim: int, z_dims: Sequence[int], hidden_dims: Sequence[int],
                 activation: str = "leaky_relu", batch_norm: bool = True,
                 min_scale: float = PAPER_MIN_SCALE,
                 top_down_hidden: Sequence[int] | None = None) -> None:
        check_lvae_dims(z_dims, hidden_dims)
        self.x_dim, self.z_dims, self.hidden_dims = x_dim, list(z_dims), list(hidden_dims)
        self.batch_norm = batch_norm
        self.top_down = top_down_layers(z_dims, hidden_dims, activation, batch_norm, min_scale,
                                        top_down_hidden)
        self.top_down_hidden = [layer.hidden for layer in self.top_down]
        self.decoder = LogitsMLP(x_dim, (hidden_dims[0],) * 2, activation, batch_norm)

    @property
    def n_layers(self) -> int:
        """L, the number of stochastic layers."""
        return len(self.z_dims)

    def networks(self, prefix: str = "top_down") -> list[Any]:
        """The top-down networks registered in the running program as ``{prefix}_{k}``."""
        return [network(f"{prefix}_{k}", layer, jnp.zeros((1, self.z_dims[k + 1])),
                        batch_norm=self.batch_norm)
                for k, layer in enumerate(self.top_down)]

    def __call__(self, x: jax.Array, y: jax.Array | None = None, *,
                 beta: float | jax.Array = 1.0, train: bool = True) -> jax.Array:
        L = self.n_layers
        top_down = self.networks()
        p_x = network("p_x", self.decoder, jnp.zeros((1, self.z_dims[0])),
                      batch_norm=self.batch_norm)
        with numpyro.plate("data", x.shape[0]):
            d = self.z_dims[-1]
            with kl_scale(beta):
                z = numpyro.sample(f"z{L}", dist.Normal(jnp.zeros(d), 1.0).to_event(1))
            for i in range(L - 1, 0, -1):
                _, loc, scale = top_down[i - 1](z, train=train)
                with kl_scale(beta):
                    z = numpyro.sample(f"z{i}", dist.Normal(loc, scale).to_event(1))
            logits = p_x(z, train=train)
            numpyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)
        return logits

    def sample_x(self, params: dict[str, Any], rng_key: jax.Array, n: int,
                 y: jax.Array | None = None) -> jax.Array:
        """Bernoulli means ``(n, x_dim)`` of ancestral samples (batch norm: running statistics)."""
        keys = jax.random.split(rng_key, self.n_layers)
        z = jax.random.normal(keys[-1], (n, self.z_dims[-1]))
        for i in range(self.n_layers - 1, 0, -1):
            _, loc, scale = apply(self.top_down[i - 1], params, f"top_down_{i - 1}", z,
                                  train=False)
            z = loc + scale * jax.random.normal(keys[i - 1], loc.shape)
        return jax.nn.sigmoid(apply(self.decoder, params, "p_x", z, train=False))


def build(hparams: Mapping[str, Any], data: Any) -> NumPyroPair:
    """The LVAE model and the guide ``hparams["guide"]`` (``"ladder"`` or ``"hierarchical"``).

    ``hparams`` keys as ``models/lvae.py``'s :func:`build` (defaults:
    ``ppl_dgm.models.common.LVAE_DEFAULTS``), plus
    ``num_particles``, which the NumPyro trainer adds and this pair ignores (the trainer's ELBO
    draws the particles). ``data`` needs ``x_dim``.
    """
    h = check_lvae_hparams(hparams)
    z_dims, hidden_dims, common = h["z_dims"], h["hidden_dims"], lvae_layer_kwargs(h)
    p = LVAEModel(int(data.x_dim), z_dims, hidden_dims, **common,
                  top_down_hidden=lvae_top_down_widths(h))
    q: Any
    if h["guide"] == "ladder":
        q = LadderGuide(int(data.x_dim), z_dims, hidden_dims, **common,
                        shared=p if h["share_top_down"] else None,
                        only_mu_up=bool(h["only_mu_up"]))
    elif h["guide"] == "hierarchical":
        q = HierarchicalGuide(int(data.x_dim), z_dims, hidden_dims, **common)
    else:
        raise ValueError(f"unknown LVAE guide {h['guide']!r}; choose 'ladder' or 'hierarchical'")
    return NumPyroPair(p, q, max_plate_nesting=1, sampler=p.sample_x)
