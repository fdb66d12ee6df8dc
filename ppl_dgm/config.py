"""Run configuration as plain data: defaults < the registered model's defaults < the user's choices."""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import re
from dataclasses import dataclass, field
from typing import Any

from ppl_dgm.errors import UserError
from ppl_dgm.registry import ModelSpec

ELBOS = ("trace_enum", "trace", "trace_graph", "trace_meanfield", "renyi", "rws")


@dataclass
class TrainConfig:
    """Everything a training run depends on (written to ``RUN_DIR/config.json``).

    ``preset`` names the :mod:`ppl_dgm.presets` entry (an authors' script) whose settings replaced
    the registered defaults before the user's own options (``None``: the registered recipe).
    ``labels`` is the number of labelled training points (balanced across classes; ``None`` = all).
    ``alpha`` weighs the classification term; ``None`` means the papers' 0.1 * N / N_labelled.
    ``lr_decay`` multiplies the learning rate every ``lr_decay_every`` epochs, not below ``min_lr``.
    ``free_bits`` > 0 (unsupervised models) holds each latent site's KL at or above that many nats
    (Kingma et al. 2016; ``ppl_dgm.infer.free_bits``), an option beside warm-up.
    ``adam_eps`` is Adam's epsilon, added to the square root of the bias-corrected second moment
    by both backends' Adam (torch, optax); the LVAE authors' Lasagne Adam used 1e-4 (added before
    the bias correction, ``ppl_dgm.presets``' ``authors``).
    ``weight_prior_std`` > 0 puts the prior N(0, std^2) on every weight matrix (parameters with two
    or more dimensions; not biases or batch-norm parameters), as the ADGM/SDGM authors' code does
    with std 1: the objective per data point gains -log p(theta) / N (N: the training points), whose
    gradient theta / (std^2 N) is added before clipping. The recorded loss is the negative ELBO
    without it. 0 (default): no prior (maximum likelihood in theta).
    ``scan_steps`` > 1 (NumPyro backend): that many optimiser steps run as one compiled program
    (``lax.scan`` over the steps' batches; the same updates as one step at a time, and a stop
    signal is answered between chunks); 0 or 1: one compiled step at a time.
    ``finite_check`` says when the trainer reads the steps' losses and gradient norms to stop a
    diverging run: ``"step"`` (Pyro: before every update, one host synchronisation per step; a
    non-finite step is never applied and the error names the loss terms, sample sites and
    gradients that failed), ``"epoch"`` (no synchronisation per step: the values stay on the device
    and are read at the end of the epoch and before a mid-epoch checkpoint; the error names the
    first non-finite step and the parameters; the NumPyro backend always works so) or ``"auto"``
    (default: ``"step"`` for Pyro on a CPU, where a read waits for no device; ``"epoch"`` on a GPU
    and for NumPyro). Either way no checkpoint holds a non-finite value.
    ``max_minutes`` ends training after the first epoch at which that much training time has been
    spent (equal-budget comparisons); the run is then evaluated as usual. ``budget_clock`` says which
    time: ``"wall"`` (elapsed seconds of the epochs' steps) or ``"cpu"`` (the process's CPU seconds
    over the same steps: equal budgets stay equal when other jobs share the cores). Both are recorded
    per epoch (``seconds``, ``cpu_seconds``).
    ``clip_value`` clips every gradient element to [-clip_value, clip_value] and ``clip_norm`` the
    global gradient norm, in the order ``clip_order``: ``"value_then_norm"`` (element-wise first, the
    RNN-SPN authors' Lasagne code) or ``"norm_then_value"`` (global norm first, then element-wise:
    the ADGM/SDGM authors' code, global norm 5 then [-1, 1]).
    ``elbo`` is the objective (``ppl_dgm.infer.objective_names``; ``iwae:K``, ``renyi:ALPHA:K`` and
    ``rws:K`` are expanded into ``elbo``, ``renyi_alpha`` and ``num_particles``); ``renyi_alpha`` is
    the order of ``--elbo renyi`` (0: the importance-weighted bound).
    ``validate`` turns on Pyro's argument and shape checks (slower; useful while writing a new pair).
    ``validation_size``: training points held out for model selection (default: the last 10,000
    for MNIST-sized sets, else 10%). ``steps_per_epoch`` caps the steps of an epoch (quick runs).
    ``eval_every``: evaluate (validation and test figures, the diagnostics of an auxiliary a) at
    the end of the epoch in which the step count reaches each multiple of that many optimiser steps,
    and at the last epoch; ``None`` (default): after every epoch. Every record carries ``step``, and
    an evaluated one its ``eval_seconds`` (kept out of the training time and the budget).
    ``init_from``: a run directory whose checkpoint (written between two epochs) this new run
    starts from, a branch (NumPyro backend): its parameters, batch-norm statistics, epoch and step
    counts and the position of its batch sequence; the optimiser starts afresh (Adam's moments and
    the schedule's count at zero), and so does the history (its records continue the step count).
    The source must have the same model, data set, labels, seed and validation split; everything
    else (objective weights, particles, frozen networks, ...) may differ. ``epochs`` still counts
    from the start of the source run.
    ``threads``: CPU threads of torch / XLA (``ppl_dgm.threads``; 0: every core; ``None``: leave the
    process as it is). The CLI sets it to ``--threads`` (default ``$OMP_NUM_THREADS``, else 1).
    """

    model: str
    preset: str | None = None
    dataset: str = "digits"
    data_dir: str | None = None
    backend: str = "pyro"
    labels: int | None = 100
    epochs: int = 10
    batch_size: int = 100
    labelled_batch_size: int = 100
    seed: int = 0
    warmup_epochs: float = 0.0
    device: str = "auto"
    optimizer: str = "adam"
    lr: float = 1e-3
    adam_betas: tuple[float, float] = (0.9, 0.999)
    # Adam's epsilon (torch and optax add it to sqrt(v_hat), after v's bias correction)
    adam_eps: float = 1e-8
    # torch.optim.RMSprop's alpha and eps (eps is added outside the square root)
    rmsprop_alpha: float = 0.99
    rmsprop_eps: float = 1e-8
    lr_decay: float = 1.0
    lr_decay_every: int = 0
    min_lr: float = 0.0
    clip_norm: float | None = None
    clip_value: float | None = None
    clip_order: str = "value_then_norm"
    alpha: float | None = None
    num_particles: int = 1
    elbo: str = "trace_enum"
    renyi_alpha: float = 0.0
    validation_size: int | None = None
    include_labelled_in_unlabelled: bool = True
    steps_per_epoch: int | None = None
    eval_batch_size: int = 1000
    classify_samples: int = 1
    eval_every: int | None = None
    validate: bool = False
    free_bits: float = 0.0
    weight_prior_std: float = 0.0
    scan_steps: int = 0
    finite_check: str = "auto"
    max_minutes: float | None = None
    budget_clock: str = "wall"
    threads: int | None = None
    init_from: str | None = None
    dataset_options: dict[str, Any] = field(default_factory=dict)
    hparams: dict[str, Any] = field(default_factory=dict)
    # where a pair from outside the library came from (ppl_dgm.user_pairs); None: a registered name
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


