"""Run configuration as plain data: defaults < the registered model's defaults < the user's choices."""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from typing import Any

from ppl_dgm.errors import UserError
from ppl_dgm.infer import objective_names
from ppl_dgm.options import Option, _is_int, _is_real, check, check_value, option, table
from ppl_dgm.registry import ModelSpec

ELBOS = ("trace_enum", "trace", "trace_graph", "trace_meanfield", "renyi", "rws")
CLIP_ORDERS = ("value_then_norm", "norm_then_value")
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


@dataclass
class TrainConfig:
    """Everything a training run depends on (written to ``RUN_DIR/config.json``).

    Each field is an option of :data:`OPTIONS` (:mod:`ppl_dgm.options`): its default, domain,
    meaning and whether a resumed run may change it are written once, here, and read by
    :func:`ppl_dgm.train`, ``ppl-dgm train`` and its ``--help``, ``ppl-dgm models NAME``, the resume
    check and the documentation. ``model`` (a registered name or a pair's reference) has no default.
    ``source`` says where a pair from outside the library came from (:mod:`ppl_dgm.user_pairs`;
    ``None``: a registered name). A field with a kind (:class:`~ppl_dgm.options.Option`) out of its
    domain raises :class:`~ppl_dgm.errors.UserError` naming it.
    """

    model: str
    preset: str | None = option(
        None, "an authors' script to follow setting by setting ('ppl-dgm models MODEL --preset "
        "NAME' lists what it sets and what still differs; the other options override it) "
        "(default: none, the registered recipe)", kind="str", nullable=True, flag="--preset")
    dataset: str = option(
        "digits", "digits, mnist, mnist-sequence, svhn, norb, omniglot, or a path to an .npz",
        flag="--dataset")
    data_dir: str | None = option(
        None, "folder holding the data files such as mnist.npz (unset: $PPL_DGM_DATA, then the "
        "user cache)", kind="str", nullable=True, flag="--data-dir")
    backend: str = option(
        "pyro", "pyro or numpyro (default: the pair's own; pyro for registered names)",
        choices=("pyro", "numpyro"), flag="--backend")
    labels: int | None = option(
        100, "number of labelled training points, balanced over the classes; 0 trains a label "
        "model (e.g. cagem) fully unsupervised; None: every point labelled", kind="int", low=0,
        nullable=True, flag="--labels",
        fix="use a positive multiple of the number of classes, or 0 (fully unsupervised)")
    epochs: int = option(10, "passes over the (unlabelled) training set", low=1, resumable=True,
                         flag="--epochs")
    batch_size: int = option(100, "unlabelled (or plain) batch size", low=1, flag="--batch-size")
    labelled_batch_size: int = option(100, "labelled points per step (semi-supervised)", low=1,
                                      flag="--labelled-batch-size")
    seed: int = option(0, "seeds the split, the batches and the parameters", low=0, high=2**32,
                       high_open=True, flag="--seed")
    warmup_epochs: float = option(0.0, "epochs of linear KL warm-up from 0 to 1", low=0,
                                  flag="--warmup-epochs")
    device: str = option("auto", "auto (CUDA when present), cpu, cuda or cuda:N", resumable=True,
                         flag="--device")
    optimizer: str = option("adam", "adam or rmsprop", choices=("adam", "rmsprop"),
                            flag="--optimizer")
    lr: float = option(1e-3, "learning rate", low=0, low_open=True, flag="--lr")
    adam_betas: tuple[float, float] = option((0.9, 0.999), "Adam's beta1 and beta2", kind="pair",
                                             low=0, high=1)
    adam_eps: float = option(
        1e-8, "Adam's epsilon, added to the square root of the bias-corrected second moment by "
        "torch and optax (the LVAE authors' Lasagne Adam: 1e-4, added before the bias "
        "correction)", low=0, low_open=True, flag="--adam-eps")
    rmsprop_alpha: float = option(0.99, "torch.optim.RMSprop's alpha", low=0, high=1,
                                  high_open=True)
    rmsprop_eps: float = option(1e-8, "torch.optim.RMSprop's eps (added outside the square root)",
                                low=0, low_open=True)
    lr_decay: float = option(
        1.0, "factor applied to the learning rate every lr_decay_every epochs", low=0,
        low_open=True, high=1, flag="--lr-decay",
        fix="a decay factor lies in (0, 1]; 1 keeps the learning rate constant")
    lr_decay_every: int = option(0, "epochs between learning-rate decays (0: never)", low=0,
                                 flag="--lr-decay-every")
    min_lr: float = option(0.0, "floor of the decayed learning rate (<= lr)", low=0,
                           flag="--min-lr")
    clip_norm: float | None = option(
        None, "global gradient-norm clipping (0 or unset: none)", kind="float", low=0,
        nullable=True, flag="--clip-norm",
        fix="use a positive --clip-norm, or 0 to turn clipping off")
    clip_value: float | None = option(
        None, "element-wise gradient clipping to [-v, v], in the order clip_order (0 or unset: "
        "none)", kind="float", low=0, nullable=True, flag="--clip-value",
        fix="use a positive --clip-value, or 0 to turn clipping off")
    clip_order: str = option(
        "value_then_norm", "order of clip_value and clip_norm: value_then_norm (the RNN-SPN "
        "authors' Lasagne code) or norm_then_value (global norm first, then element-wise: the "
        "ADGM/SDGM authors' code)", choices=CLIP_ORDERS, flag="--clip-order")
    alpha: float | None = option(
        None, "classification weight (unset: the papers' 0.1 * N / N_labelled)", kind="float",
        low=0, nullable=True, flag="--alpha")
    num_particles: int = option(1, "Monte Carlo samples per step (vectorised)", low=1,
                                flag="--num-particles")
    elbo: str = option("trace_enum", objective_names.HELP, flag="--elbo", metavar="OBJECTIVE")
    renyi_alpha: float = option(
        0.0, "order alpha of elbo renyi: >= 0, not 1 (default 0: the importance-weighted bound)",
        low=0, flag="--renyi-alpha")
    validation_size: int | None = option(
        None, "training points held out for model selection (unset: the last 10,000 for "
        "MNIST-sized sets, else 10%)", kind="int", low=0, nullable=True,
        flag="--validation-size", note="training points held out for model selection; None: "
        "10,000 for MNIST-sized sets, else 10%")
    include_labelled_in_unlabelled: bool = option(
        True, "the labelled points also count as unlabelled ones (the command line's "
        "--no-include-labelled keeps them out)", flag="--no-include-labelled")
    steps_per_epoch: int | None = option(
        None, "cap on the optimiser steps of an epoch (unset: a full pass)", kind="int", low=1,
        nullable=True, flag="--steps-per-epoch", fix="omit --steps-per-epoch for full epochs")
    eval_batch_size: int = option(1000, "points per evaluation batch (lower it when memory is "
                                  "short)", low=1, resumable=True, flag="--eval-batch-size")
    classify_samples: int = option(1, "samples averaged by the classifier at evaluation", low=1,
                                   flag="--classify-samples")
    eval_every: int | None = option(
        None, "evaluate (validation and test figures, the diagnostics of an auxiliary a) at the "
        "epoch end that reaches each multiple of this many optimiser steps, and at the last "
        "epoch; evaluation time is kept out of the training time (unset: every epoch)",
        kind="int", low=1, nullable=True, resumable=True, flag="--eval-every")
    validate: bool = option(
        False, "Pyro's argument and shape checks (slower; for writing new pairs)",
        resumable=True, flag="--validate",
        note="Pyro's argument and shape checks, not held-out validation: that is "
             "validation_size")
    free_bits: float = option(0.0, "free bits per latent site (unsupervised models; Kingma et "
                              "al. 2016)", low=0, flag="--free-bits")
    weight_prior_std: float = option(
        0.0, "std of a N(0, std^2) prior on every weight matrix, scaled by 1/N as the ADGM/SDGM "
        "authors (0: none); its gradient is added before clipping, the recorded loss leaves it "
        "out", low=0, flag="--weight-prior-std")
    scan_steps: int = option(
        0, "NumPyro: optimiser steps compiled together with lax.scan, the same updates as one "
        "at a time (0 or 1: one step at a time)", low=0, flag="--scan-steps")
    finite_check: str = option(
        "auto", "when the losses and gradient norms are read to stop a diverging run: every "
        "step (Pyro; a bad step is never applied), or once per epoch (no per-step "
        "synchronisation); auto: step for Pyro on a CPU, else epoch",
        choices=("auto", "step", "epoch"), resumable=True, flag="--finite-check")
    max_minutes: float | None = option(
        None, "stop after the epoch that passes this much training time (unset: no budget)",
        kind="float", low=0, low_open=True, nullable=True, resumable=True,
        flag="--max-minutes")
    budget_clock: str = option(
        "wall", "the clock of max_minutes: wall time, or the process's CPU time (fair budgets "
        "on a shared machine)", choices=("wall", "cpu"), resumable=True, flag="--budget-clock")
    threads: int | None = option(
        None, "CPU threads of torch and XLA (0: every core; unset: the process as it is; the "
        "command line's default is $OMP_NUM_THREADS, else 1)", kind="int", low=0, nullable=True,
        resumable=True, flag="--threads")
    init_from: str | None = option(
        None, "branch: start from the parameters, batch-norm statistics and step of this run "
        "directory's checkpoint (NumPyro; same model, data, labels and seed; a fresh optimiser; "
        "epochs count from that run's start) (default: none)", kind="str", nullable=True,
        flag="--init-from", metavar="RUN_DIR")
    dataset_options: dict[str, Any] = option({}, "options of the data set, e.g. n_digits=2 for "
                                             "mnist-sequence", kind="mapping",
                                             flag_form="--data-option KEY=VALUE")
    hparams: dict[str, Any] = option({}, "network hyperparameters over the pair's own",
                                     kind="mapping", flag_form="--set KEY=VALUE")
    source: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        """Every field against its domain (:func:`check_fields`); a ``UserError`` names the option."""
        if isinstance(self.elbo, str) and ":" in self.elbo:  # iwae:K, renyi:ALPHA:K, rws:K
            from ppl_dgm.infer.objective_names import expand

            self.elbo, self.renyi_alpha, self.num_particles = expand(
                self.elbo, self.renyi_alpha, self.num_particles)
        check_fields(self)
        self.adam_betas = tuple(self.adam_betas)
        if self.elbo == "renyi":
            from ppl_dgm.infer.objective_names import check_alpha

            check_alpha(self.renyi_alpha)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise UserError(f"unknown configuration keys: {sorted(unknown)}",
                            f"a configuration has only {sorted(names)}")
        if "model" not in d:
            raise UserError("the configuration names no model", "add \"model\"")
        return cls(**d)


