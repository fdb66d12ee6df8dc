"""Backend-neutral pieces shared by a Pyro model and its NumPyro twin (imports neither torch nor JAX).

- ``PAPER_MIN_SCALE`` (defined in ``ppl_dgm.nn``, the Gaussian layers' default): the LVAE recipe's
  floor of a Gaussian layer's scale, sqrt(1e-5), used by the VAE/LVAE and CaGeM layers of both backends;
- the VAE/LVAE's hyperparameters: :data:`LVAE_DEFAULTS`, :func:`check_lvae_hparams` and
  :func:`check_lvae_dims`
  (``models/lvae.py`` and ``models/lvae_numpyro.py``);
- CaGeM's hyperparameters: :data:`CAGEM_DEFAULTS`, :func:`check_cagem_hparams`,
  :func:`cagem_network_kwargs` and :func:`cagem_labelled_weight` (``models/cagem.py`` and
  ``models/cagem_numpyro.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ppl_dgm.errors import UserError
from ppl_dgm.nn import PAPER_MIN_SCALE

#: The registered VAE/LVAE defaults (the paper's MNIST model, five stochastic layers).
#: ``share_top_down``, ``only_mu_up`` and ``top_down_widths`` are options of the ladder guide (the
#: registered ``vae`` does not take them; the hierarchical guide ignores them):
#: ``only_mu_up`` (default false): each bottom-up MLP reads the previous layer's mean estimate
#: mu_hat_{i-1} instead of its hidden state d_{i-1} (the authors' script's default, ``-only_mu_up
#: True``; the paper writes d_i = MLP(d_{i-1})); ``top_down_widths`` (default ``"upper"``): the
#: hidden width of the generative p(z_i | z_{i+1}) networks, ``"upper"`` = ``hidden_dims`` of
#: z_{i+1}'s level (the same model as the VAE's), ``"lower"`` = that of z_i's level (the authors'
#: LVAE script, whose unshared generative networks are wider: 512-256-128-64 instead of
#: 256-128-64-32 for p(z_1 | z_2) .. p(z_4 | z_5)); ``"lower"`` needs ``share_top_down=false``.
LVAE_DEFAULTS: dict[str, Any] = {
    "z_dims": [64, 32, 16, 8, 4],
    "hidden_dims": [512, 256, 128, 64, 32],
    "activation": "leaky_relu",
    "batch_norm": True,
    "min_scale": PAPER_MIN_SCALE,
    "guide": "ladder",
    "share_top_down": True,
    "only_mu_up": False,
    "top_down_widths": "upper",
}
#: the values of ``top_down_widths``
TOP_DOWN_WIDTHS = ("upper", "lower")


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
    if h["top_down_widths"] not in TOP_DOWN_WIDTHS:
        raise UserError(f"--set top_down_widths={h['top_down_widths']} is not one of "
                        f"{list(TOP_DOWN_WIDTHS)}", "use upper (registered) or lower (the authors' "
                        "LVAE script)")
    if h["top_down_widths"] == "lower" and h["guide"] == "ladder" and h["share_top_down"]:
        raise UserError("--set top_down_widths=lower widens the generative top-down networks, but "
                        "with share_top_down=true they are the guide's", "add --set "
                        "share_top_down=false (as the authors' LVAE script), or drop top_down_widths")
    return h


def lvae_top_down_widths(h: Mapping[str, Any]) -> list[int]:
    """The hidden width of each generative p(z_{k+1} | z_{k+2}) network (k = 0..L-2) from checked
    hparams: ``hidden_dims[k + 1]`` (``"upper"``) or ``hidden_dims[k]`` (``"lower"``, the ladder
    guide only; the hierarchical guide's model is always ``"upper"``, as the authors' VAE)."""
    dims = h["hidden_dims"]
    lower = h["top_down_widths"] == "lower" and h["guide"] == "ladder"
    return [dims[k] if lower else dims[k + 1] for k in range(len(dims) - 1)]


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
    "labelled_weighting": "data_points",
}
#: the values of CaGeM's ``labelled_weighting`` (``models/cagem.py`` derives them)
LABELLED_WEIGHTINGS = ("batch_mean", "data_points")


def cagem_labelled_weight(h: Mapping[str, Any], data: Any) -> float:
    """The factor on the generative terms of CaGeM's labelled batch: 1 (``batch_mean``) or
    N_labelled / N_unlabelled (``data_points``: each labelled image one data point of the
    generative objective; ``models/cagem.py`` has the derivation). ``data``: ``n_labelled`` and
    ``n_unlabelled`` (the unlabelled pool actually used; the trainers always give both). Without
    them (a pair built by hand, outside a trainer) there is nothing to weigh by: 1."""
    if h["labelled_weighting"] == "batch_mean":
        return 1.0
    n_labelled = int(getattr(data, "n_labelled", 0))
    n_unlabelled = int(getattr(data, "n_unlabelled", 0))
    return n_labelled / n_unlabelled if n_labelled and n_unlabelled else 1.0


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
    if h["labelled_weighting"] not in LABELLED_WEIGHTINGS:
        raise UserError(f"--set labelled_weighting={h['labelled_weighting']} is not one of "
                        f"{list(LABELLED_WEIGHTINGS)}",
                        "use data_points (registered: each labelled image one data point of the "
                        "generative terms) or batch_mean (the labelled batch mean weighs as the "
                        "unlabelled one)")
    h["z_dims"] = [int(d) for d in h["z_dims"]]
    h["hidden_dims"] = [int(d) for d in h["hidden_dims"]]
    return h


def cagem_network_kwargs(h: Mapping[str, Any]) -> dict[str, Any]:
    """The network sizes and options shared by p and q (both backends), from checked hparams."""
    return dict(z_dims=h["z_dims"], hidden_dims=h["hidden_dims"], activation=str(h["activation"]),
                batch_norm=bool(h["batch_norm"]), min_scale=float(h["min_scale"]))
