"""Presets: named sets of settings that follow an authors' published script, setting by setting.

A preset changes a registered pair's network hyperparameters (``hparams``) and training defaults
(``train``) before the user's own options, which still win: ``ppl-dgm train adgm --preset
workshop --lr 1e-3`` is the workshop script with another learning rate. ``ppl-dgm models adgm
--preset workshop`` prints what the preset sets and every difference from the script that remains
(``differences``), so that a run can be read against the script it follows. Backend-neutral:
imports nothing heavy.

Adding one: a :class:`Preset` in :data:`PRESETS` naming the registered models it applies to, the
script it follows (``source``) and what still differs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ppl_dgm.errors import UserError


@dataclass(frozen=True)
class Preset:
    """Settings of one authors' script for the registered ``models`` (both backends)."""

    name: str
    models: tuple[str, ...]
    source: str
    description: str
    hparams: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    differences: tuple[str, ...] = ()


_ML_LAB = ("ml-lab/auxiliary-deep-generative-models (the ADGM workshop code): run_adgmssl_mnist.py, "
           "models/adgmssl.py")
_LARS = "larsmaaloee/auxiliary-deep-generative-models (the ICML SDGM code): run_mnist.py, models/sdgmssl.py"
_CASPERKAAE = ("casperkaae/LVAE (the LVAE authors' code): run_models.py, README.md; batch norm from "
               "casperkaae/parmesan (parmesan/layers/normalize.py)")

PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset(
        name="workshop",
        models=("adgm",),
        source=_ML_LAB,
        description="the ADGM workshop script, whose 1000-epoch log is the authors' learning curve",
        hparams={"batch_norm": False, "weight_init": "glorot", "train_q_a": False,
                 "classification_log_mean": False, "average_y_over_particles": True},
        # their classification weight: beta = 0.01 * n with n = 120,000 rows (each batch 100
        # labelled + 100 unlabelled images), on the sum of log q(y|a,x) over the labelled batch of
        # a loss that is the sum over the batch's 200 images: in this library's objective
        # (mean_l [L + alpha CE] + mean_u U, twice theirs) alpha = 1200
        train={"num_particles": 10, "alpha": 1200.0, "validation_size": 0, "lr": 3e-4,
               "adam_betas": (0.9, 0.999), "lr_decay": 0.75, "lr_decay_every": 200,
               "min_lr": 0.0, "clip_norm": 5.0, "clip_value": 1.0,
               "clip_order": "norm_then_value", "weight_prior_std": 1.0, "batch_size": 100,
               "labelled_batch_size": 100, "warmup_epochs": 0.0, "classify_samples": 100},
        differences=(
            "p(a): their code scores a under N(0, I) (an analytic KL of q(a|x)); this ADGM has the "
            "paper's p(a | x, y, z)",
            "q(z | ...): their q(z | y, x) does not read a; this guide's q(z | a, y, x) does (the "
            "paper's)",
            "with q(a|x) frozen and p(a) = N(0, I) their a-term is a constant; here p(a|x,y,z) is "
            "trained and the a-term is not",
            "initialisation: their q(a|x) mean and log-variance layers are Glorot-normal; "
            "weight_init=glorot draws Gaussian heads N(0, 1e-3^2) (the SDGM code's rule), so a frozen "
            "q(a|x) is nearly N(0, I) noise here and a random projection of x there; their "
            "q(y|a,x) layers after the first are Glorot-uniform",
            "weight prior: theirs covers q(y|a,x) and the networks of the bound, not q(a|x) (frozen); "
            "here every weight matrix the optimiser sees, scaled by 1/N with N = 60,000 (theirs by "
            "1/120,000 on a loss half as large: the same ratio)",
            "learning-rate decay: theirs has no floor (min_lr 0 here too); every 200 epochs of 600 "
            "steps, as here with all 60,000 images",
        ),
    ),
    Preset(
        name="icml",
        models=("sdgm",),
        source=_LARS,
        description="the ICML SDGM script (the paper's 1.32% MNIST-100 model)",
        hparams={"batch_norm": True, "weight_init": "glorot", "train_q_a": True,
                 "classification_log_mean": False, "average_y_over_particles": True},
        train={"num_particles": 5, "validation_size": 0, "lr": 3e-4, "adam_betas": (0.9, 0.999),
               "lr_decay": 0.75, "lr_decay_every": 200, "min_lr": 3e-5, "clip_norm": 5.0,
               "clip_value": 1.0, "clip_order": "norm_then_value", "weight_prior_std": 1.0,
               "batch_size": 100, "labelled_batch_size": 100, "warmup_epochs": 0.0,
               "classify_samples": 100, "alpha": None},
        differences=(
            "classification weight: theirs 0.1 * n / n_l with n = 60,000 (alpha 60); the same "
            "here (alpha unset: 0.1 * N / N_labelled with all 60,000 images)",
            "batch norm: theirs normalises with the batch statistics of each of its passes (their "
            "code marks the layer 'TODO: implement correctly'); here one flax/torch BatchNorm per "
            "layer, running averages at evaluation",
            "evaluation: their per-epoch test bound uses 5 samples of a; this library's test ELBO "
            "draws one a (the error uses 100 draws in both)",
            "seed: theirs draws a random seed per run; here --seed (default 0)",
        ),
    ),
    Preset(
        name="authors",
        models=("vae", "lvae"),
        source=_CASPERKAAE,
        description="the LVAE authors' script (run_models.py) with their README's MNIST command "
                    "(Adam 2e-4, batches of 256, warm-up over 200 epochs, 2000 epochs) and the "
                    "paper's five layers 64-32-16-8-4 / 512-256-128-64-32 (both registered)",
        # ladder options only (their VAE's hierarchical guide ignores them, and its model keeps
        # the registered widths, as the authors' VAE): separate top-down networks, bottom-up from
        # the mean estimates, generative p(z_i | z_i+1) as wide as the level below
        hparams={"share_top_down": False, "only_mu_up": True, "top_down_widths": "lower"},
        # lasagne.updates.adam(..., epsilon=1e-4); total_norm_constraint(max_norm=4), then
        # T.clip(g, -0.9, 0.9); train_x = concatenate([train_x, valid_x]) (all 60,000 images)
        train={"adam_eps": 1e-4, "clip_norm": 4.0, "clip_value": 0.9,
               "clip_order": "norm_then_value", "validation_size": 0},
        differences=(
            "data set: left to --dataset (theirs is MNIST, 'mnistresample': give --dataset mnist)",
            "vae: the ladder options set here (share_top_down, only_mu_up, top_down_widths) do not "
            "apply to its hierarchical guide; its model keeps the registered widths, as theirs",
            "batch-norm statistics at evaluation: theirs come from one pass over all 60,000 "
            "training images (binarised once) before every test evaluation; the figures recorded "
            "during training here use the running averages. 'ppl-dgm evaluate RUN --bn-stats "
            "train' computes them as theirs (the run's training images, binarised once with --seed)",
            "evaluation: theirs is IW-5000 on all 10,000 test images (binarised once, unseeded); "
            "'ppl-dgm evaluate RUN --bn-stats train' with its defaults (--iw-samples 5000, every "
            "test image, binarised with seed 0) is the same estimate; an evaluation with --subset "
            "(e.g. the first 500 test images) is not",
            "Adam's epsilon: Lasagne adds 1e-4 to sqrt(v) before v's bias correction (in torch's "
            "terms 1e-4 / sqrt(1 - 0.999^t): 3.2e-3 at the first step, within 1% of 1e-4 after "
            "about 4,000 steps); torch and optax add it after",
            "batch normalisation in training: theirs (parmesan) uses epsilon 1e-10 and keeps no "
            "running averages; here torch/flax BatchNorm with epsilon 1e-5 and running averages "
            "(momentum 0.1), which evaluation uses unless --bn-stats train",
            "initialisation: theirs Glorot (hidden layers Glorot-normal with ReLU gain, the VAE's "
            "mean and variance heads Glorot-normal, the ladder's Glorot-uniform, variance biases "
            "1); here PyTorch's default rule on both backends",
            "variance floor: theirs adds 1e-5 to each variance inside the log-densities only (its "
            "samples and the ladder's merge use softplus(h) alone); here softplus(h) + 1e-5 "
            "everywhere",
            "p(x | z1): theirs a sigmoid mean clipped to [1e-5, 1 - 1e-5]; here Bernoulli logits, "
            "unclipped",
            "warm-up: theirs raises the KL weight once per epoch (epoch e weighs (e - 1) / 200); "
            "here it rises at every step, to 1 at the end of epoch 200",
            "training batches: theirs binarises all images once per epoch and takes 234 batches "
            "of 256 from a fresh shuffle (the rest dropped); here each batch is binarised as it is "
            "drawn from a fresh shuffle, 234 batches of 256 too: the same in distribution",
            "the script's own defaults (two layers, lr 2e-3, no warm-up, 5000 epochs) are not "
            "followed: its README's MNIST command and the paper's model are",
            "seed: theirs draws a random seed per run; here --seed (default 0)",
        ),
    ),
)}