#: The table of training options (:mod:`ppl_dgm.options`), in the order of TrainConfig's fields.
OPTIONS: dict[str, Option] = table(TrainConfig)
#: The options a resumed run may change.
RESUMABLE: tuple[str, ...] = tuple(name for name, opt in OPTIONS.items() if opt.resumable)


def defaults() -> dict[str, Any]:
    """Every option's default (a fresh copy of mutable ones)."""
    return {name: (dict(opt.default) if isinstance(opt.default, dict) else opt.default)
            for name, opt in OPTIONS.items()}


def resolve(spec: ModelSpec, overrides: dict[str, Any],
            hparam_overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Merge the defaults, the spec's training defaults (replaced by those of the preset
    ``overrides["preset"]`` where one is named) and the user's (non-None) overrides."""
    from ppl_dgm import presets

    spec = presets.apply(spec, overrides.get("preset"))
    values: dict[str, Any] = {"model": spec.name, "backend": spec.backend, "source": spec.source}
    values.update(spec.train)
    values.update({k: v for k, v in overrides.items() if v is not None})
    hparams = dict(spec.hparams)
    for key, value in (hparam_overrides or {}).items():
        if key not in hparams and key != "alpha":
            raise UserError(f"{spec.name} has no hyperparameter {key!r}",
                            f"--set takes one of {sorted(hparams)}")
        hparams[key] = value
    check_hparams(spec.name, spec.hparams, hparams)
    values["hparams"] = hparams
    return TrainConfig.from_dict(values)


