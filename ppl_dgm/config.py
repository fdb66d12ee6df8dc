"""Run configuration as plain data: defaults < the registered model's defaults < the user's choices."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from ppl_dgm.registry import ModelSpec

ELBOS = ("trace_enum", "trace", "trace_graph", "trace_meanfield", "renyi")


@dataclass
class TrainConfig:
    """Everything a training run depends on (written to ``RUN_DIR/config.json``).

    ``labels`` is the number of labelled training points (balanced across classes; ``None`` = all).
    ``alpha`` weighs the classification term; ``None`` means the papers' 0.1 * N / N_labelled.
    ``lr_decay`` multiplies the learning rate every ``lr_decay_every`` epochs, not below ``min_lr``.
    ``free_bits`` > 0 (unsupervised models) holds each latent site's KL at or above that many nats
    (Kingma et al. 2016; ``ppl_dgm.infer.free_bits``), an option beside warm-up.
    ``max_minutes`` ends training after the first epoch at which that much training time has been
    spent (equal-budget comparisons); the run is then evaluated as usual.
    ``clip_value`` clips every gradient element to [-clip_value, clip_value] before the global-norm
    clipping of ``clip_norm`` (the order of the authors' Theano code for ADGM/SDGM and RNN-SPN).
    ``validate`` turns on Pyro's argument and shape checks (slower; useful while writing a new pair).
    ``validation_size``: training points held out for model selection (default: the last 10,000
    for MNIST-sized sets, else 10%). ``steps_per_epoch`` caps the steps of an epoch (quick runs).
    """

    model: str
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
    # torch.optim.RMSprop's alpha and eps (eps is added outside the square root)
    rmsprop_alpha: float = 0.99
    rmsprop_eps: float = 1e-8
    lr_decay: float = 1.0
    lr_decay_every: int = 0
    min_lr: float = 0.0
    clip_norm: float | None = None
    clip_value: float | None = None
    alpha: float | None = None
    num_particles: int = 1
    elbo: str = "trace_enum"
    validation_size: int | None = None
    include_labelled_in_unlabelled: bool = True
    steps_per_epoch: int | None = None
    eval_batch_size: int = 1000
    classify_samples: int = 1
    validate: bool = False
    free_bits: float = 0.0
    max_minutes: float | None = None
    dataset_options: dict[str, Any] = field(default_factory=dict)
    hparams: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.adam_betas = tuple(self.adam_betas)
        if self.elbo not in ELBOS:
            raise ValueError(f"unknown ELBO {self.elbo!r}; choose from {ELBOS}")
        for name in ("epochs", "batch_size", "labelled_batch_size", "num_particles"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 (got {getattr(self, name)})")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive (got {self.lr})")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0 (got {self.warmup_epochs})")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown configuration keys: {sorted(unknown)}")
        return cls(**d)


def resolve(spec: ModelSpec, overrides: dict[str, Any],
            hparam_overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Merge the defaults, the spec's training defaults and the user's (non-None) overrides."""
    values: dict[str, Any] = {"model": spec.name, "backend": spec.backend}
    values.update(spec.train)
    values.update({k: v for k, v in overrides.items() if v is not None})
    hparams = dict(spec.hparams)
    for key, value in (hparam_overrides or {}).items():
        if key not in hparams and key != "alpha":
            raise ValueError(f"{spec.name} has no hyperparameter {key!r}; it has {sorted(hparams)}")
        hparams[key] = value
    values["hparams"] = hparams
    return TrainConfig.from_dict(values)


def parse_value(text: str) -> Any:
    """``--set key=value`` values: JSON when it parses (numbers, lists, true/false), else a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text
