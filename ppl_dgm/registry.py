"""Name -> model/guide pair, task and default hyperparameters (backend-neutral: imports nothing heavy).

Adding a pair to the library: write the generative model in ``models/``, the guide in ``guides/``,
a ``build`` function returning a :class:`ppl_dgm.pair.Pair`, and one ``register(ModelSpec(...))``
below (:class:`ModelSpec` and :func:`model_spec` live in :mod:`ppl_dgm.spec`; they are importable
from here too). A pair outside the library needs none of that: see :mod:`ppl_dgm.contract`
(``ppl-dgm train path/to/my_pair.py:build``, ``mypackage.module:build``, or a name from the
``ppl_dgm.models`` entry point group); :func:`resolve_spec` finds any of them (the registered names
here, the others through :func:`ppl_dgm.user_pairs.find`).
"""

from __future__ import annotations

from typing import Any

from ppl_dgm import user_pairs
from ppl_dgm.models.common import LVAE_DEFAULTS
from ppl_dgm.spec import BACKENDS, TASKS, ModelSpec, model_spec

__all__ = ["BACKENDS", "TASKS", "ModelSpec", "all_specs", "get", "model_spec", "register",
           "resolve_spec"]

_REGISTRY: dict[tuple[str, str], ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    key = (spec.name, spec.backend)
    if key in _REGISTRY:
        raise ValueError(f"model {spec.name!r} is already registered for backend {spec.backend!r}")
    _REGISTRY[key] = spec
    return spec


def get(name: str, backend: str = "pyro") -> ModelSpec:
    """The registered spec; a name registered nowhere goes through :func:`resolve_spec` (a user's
    ``path/to/file.py:build``, ``package.module:build`` or entry point; ``KeyError`` if none)."""
    try:
        return _REGISTRY[(name, backend)]
    except KeyError:
        pass
    if not any(n == name for n, _ in _REGISTRY):
        return resolve_spec(name, backend)
    known = sorted({n for n, b in _REGISTRY if b == backend})
    raise KeyError(f"no model {name!r} for backend {backend!r}; registered: {known}")


def all_specs() -> list[ModelSpec]:
    return sorted(_REGISTRY.values(), key=lambda s: (s.name, s.backend))


def resolve_spec(name: str, backend: str | None = None,
                 source: dict[str, Any] | None = None) -> ModelSpec:
    """The spec of a registered name, an entry point of group ``ppl_dgm.models``, or a reference
    ``path/to/file.py:build`` / ``package.module:build`` (see :mod:`ppl_dgm.contract`).

    ``source`` (a run's recorded ``config.source``) finds the pair where it was found when the run
    was trained, and says clearly when it is gone or changed. ``backend=None``: the pair's own
    backend (``pyro`` for registered names).
    """
    registered = None if source else _REGISTRY.get((name, backend or "pyro"))
    if registered is not None:
        return registered
    spec = user_pairs.find(name, backend, source)
    if spec is not None:
        return spec
    if any(n == name for n, _ in _REGISTRY):
        return get(name, backend or "pyro")  # registered for another backend: says so
    known = sorted({n for n, _ in _REGISTRY} | {ep.name for ep in user_pairs.entry_points()})
    raise user_pairs.UnknownModelError(
        f"no model {name!r}; registered: {known}; or give your own pair as "
        "path/to/file.py:build or package.module:build")


# ---------------------------------------------------------------------------------------------
# The registered pairs.
# ---------------------------------------------------------------------------------------------

register(ModelSpec(
    name="m2",
    task="semi-supervised",
    build="ppl_dgm.models.m2:build",
    # Kingma et al. used one softplus layer of 500 units (``--set hidden=[500] --set
    # activation=softplus --lr 1e-3``); on MNIST with 100 labels that M2 stays at 77-81% test
    # accuracy, while the auxiliary-model papers' networks (two ReLU layers of 500, Adam 3e-4,
    # clipping 5) reach 83-84% on the same budget (benchmarks/results/m2_mnist_study).
    hparams={"z_dim": 50, "hidden": [500, 500], "activation": "relu", "batch_norm": True},
    train={"lr": 3e-4, "clip_norm": 5.0, "warmup_epochs": 0},
    description="M2 semi-supervised VAE (Kingma et al. 2014): p(y)p(z)p(x|y,z), q(y|x)q(z|x,y)",
))

# LVAE (Sønderby et al. 2016): one hierarchical model, two guides; the paper's MNIST defaults
# (5 layers 64-32-16-8-4, deterministic 512-256-128-64-32, leaky ReLU, batch norm, variance floor
# 1e-5 as a scale floor of sqrt(1e-5), Adam 2e-4, batch 256, warm-up over 200 epochs, up to 2000).
# Where this recipe departs from the authors' script (casperkaae/LVAE run_models.py): one model for
# both guides (their LVAE's generative networks are wider: --set top_down_widths=lower), the ladder
# shares its top-down networks with the model (theirs: separate, --set share_top_down=false) and
# steps up from the hidden state (theirs from the mean estimate, --set only_mu_up=true), Adam's
# epsilon 1e-8 (theirs 1e-4), no gradient clipping (theirs: norm 4, then each element to 0.9), the
# last 10,000 training images held out (theirs trains on all 60,000), batch-norm running averages
# at evaluation (theirs: statistics of one pass over the training set, `evaluate --bn-stats train`).
# ``--preset authors`` sets all of these (ppl_dgm/presets.py lists what still differs).
_LADDER_ONLY = ("share_top_down", "only_mu_up", "top_down_widths")  # the hierarchical guide has none
_LVAE_HPARAMS = {k: v for k, v in LVAE_DEFAULTS.items() if k != "guide" and k not in _LADDER_ONLY}
_LVAE_TRAIN = {"optimizer": "adam", "lr": 2e-4, "batch_size": 256, "warmup_epochs": 200,
               "epochs": 2000, "elbo": "trace"}
register(ModelSpec(
    name="vae",
    task="unsupervised",
    build="ppl_dgm.models.lvae:build",
    hparams={**_LVAE_HPARAMS, "guide": "hierarchical"},
    train=dict(_LVAE_TRAIN),
    description="Hierarchical VAE (LVAE paper's baseline): p(z_L) prod p(z_i|z_i+1) p(x|z_1), "
                "bottom-up q(z_1|x) prod q(z_i|z_i-1)",
))
register(ModelSpec(
    name="lvae",
    task="unsupervised",
    build="ppl_dgm.models.lvae:build",
    hparams={**_LVAE_HPARAMS, "guide": "ladder", **{k: LVAE_DEFAULTS[k] for k in _LADDER_ONLY}},
    train=dict(_LVAE_TRAIN),
    description="Ladder VAE (Sønderby et al. 2016): the hierarchical model with the ladder guide "
                "(bottom-up pass, top-down precision-weighted merge)",
))

# ADGM / SDGM (Maaløe et al. 2016): the registered recipe, close to the authors' (Adam 3e-4, decay 0.75
# every 200 epochs, clipping as in their code: the global gradient norm to 5 first, then every element
# to [-1, 1]; test predictions average q(y|a,x) over 100 draws of a). Where it departs from their
# scripts: 1 particle of a for ADGM (their workshop script draws 10, the ICML SDGM script 5, as
# registered here); PyTorch's default initialisation and no weight prior (both scripts: Glorot-normal,
# a N(0, 1) prior on the weights); batch norm on (the workshop ADGM script has none, the SDGM script
# has it); the labelled term alpha * log of the mean over particles of q(y|a,x) (both scripts average
# log q(y|a,x) over the particles instead: --set classification_log_mean=false; the same with one
# particle); q(a|x) trained (the workshop script leaves its weights out of training:
# --set train_q_a=false); the last 10,000 training images held out for validation (both scripts
# train on all 60,000: --validation-size 0). The presets follow each script setting by setting:
# ``ppl-dgm models adgm --preset workshop``, ``ppl-dgm models sdgm --preset icml`` (ppl_dgm/presets.py,
# with what still differs). On MNIST with 100 labels the authors' initialisation and batch norm off
# each made the test error worse in 8-minute runs, the prior changed nothing (benchmarks/results/adgm_kl/).
_AUX_HPARAMS = {"a_dim": 100, "z_dim": 100, "hidden": [500, 500], "activation": "relu",
                "batch_norm": True, "average_y_over_particles": True,
                "classification_log_mean": True, "weight_init": "torch", "train_q_a": True}
_AUX_TRAIN = {"lr": 3e-4, "adam_betas": (0.9, 0.999), "lr_decay": 0.75, "lr_decay_every": 200,
              "min_lr": 3e-5, "clip_norm": 5.0, "clip_value": 1.0, "clip_order": "norm_then_value",
              "batch_size": 100, "labelled_batch_size": 100, "warmup_epochs": 0.0,
              "classify_samples": 100, "weight_prior_std": 0.0}

register(ModelSpec(
    name="adgm",
    task="semi-supervised",
    build="ppl_dgm.models.adgm:build",
    hparams=dict(_AUX_HPARAMS),
    train={**_AUX_TRAIN, "num_particles": 1},
    description="Auxiliary deep generative model (Maaløe et al. 2016): p(y)p(z)p(x|y,z)p(a|x,y,z), "
                "q(a|x)q(y|a,x)q(z|a,y,x)",
))
register(ModelSpec(
    name="sdgm",
    task="semi-supervised",
    build="ppl_dgm.models.sdgm:build",
    hparams=dict(_AUX_HPARAMS),
    train={**_AUX_TRAIN, "num_particles": 5},
    description="Skip deep generative model (Maaløe et al. 2016): p(y)p(z)p(a|y,z)p(x|a,y,z), "
                "q(a|x)q(y|a,x)q(z|a,y,x)",
))

# RNN-SPN (Sønderby et al. 2015) and its baselines on cluttered MNIST sequences: the authors'
# RMSprop 5e-4, batch 100, gradient norm clipped at 5 (their MAX_NORM, applied to the same loss:
# the cross-entropy averaged over the B x T digits, which supervised_loss computes). Lasagne's
# rmsprop (rho 0.9, epsilon 1e-6 inside the square root) ~ torch alpha 0.9, eps 1e-3 outside it;
# torch's defaults (0.99, 1e-8) let the glimpses drift off the canvas and the RNN-SPN collapse.
# Clipping as in their code: every gradient element to [-1, 1] first, then the global norm to 5.
# Their transformer is corner-aligned and clamps at the border; ours samples with torch's
# align_corners=False and zero padding by default (ppl_dgm.nn.spatial describes the difference);
# --set align_corners=true --set padding_mode=border gives the authors' sampler.
_SPN_SAMPLER = {"align_corners": False, "padding_mode": "zeros"}
_SPN_TRAIN = {"dataset": "mnist-sequence", "optimizer": "rmsprop", "lr": 5e-4, "batch_size": 100,
              "rmsprop_alpha": 0.9, "rmsprop_eps": 1e-3, "clip_norm": 5.0, "clip_value": 1.0,
              "clip_order": "value_then_norm", "elbo": "trace", "labels": None, "epochs": 30}

register(ModelSpec(
    name="rnn-spn",
    task="supervised",
    build="ppl_dgm.models.rnn_spn:build_rnn_spn",
    hparams={"downsample": 3.0, "loc_filters": 20, "rnn_units": 256, "filters": 32, "dense": 400,
             **_SPN_SAMPLER},
    train=dict(_SPN_TRAIN),
    description="RNN-SPN (Sønderby et al. 2015): loc. CNN -> GRU(256) -> affine glimpse per digit "
                "-> CNN; p(y_1..T|x), empty guide (data: mnist-sequence)",
))
register(ModelSpec(
    name="ffn-spn",
    task="supervised",
    build="ppl_dgm.models.rnn_spn:build_ffn_spn",
    hparams={"downsample": 2.0, "loc_filters": 20, "loc_dense": 200, "filters": 96, "dense": 400,
             **_SPN_SAMPLER},
    train=dict(_SPN_TRAIN),
    description="FFN-SPN baseline (Sønderby et al. 2015): one affine glimpse -> CNN -> T heads "
                "(data: mnist-sequence)",
))
register(ModelSpec(
    name="cnn-seq",
    task="supervised",
    build="ppl_dgm.models.rnn_spn:build_cnn",
    hparams={"downsample": 2.0, "filters": 96, "dense": 400, **_SPN_SAMPLER},
    train=dict(_SPN_TRAIN),
    description="Plain CNN baseline for RNN-SPN: 2x down-sampled canvas -> CNN -> T heads "
                "(data: mnist-sequence)",
))

# The NumPyro twin of M2 (models/m2_numpyro.py, guides/label_numpyro.py): same networks and defaults.
register(ModelSpec(
    name="m2",
    task="semi-supervised",
    build="ppl_dgm.models.m2_numpyro:build",
    hparams=dict(get("m2").hparams),
    train=dict(get("m2").train),
    description="M2 in NumPyro/JAX: the same pair, TraceEnum_ELBO + optax (--backend numpyro)",
    backend="numpyro",
))

# The NumPyro twins of ADGM and SDGM (models/adgm_numpyro.py, models/sdgm_numpyro.py,
# guides/auxiliary_numpyro.py): same networks and defaults; the particles are a plate inside the
# programs (``num_particles`` is passed to the builder by the NumPyro trainer).
for _name in ("adgm", "sdgm"):
    register(ModelSpec(
        name=_name,
        task="semi-supervised",
        build=f"ppl_dgm.models.{_name}_numpyro:build",
        hparams=dict(get(_name).hparams),
        train=dict(get(_name).train),
        description=f"{_name.upper()} in NumPyro/JAX: the same pair, TraceEnum_ELBO + optax "
                    "(--backend numpyro)",
        backend="numpyro",
    ))

# The NumPyro twins of the VAE and LVAE (models/lvae_numpyro.py, guides/hierarchical_numpyro.py,
# guides/ladder_numpyro.py): same networks and defaults; trained with Trace_ELBO (--elbo trace).
for _name in ("vae", "lvae"):
    register(ModelSpec(
        name=_name,
        task="unsupervised",
        build="ppl_dgm.models.lvae_numpyro:build",
        hparams=dict(get(_name).hparams),
        train=dict(get(_name).train),
        description=f"{'Hierarchical VAE' if _name == 'vae' else 'Ladder VAE'} in NumPyro/JAX: "
                    "the same pair, Trace_ELBO + optax (--backend numpyro)",
        backend="numpyro",
    ))

# The NumPyro twins of the RNN-SPN and its baselines (models/rnn_spn_numpyro.py): same networks,
# initialisation and training defaults (RMSprop with Lasagne's constants, Trace_ELBO on the mean
# cross-entropy).
for _name, _build in (("rnn-spn", "build_rnn_spn"), ("ffn-spn", "build_ffn_spn"),
                      ("cnn-seq", "build_cnn")):
    register(ModelSpec(
        name=_name,
        task="supervised",
        build=f"ppl_dgm.models.rnn_spn_numpyro:{_build}",
        hparams=dict(get(_name).hparams),
        train=dict(get(_name).train),
        description=f"{get(_name).description.split(':')[0]} in NumPyro/JAX: the same networks, "
                    "Trace_ELBO + optax (--backend numpyro)",
        backend="numpyro",
    ))

# CaGeM (Maaløe et al. 2017; structure reconstructed from the abstract, models/cagem.py): a two-layer
# VAE whose upper layer depends on an enumerated cluster y. --labels N gives M2's bounds and
# classification term; --labels 0 trains it fully unsupervised (K = --set n_clusters=K). LVAE/ADGM
# recipe (Adam, batch norm, leaky ReLU, warm-up, batches of 100, norm clipping 5); sizes and lr chosen
# for short CPU budgets (the study gives each run 15 minutes at one thread).
# labelled_weighting=data_points (registered) counts each labelled image as one data point of the
# generative terms (weight N_labelled / N_unlabelled on the labelled batch's bound); batch_mean is the
# M2/ADGM authors' equal batch means (models/cagem.py derives both). Chosen by the equal-epoch study
# benchmarks/results/cagem_epochs: at 25 epochs data_points is ahead in IW-5000 log-likelihood,
# validation ELBO and test error.
register(ModelSpec(
    name="cagem",
    task="semi-supervised",
    build="ppl_dgm.models.cagem:build",
    hparams={"z_dims": [32, 16], "hidden_dims": [256, 128], "activation": "leaky_relu",
             "batch_norm": True, "min_scale": 1e-5 ** 0.5, "n_clusters": None,
             "classifier_uses_x": True, "labelled_weighting": "data_points"},
    train={"optimizer": "adam", "lr": 1e-3, "batch_size": 100, "labelled_batch_size": 100,
           "warmup_epochs": 10.0, "epochs": 200, "clip_norm": 5.0, "elbo": "trace_enum"},
    description="CaGeM (Maaløe et al. 2017, reconstructed): p(y)p(z2)p(z1|y,z2)p(x|z1), "
                "q(z1|x)q(y|z1,x)q(z2|z1,y); --labels 0: unsupervised clusters",
))
register(ModelSpec(
    name="cagem",
    task="semi-supervised",
    build="ppl_dgm.models.cagem_numpyro:build",
    hparams=dict(get("cagem").hparams),
    train=dict(get("cagem").train),
    description="CaGeM in NumPyro/JAX: the same pair, TraceEnum_ELBO + optax (--backend numpyro)",
    backend="numpyro",
))