def parse_value(text: str) -> Any:
    """``--set key=value`` values: JSON when it parses (numbers, lists, true/false), else a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def check_fields(config: TrainConfig) -> None:
    """Each field of ``config`` against its option's domain (:data:`OPTIONS`); raises
    :class:`UserError` naming the option."""
    check_value("model", config.model, "str")
    for name, opt in OPTIONS.items():
        check(opt, getattr(config, name))
    if not DEVICE_PATTERN.fullmatch(config.device):
        raise UserError(f"unknown device {config.device!r}", "use auto, cpu, cuda or cuda:N")
    if config.elbo not in ELBOS:
        raise UserError(f"unknown --elbo {config.elbo!r}", f"choose from {list(ELBOS)}")
    if config.min_lr > config.lr:
        raise UserError(f"--min-lr {config.min_lr:g} exceeds --lr {config.lr:g}",
                        "the floor of the decayed learning rate must not exceed --lr")
    from ppl_dgm.data import check_dataset_options

    check_dataset_options(config.dataset, config.dataset_options)


def check_hparams(model: str, defaults: dict[str, Any], hparams: dict[str, Any]) -> None:
    """Each hyperparameter must have the kind of its registered default: an integer default is a
    size (an integer >= 1), a list of integers is a list of sizes (non-empty), a number is a
    positive finite number, a flag is true/false, a name is a string. ``alpha`` is a weight >= 0.
    Raises :class:`UserError` naming the ``--set`` key; models may check more in their ``build``.
    """
    for key, value in hparams.items():
        where = f"--set {key}={json.dumps(value) if not isinstance(value, str) else value}"
        default = defaults.get(key)
        if key == "alpha" and key not in defaults:
            check_value(key, value, "float", 0, True, where=where)
        elif isinstance(default, bool):
            check_value(key, value, "bool", where=where, fix=f"{key} is true or false")
        elif _is_int(default):
            low = 1 if default >= 1 else 0
            check_value(key, value, "int", low, True, where=where,
                        fix=f"{key} is a size: an integer >= {low} such as {default}")
        elif _is_real(default):
            check_value(key, value, "float", 0, default <= 0, where=where,
                        fix=f"{key} is a {'positive' if default > 0 else 'non-negative'} number "
                            f"such as {default}")
        elif isinstance(default, str):
            check_value(key, value, "str", where=where, fix=f"{key} is a name such as {default!r}")
        elif isinstance(default, list | tuple) and default and all(_is_int(v) for v in default):
            example = json.dumps(list(default)).replace(" ", "")
            fix = f"{key} is a list of positive integers such as {example}"
            if (not isinstance(value, list | tuple) or not value
                    or not all(_is_int(v) and v >= 1 for v in value)):
                raise UserError(f"{where}: {key} must be a non-empty list of positive integers", fix)
