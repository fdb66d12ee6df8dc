"""Name -> model/guide pair, task and default hyperparameters (backend-neutral: imports nothing heavy).

Adding a pair: write the generative model in ``models/``, the guide in ``guides/``, a ``build``
function returning a :class:`ppl_dgm.pair.Pair`, and one ``register(ModelSpec(...))`` line below.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

TASKS = ("semi-supervised", "unsupervised", "supervised")


@dataclass(frozen=True)
class ModelSpec:
    """A registered model/guide pair.

    ``build`` is ``"module:function"``; the function takes ``(hparams: dict, data: DataInfo)`` and
    returns the pair for the backend. ``hparams`` are the network's defaults (overridable with
    ``--set key=value``); ``train`` overrides the defaults of :class:`ppl_dgm.config.TrainConfig`.
    """

    name: str
    task: str
    build: str
    hparams: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    backend: str = "pyro"

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"{self.name}: task {self.task!r} is not one of {TASKS}")

    def builder(self) -> Callable[..., Any]:
        module, _, function = self.build.partition(":")
        return getattr(importlib.import_module(module), function)


_REGISTRY: dict[tuple[str, str], ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    key = (spec.name, spec.backend)
    if key in _REGISTRY:
        raise ValueError(f"model {spec.name!r} is already registered for backend {spec.backend!r}")
    _REGISTRY[key] = spec
    return spec


def get(name: str, backend: str = "pyro") -> ModelSpec:
    try:
        return _REGISTRY[(name, backend)]
    except KeyError:
        known = sorted({n for n, b in _REGISTRY if b == backend})
        raise KeyError(f"no model {name!r} for backend {backend!r}; registered: {known}") from None


def all_specs() -> list[ModelSpec]:
    return sorted(_REGISTRY.values(), key=lambda s: (s.name, s.backend))


# ---------------------------------------------------------------------------------------------
# The registered pairs.
# ---------------------------------------------------------------------------------------------

register(ModelSpec(
    name="m2",
    task="semi-supervised",
    build="ppl_dgm.models.m2:build",
    hparams={"z_dim": 50, "hidden": [500], "activation": "softplus", "batch_norm": True},
    train={"lr": 1e-3, "warmup_epochs": 0},
    description="M2 semi-supervised VAE (Kingma et al. 2014): p(y)p(z)p(x|y,z), q(y|x)q(z|x,y)",
))
