"""Backend-neutral pieces shared by a Pyro model and its NumPyro twin (imports neither torch nor JAX).

- ``PAPER_MIN_SCALE``: the LVAE recipe's floor of a Gaussian layer's scale, sqrt(1e-5) (the authors'
  variance ``softplus(h) + 1e-5``), used by the VAE/LVAE and CaGeM layers of both backends;
- the VAE/LVAE's hyperparameters: :data:`LVAE_DEFAULTS`, :func:`check_lvae_hparams` and
  :func:`check_lvae_dims`
  (``models/lvae.py`` and ``models/lvae_numpyro.py``);
- CaGeM's hyperparameters: :data:`CAGEM_DEFAULTS`, :func:`check_cagem_hparams` and
  :func:`cagem_network_kwargs` (``models/cagem.py`` and ``models/cagem_numpyro.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

PAPER_MIN_SCALE = 1e-5 ** 0.5

#: The registered VAE/LVAE defaults (the paper's MNIST model, five stochastic layers).
LVAE_DEFAULTS: dict[str, Any] = {
    "z_dims": [64, 32, 16, 8, 4],
    "hidden_dims": [512, 256, 128, 64, 32],
    "activation": "leaky_relu",
    "batch_norm": True,
    "min_scale": PAPER_MIN_SCALE,
    "guide": "ladder",
    "share_top_down": True,
}


def check_lvae_dims(z_dims: Sequence[int], hidden_dims: Sequence[int]) -> None:
    """One deterministic size per stochastic layer, at least one layer, all sizes positive."""
    if len(z_dims) < 1:
        raise ValueError("an LVAE needs at least one stochastic layer")
    if len(hidden_dims) != len(z_dims):
        raise ValueError(f"need one deterministic size per stochastic layer: "
                         f"z_dims={list(z_dims)}, hidden_dims={list(hidden_dims)}")
    if min(z_dims) < 1 or min(hidden_dims) < 1:
        raise ValueError("layer sizes must be positive")


def check_lvae_hparams(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """The VAE/LVAE hyperparameters with :data:`LVAE_DEFAULTS` filled in (``num_particles``, which
    the NumPyro trainer adds, dropped); the sizes as ints. Raises ``ValueError`` naming unknown keys."""
    hparams = {k: v for k, v in hparams.items() if k != "num_particles"}
    unknown = set(hparams) - set(LVAE_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown LVAE hyperparameters {sorted(unknown)}; "
                         f"known: {sorted(LVAE_DEFAULTS)}")
    h = {**LVAE_DEFAULTS, **hparams}
    h["z_dims"] = [int(d) for d in h["z_dims"]]
    h["hidden_dims"] = [int(d) for d in h["hidden_dims"]]
    return h


def lvae_layer_kwargs(h: Mapping[str, Any]) -> dict[str, Any]:
    """The options every VAE/LVAE layer takes, from checked hparams (both backends)."""
    return dict(activation=str(h["activation"]), batch_norm=bool(h["batch_norm"]),
                min_scale=float(h["min_scale"]))

CAGEM_DEFAULTS: dict[str, Any] = {
    "z_dims": [32, 16],
    "hidden_dims": [256, 128],
    "activation": "leaky_relu",
    "batch_norm": True,
    "min_scale": PAPER_MIN_SCALE,
    "n_clusters": None,
    "classifier_uses_x": True,
}


def check_cagem_hparams(hparams: Mapping[str, Any], data: Any) -> dict[str, Any]:
    """The hyperparameters with defaults filled in and K resolved (``h["n_clusters"]``).

    ``data`` needs ``n_classes`` and ``n_labelled`` (0: unsupervised). With labels K is the number
    of classes (``n_clusters`` must then be unset or equal to it); without, ``n_clusters`` (default:
    the number of classes), at least the number of classes. Backend-neutral (the NumPyro twin uses it).
    """
    hparams = {k: v for k, v in hparams.items() if k not in ("alpha", "num_particles")}
    unknown = set(hparams) - set(CAGEM_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown CaGeM hyperparameters {sorted(unknown)}; known: {sorted(CAGEM_DEFAULTS)}")
    h = {**CAGEM_DEFAULTS, **hparams}
    if len(h["z_dims"]) != 2 or len(h["hidden_dims"]) != 2:
        raise ValueError(f"CaGeM has two stochastic layers: z_dims and hidden_dims need two sizes "
                         f"each (got {list(h['z_dims'])}, {list(h['hidden_dims'])})")
    if min(*h["z_dims"], *h["hidden_dims"]) < 1:
        raise ValueError("CaGeM layer sizes must be positive")
    n_classes, k = int(data.n_classes), h["n_clusters"]
    if getattr(data, "n_labelled", 0) > 0:
        if k not in (None, n_classes):
            raise ValueError(f"with labels CaGeM has one cluster per class ({n_classes}); drop "
                             f"--set n_clusters={k} or train with --labels 0")
        k = n_classes
    else:
        k = n_classes if k is None else int(k)
        if k < n_classes:
            raise ValueError(f"--set n_clusters={k}: an unsupervised CaGeM needs at least as many "
                             f"clusters as classes ({n_classes})")
    h["n_clusters"] = k
    h["z_dims"] = [int(d) for d in h["z_dims"]]
    h["hidden_dims"] = [int(d) for d in h["hidden_dims"]]
    return h


def cagem_network_kwargs(h: Mapping[str, Any]) -> dict[str, Any]:
    """The network sizes and options shared by p and q (both backends), from checked hparams."""
    return dict(z_dims=h["z_dims"], hidden_dims=h["hidden_dims"], activation=str(h["activation"]),
                batch_norm=bool(h["batch_norm"]), min_scale=float(h["min_scale"]))
