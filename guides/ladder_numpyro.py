"""The ladder guide (Sønderby, Raiko, Maaløe, Sønderby, Winther, NIPS 2016) as a NumPyro program.

The NumPyro twin of ``guides/ladder.py``. A deterministic bottom-up pass, d_1 = MLP(x),
d_i = MLP(d_{i-1}), gives for every stochastic layer a likelihood estimate (mu_hat_i, var_hat_i) =
heads(d_i). Sampling then goes top-down:

    q(z_L | x) = N(mu_hat_L, var_hat_L),
    q(z_i | z_{i+1}, x) = N(mu_q, var_q) for i < L, where (mu_p, var_p) = top-down(z_{i+1}) and
    var_q = 1 / (1/var_hat + 1/var_p),   mu_q = (mu_hat/var_hat + mu_p/var_p) * var_q

(:func:`precision_weighted_merge`). Networks: ``q_up_{k}`` (the bottom-up layer k, MLP and
estimate head; the plain guide's names) and the top-down networks, either the generative model's
``top_down_{k}`` (``share_top_down``: the paper's description; the same parameter sites in both
programs) or the guide's own ``q_top_down_{k}`` of the same shape (the authors' scripts' default).
``only_mu_up``: each bottom-up layer after the first reads the previous mean estimate mu_hat
instead of the previous hidden state (the authors' script's default; ``guides/ladder.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from ppl_dgm.infer.numpyro_site_scales import kl_scale
from ppl_dgm.models.common import PAPER_MIN_SCALE, check_lvae_dims
from ppl_dgm.nn.flax_blocks import GaussianLayer, network


def precision_weighted_merge(loc_hat: jax.Array, scale_hat: jax.Array, loc_p: jax.Array,
                             scale_p: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The normalised product N(loc_hat, scale_hat^2) * N(loc_p, scale_p^2): ``(loc, scale)``.

    var = 1 / (1/var_hat + 1/var_p) and loc = (loc_hat/var_hat + loc_p/var_p) * var. Arguments
    broadcast against each other.
    """
    prec_hat = scale_hat ** -2
    prec_p = scale_p ** -2
    var = 1.0 / (prec_hat + prec_p)
    loc = (loc_hat * prec_hat + loc_p * prec_p) * var
    return tuple(jnp.broadcast_arrays(loc, jnp.sqrt(var)))  # type: ignore[return-value]


class LadderGuide:
    """The LVAE inference model; ``guide(x, y=None, *, beta=1.0, train=True)`` is the NumPyro
    program. Sites are sampled top-down (z_L first), like the model; ``y`` is ignored.

    ``shared``: the generative model (an ``LVAEModel``) whose top-down networks the guide reuses;
    ``None`` gives the guide its own networks (``hidden_dims[k + 1]`` units, as the authors'
    encoder). ``only_mu_up``: the bottom-up layer k > 0 reads mu_hat_k instead of d_k.
    """

    def __init__(self, x_dim: int, z_dims: Sequence[int], hidden_dims: Sequence[int],
                 activation: str = "leaky_relu", batch_norm: bool = True,
                 min_scale: float = PAPER_MIN_SCALE, shared: Any = None,
                 only_mu_up: bool = False) -> None:
        check_lvae_dims(z_dims, hidden_dims)
        self.z_dims, self.batch_norm, self.shared = list(z_dims), batch_norm, shared
        self.only_mu_up = only_mu_up
        self.in_dims = [x_dim, *(z_dims[:-1] if only_mu_up else hidden_dims[:-1])]
        self.up = [GaussianLayer(z_dims[k], hidden_dims[k], activation, batch_norm, min_scale)
                   for k in range(len(z_dims))]
        if shared is not None:
            if (list(shared.z_dims) != self.z_dims or list(shared.hidden_dims) != list(hidden_dims)
                    or list(shared.top_down_hidden) != list(hidden_dims[1:])):
                raise ValueError("the shared model's layer sizes differ from the guide's")
            self.top_down = shared.top_down
        else:  # the model's shape: p(z_{k+1} | z_{k+2}) with hidden_dims[k + 1] units
            self.top_down = [GaussianLayer(z_dims[k], hidden_dims[k + 1], activation, batch_norm,
                                           min_scale)
                             for k in range(len(z_dims) - 1)]

    def top_down_networks(self) -> list[Any]:
        """The top-down networks registered in the running program (the model's names if shared)."""
        prefix = "top_down" if self.shared is not None else "q_top_down"
        return [network(f"{prefix}_{k}", layer, jnp.zeros((1, self.z_dims[k + 1])),
                        batch_norm=self.batch_norm)
                for k, layer in enumerate(self.top_down)]

    def __call__(self, x: jax.Array, y: jax.Array | None = None, *,
                 beta: float | jax.Array = 1.0, train: bool = True) -> dict[int, jax.Array]:
        up = [network(f"q_up_{k}", layer, jnp.zeros((1, self.in_dims[k])),
                      batch_norm=self.batch_norm) for k, layer in enumerate(self.up)]
        top_down = self.top_down_networks()
        L = len(self.z_dims)
        zs = {}
        with numpyro.plate("data", x.shape[0]):
            d, estimates = x, []
            for layer in up:  # the deterministic bottom-up pass
                d, loc_hat, scale_hat = layer(d, train=train)
                estimates.append((loc_hat, scale_hat))
                if self.only_mu_up:
                    d = loc_hat
            loc, scale = estimates[L - 1]
            with kl_scale(beta):
                z = numpyro.sample(f"z{L}", dist.Normal(loc, scale).to_event(1))
            zs[L] = z
            for i in range(L - 1, 0, -1):
                _, loc_p, scale_p = top_down[i - 1](z, train=train)
                loc, scale = precision_weighted_merge(*estimates[i - 1], loc_p, scale_p)
                with kl_scale(beta):
                    z = numpyro.sample(f"z{i}", dist.Normal(loc, scale).to_event(1))
                zs[i] = z
        return zs
