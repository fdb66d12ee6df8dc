"""What a model/guide pair declares about itself: :class:`ModelSpec` and the :func:`model_spec`
decorator (backend-neutral: imports nothing heavy).

Below both the library's registry (:mod:`ppl_dgm.registry`, which re-exports these names) and the
finding of pairs from outside the library (:mod:`ppl_dgm.user_pairs`), which both need them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

TASKS = ("semi-supervised", "unsupervised", "supervised")
BACKENDS = ("pyro", "numpyro")


@dataclass(frozen=True)
class ModelSpec:
    """A registered model/guide pair.

    ``build`` is ``"module:function"`` or the function itself; the function takes ``(hparams: dict,
    data: DataInfo)`` and returns the pair for the backend. ``hparams`` are the network's defaults
    (overridable with ``--set key=value``); ``train`` overrides the defaults of
    :class:`ppl_dgm.config.TrainConfig`. ``source`` says where a pair from outside the library came
    from (recorded in the run's ``config.json``; ``None`` for the registered pairs).
    """

    name: str
    task: str
    build: str | Callable[..., Any]
    hparams: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    backend: str = "pyro"
    source: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"{self.name}: task {self.task!r} is not one of {TASKS}")
        if self.backend not in BACKENDS:
            raise ValueError(f"{self.name}: backend {self.backend!r} is not one of {BACKENDS}")

    def builder(self) -> Callable[..., Any]:
        if callable(self.build):
            return self.build
        module, _, function = self.build.partition(":")
        return getattr(importlib.import_module(module), function)


def model_spec(task: str, hparams: dict[str, Any] | None = None, train: dict[str, Any] | None = None,
               *, name: str | None = None, description: str | None = None,
               backend: str = "pyro") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator giving a user's ``build`` function its task and defaults (``build.spec``).

    ``name`` defaults to the module's name (the file's stem), ``description`` to the first line of
    the function's docstring. See :mod:`ppl_dgm.contract`.
    """

    def decorate(build: Callable[..., Any]) -> Callable[..., Any]:
        doc = (build.__doc__ or "").strip().splitlines()
        build.spec = ModelSpec(  # type: ignore[attr-defined]
            name=name or "",  # "": the loader names it after the file or module
            task=task, build=build, hparams=dict(hparams or {}), train=dict(train or {}),
            description=description if description is not None else (doc[0] if doc else ""),
            backend=backend)
        return build

    return decorate