def presets_for(model: str) -> list[Preset]:
    """The presets that apply to the registered ``model``."""
    return [p for p in PRESETS.values() if model in p.models]


def get(model: str, name: str) -> Preset:
    """The preset ``name`` of ``model``; a :class:`UserError` naming the ones it has otherwise."""
    preset = PRESETS.get(name)
    if preset is None or model not in preset.models:
        known = [p.name for p in presets_for(model)]
        raise UserError(f"{model} has no preset {name!r}",
                        f"choose one of {known}" if known else f"{model} has no presets; omit --preset")
    return preset


def apply(spec: Any, name: str | None) -> Any:
    """``spec`` (a :class:`ppl_dgm.registry.ModelSpec`) with the preset's hyperparameters and
    training defaults in place of its own; ``name=None``: ``spec`` unchanged. Hyperparameters the
    pair does not have (a preset shared by a pair and its baseline, e.g. the ladder guide's options
    for the VAE) are left out."""
    if not name:
        return spec
    preset = get(spec.name, name)
    hparams = {k: v for k, v in preset.hparams.items() if k in spec.hparams}
    return dataclasses.replace(spec, hparams={**spec.hparams, **hparams},
                               train={**spec.train, **preset.train})


def describe(preset: Preset, spec: Any, train_defaults: dict[str, Any]) -> list[str]:
    """The lines ``ppl-dgm models NAME --preset P`` prints: what the preset changes (registered
    value -> preset), what it keeps as registered, and the differences from the script that
    remain. ``train_defaults``: the training options' defaults where the pair sets none."""
    lines = [f"preset {preset.name!r} of {spec.name}: {preset.description}",
             f"  follows: {preset.source}", "  changes (registered value -> preset):"]
    same = []
    for key, value in preset.hparams.items():
        if key not in spec.hparams:
            continue  # not a hyperparameter of this pair
        if spec.hparams[key] == value:
            same.append(f"--set {key}")
        else:
            lines.append(f"    --set {key}: {spec.hparams[key]!r} -> {value!r}")
    for key, value in preset.train.items():
        before = spec.train[key] if key in spec.train else train_defaults.get(key)
        flag = "--" + key.replace("_", "-")
        if before == value or (isinstance(before, tuple | list) and list(before) == list(value)):
            same.append(flag)
        else:
            lines.append(f"    {flag}: {before!r} -> {value!r}")
    if same:
        lines.append("  as registered already: " + ", ".join(same))
    lines.append("  still differs from the script:")
    lines += [f"    - {d}" for d in preset.differences] or ["    (nothing known)"]
    return lines