# ------------------------------------------------------------------------------------- domains
# field -> (kind, lower bound, lower bound inclusive?, upper bound, upper inclusive?, None allowed?)
# kinds: "int", "float" (any real), "str", "bool". The option's flag is the field with dashes.
_DOMAINS: dict[str, tuple[str, float | None, bool, float | None, bool, bool]] = {
    "labels": ("int", 0, True, None, False, True),  # 0: a label model trained unsupervised
    "epochs": ("int", 1, True, None, False, False),
    "batch_size": ("int", 1, True, None, False, False),
    "labelled_batch_size": ("int", 1, True, None, False, False),
    "seed": ("int", 0, True, 2**32, False, False),
    "warmup_epochs": ("float", 0, True, None, False, False),
    "lr": ("float", 0, False, None, False, False),
    "rmsprop_alpha": ("float", 0, True, 1, False, False),
    "rmsprop_eps": ("float", 0, False, None, False, False),
    "adam_eps": ("float", 0, False, None, False, False),
    "lr_decay": ("float", 0, False, 1, True, False),
    "lr_decay_every": ("int", 0, True, None, False, False),
    "min_lr": ("float", 0, True, None, False, False),
    "clip_norm": ("float", 0, True, None, False, True),
    "clip_value": ("float", 0, True, None, False, True),
    "alpha": ("float", 0, True, None, False, True),
    "num_particles": ("int", 1, True, None, False, False),
    "validation_size": ("int", 0, True, None, False, True),
    "steps_per_epoch": ("int", 1, True, None, False, True),
    "eval_batch_size": ("int", 1, True, None, False, False),
    "classify_samples": ("int", 1, True, None, False, False),
    "eval_every": ("int", 1, True, None, False, True),
    "free_bits": ("float", 0, True, None, False, False),
    "weight_prior_std": ("float", 0, True, None, False, False),
    "scan_steps": ("int", 0, True, None, False, False),
    "max_minutes": ("float", 0, False, None, False, True),
    "threads": ("int", 0, True, None, False, True),
}
CLIP_ORDERS = ("value_then_norm", "norm_then_value")
_CHOICES = {"elbo": ELBOS, "optimizer": ("adam", "rmsprop"), "backend": ("pyro", "numpyro"),
            "clip_order": CLIP_ORDERS, "budget_clock": ("wall", "cpu"),
            "finite_check": ("auto", "step", "epoch")}
