"""Network blocks for the Pyro (PyTorch) backend.

All blocks accept inputs with any number of leading batch dimensions, so that the extra leading
dimensions introduced by parallel enumeration (``y``) and vectorised particles broadcast through them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ppl_dgm.nn import PAPER_MIN_SCALE
from ppl_dgm.nn.init_rules import SMALL_STD, check_weight_init, hidden_gain

ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "softplus": nn.Softplus,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
}


def activation(name: str) -> nn.Module:
    """An activation module by name (``relu``, ``leaky_relu``, ``softplus``, ``tanh``, ``elu``)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose from {sorted(ACTIVATIONS)}") from None


class BatchNorm(nn.BatchNorm1d):
    """Batch normalisation over all leading dimensions (features last).

    Under enumeration a hidden layer has shape ``(n_labels, B, H)``: its statistics are taken over
    every row, as the authors' code does when it repeats x once per label. In ``eval()`` mode the
    running statistics are used, so predictions do not depend on the composition of a test batch.
    """

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        shape = h.shape
        return super().forward(h.reshape(-1, shape[-1])).reshape(shape)


class MultiInputMLP(nn.Module):
    """``act(BN(sum_i W_i u_i + b))`` followed by further hidden layers.

    Each input is projected with its own linear map and the projections are summed (the authors'
    ``Dense(a) + Dense(x) + Dense(y)``) instead of concatenating the inputs: under parallel
    enumeration of ``y`` the projection of ``x`` is computed once per data point, not once per label.
    Inputs broadcast against each other, e.g. x of shape (B, D) with y of shape (10, 1, 10).
    """

    def __init__(
        self,
        in_dims: Sequence[int],
        hidden: Sequence[int],
        act: str = "relu",
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("MultiInputMLP needs at least one hidden layer")
        self.act = act
        self.inputs = nn.ModuleList(
            nn.Linear(d, hidden[0], bias=(i == 0)) for i, d in enumerate(in_dims)
        )
        self.first = nn.Sequential(
            *([BatchNorm(hidden[0])] if batch_norm else []), activation(act)
        )
        layers: list[nn.Module] = []
        for h_in, h_out in zip(hidden[:-1], hidden[1:], strict=True):
            layers.append(nn.Linear(h_in, h_out))
            if batch_norm:
                layers.append(BatchNorm(h_out))
            layers.append(activation(act))
        self.rest = nn.Sequential(*layers)
        self.out_dim = hidden[-1]

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if len(inputs) != len(self.inputs):
            raise ValueError(f"expected {len(self.inputs)} inputs, got {len(inputs)}")
        h = self.inputs[0](inputs[0])
        for layer, u in zip(self.inputs[1:], inputs[1:], strict=True):
            h = h + layer(u)
        return self.rest(self.first(h))


class MLP(MultiInputMLP):
    """A single-input :class:`MultiInputMLP`."""

    def __init__(self, in_dim: int, hidden: Sequence[int], act: str = "relu",
                 batch_norm: bool = False) -> None:
        super().__init__([in_dim], hidden, act, batch_norm)


class GaussianHead(nn.Module):
    """Diagonal Gaussian parameters ``(loc, scale)`` from a hidden layer.

    ``variance="exp"`` (default): the log-variance is unconstrained (``scale = exp(logvar / 2)``),
    never passed through a softplus, and ``min_scale`` is added to the scale. ``variance="softplus"``:
    the head gives the variance itself, ``var = softplus(h) + min_scale**2`` (the LVAE authors' code;
    it grows linearly instead of exponentially, which keeps deep hierarchies from overflowing).
    ``batch_norm`` normalises the two heads (the LVAE paper does this on the latent mean/variance).
    """

    def __init__(self, in_dim: int, out_dim: int, batch_norm: bool = False,
                 min_scale: float = 0.0, variance: str = "exp") -> None:
        if variance not in ("exp", "softplus"):
            raise ValueError(f"variance must be 'exp' or 'softplus' (got {variance!r})")
        super().__init__()
        self.loc = nn.Linear(in_dim, out_dim)
        self.logvar = nn.Linear(in_dim, out_dim)
        self.loc_bn = BatchNorm(out_dim) if batch_norm else nn.Identity()
        self.logvar_bn = BatchNorm(out_dim) if batch_norm else nn.Identity()
        self.min_scale = min_scale
        self.variance = variance

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc = self.loc_bn(self.loc(h))
        v = self.logvar_bn(self.logvar(h))
        if self.variance == "softplus":
            return loc, torch.sqrt(F.softplus(v) + self.min_scale**2)
        scale = torch.exp(0.5 * v)
        if self.min_scale > 0:
            scale = scale + self.min_scale
        return loc, scale


class GaussianMLP(nn.Module):
    """A Gaussian conditional ``N(loc(u), scale(u)^2)``: a two-layer MLP then a Gaussian head.

    The LVAE's connection ("each connection is a two-layer MLP", Sønderby et al. 2016): batch norm
    goes in both hidden layers and on the mean and log-variance heads when ``batch_norm`` is set.
    Used for the LVAE's p(z_i | z_{i+1}) (``models/lvae.py``), for the plain guide's
    q(z_i | z_{i-1}) and the ladder guide's bottom-up pass and own top-down path
    (``guides/hierarchical.py``, ``guides/ladder.py``), and for CaGeM's layers. The variance is
    ``softplus(h) + min_scale**2`` as in the authors' code, except that theirs adds the 1e-5 only
    inside the log-densities (their samples and the ladder's merge use softplus(h) alone); here the
    floored variance is used everywhere. ``variance="exp"`` gives an unconstrained log-variance:
    with exp, the plain 5-layer guide overflowed within two MNIST epochs.

    ``in_dim`` may be a sequence of input sizes (CaGeM's p(z1 | y, z2), q(z2 | z1, y)): each input
    gets its own linear projection and the projections are summed (:class:`MultiInputMLP`), so an
    input that does not depend on an enumerated variable is projected once; call it as
    ``layer(u1, u2)``. With one input the parameters are those of a plain MLP (``mlp.inputs.0``...).
    """

    def __init__(self, in_dim: int | Sequence[int], hidden: int | Sequence[int], out_dim: int,
                 activation: str = "leaky_relu", batch_norm: bool = True,
                 min_scale: float = PAPER_MIN_SCALE, n_hidden: int = 2,
                 variance: str = "softplus") -> None:
        super().__init__()
        widths = [hidden] * n_hidden if isinstance(hidden, int) else list(hidden)
        in_dims = [in_dim] if isinstance(in_dim, int) else list(in_dim)
        self.mlp = MultiInputMLP(in_dims, widths, activation, batch_norm)
        self.head = GaussianHead(self.mlp.out_dim, out_dim, batch_norm, min_scale, variance)

    def forward(self, *u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.mlp(*u))


def init_weights(module: nn.Module, scheme: str = "torch", small_std: float = SMALL_STD) -> None:
    """Re-initialise every ``nn.Linear`` of ``module`` by ``scheme``.

    - ``"torch"``: leave PyTorch's default (weights and biases ~ U(+-1/sqrt(fan_in))).
    - ``"glorot"``: the ADGM/SDGM authors' Lasagne initialisation: weights of hidden layers
      (:class:`MultiInputMLP`) Glorot-normal with the ReLU gain sqrt(2) (gain 1 for ``tanh``), the
      Gaussian heads' mean and log-variance layers (:class:`GaussianHead`) N(0, ``small_std``^2),
      other output layers (logits) Glorot-normal with gain 1, every bias N(0, ``small_std``^2). A
      new Gaussian head thus starts at N(0, I) for every input.
    """
    if check_weight_init(scheme) == "torch":
        return
    heads = {id(lin) for m in module.modules() if isinstance(m, GaussianHead)
             for lin in (m.loc, m.logvar)}
    gains = {id(lin): hidden_gain(m.act)
             for m in module.modules() if isinstance(m, MultiInputMLP)
             for lin in m.modules() if isinstance(lin, nn.Linear)}
    with torch.no_grad():
        for m in module.modules():
            if not isinstance(m, nn.Linear):
                continue
            if id(m) in heads:
                nn.init.normal_(m.weight, 0.0, small_std)
            else:
                nn.init.xavier_normal_(m.weight, gain=gains.get(id(m), 1.0))
            if m.bias is not None:
                nn.init.normal_(m.bias, 0.0, small_std)