_FIXES = {
    "steps_per_epoch": "omit --steps-per-epoch for full epochs",
    "clip_norm": "use a positive --clip-norm, or 0 to turn clipping off",
    "clip_value": "use a positive --clip-value, or 0 to turn clipping off",
    "labels": "use a positive multiple of the number of classes, or 0 (fully unsupervised)",
    "lr_decay": "a decay factor lies in (0, 1]; 1 keeps the learning rate constant",
}
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_value(name: str, value: Any, kind: str, low: float | None = None, low_inclusive: bool = True,
                high: float | None = None, high_inclusive: bool = False, optional: bool = False,
                where: str | None = None, fix: str | None = None) -> None:
    """Raise :class:`UserError` unless ``value`` is of ``kind`` and lies in its bounds."""
    where = where or _flag(name)
    if value is None:
        if optional:
            return
        raise UserError(f"{where} needs a value", fix)
    if kind == "int" and not _is_int(value):
        raise UserError(f"{where} must be an integer (got {value!r})", fix)
    if kind == "float" and not (_is_real(value) and math.isfinite(value)):
        raise UserError(f"{where} must be a finite number (got {value!r})", fix)
    if kind in ("int", "float"):
        if low is not None and (value < low or (value == low and not low_inclusive)):
            relation = ">=" if low_inclusive else ">"
            raise UserError(f"{where} must be {relation} {low:g} (got {value!r})", fix)
        if high is not None and (value > high or (value == high and not high_inclusive)):
            relation = "<=" if high_inclusive else "<"
            raise UserError(f"{where} must be {relation} {high:g} (got {value!r})", fix)
    if kind == "str" and not isinstance(value, str):
        raise UserError(f"{where} must be a string (got {value!r})", fix)
    if kind == "bool" and not isinstance(value, bool):
        raise UserError(f"{where} must be true or false (got {value!r})", fix)


def check_fields(config: TrainConfig) -> None:
    """Each field of ``config`` against its domain (types and bounds); raises :class:`UserError`."""
    for name in ("model", "dataset", "device"):
        check_value(name, getattr(config, name), "str")
    if config.data_dir is not None:
        check_value("data_dir", config.data_dir, "str")
    if not DEVICE_PATTERN.fullmatch(config.device):
        raise UserError(f"unknown device {config.device!r}", "use auto, cpu, cuda or cuda:N")
    for name, choices in _CHOICES.items():
        if getattr(config, name) not in choices:
            raise UserError(f"unknown {_flag(name)} {getattr(config, name)!r}",
                            f"choose from {list(choices)}")
    for name, (kind, low, low_inc, high, high_inc, optional) in _DOMAINS.items():
        check_value(name, getattr(config, name), kind, low, low_inc, high, high_inc, optional,
                    fix=_FIXES.get(name))
    if config.min_lr > config.lr:
        raise UserError(f"--min-lr {config.min_lr:g} exceeds --lr {config.lr:g}",
                        "the floor of the decayed learning rate must not exceed --lr")
    betas = config.adam_betas
    if (not isinstance(betas, list | tuple) or len(betas) != 2
            or not all(_is_real(b) and 0 <= b < 1 for b in betas)):
        raise UserError(f"adam_betas must be two numbers in [0, 1) (got {betas!r})")
    for name in ("include_labelled_in_unlabelled", "validate"):
        check_value(name, getattr(config, name), "bool")
    for name in ("dataset_options", "hparams"):
        if not isinstance(getattr(config, name), dict):
            raise UserError(f"{name} must be a mapping (got {getattr(config, name)!r})")
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
