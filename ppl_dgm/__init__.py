"""ppl-dgm: deep generative models for semi-supervised and hierarchical learning, as Pyro and
NumPyro model/guide pairs.

The Python API (:mod:`ppl_dgm.api`)::

    import ppl_dgm

    run = ppl_dgm.train("m2", dataset="digits", labels=100, epochs=30, out="runs/m2")
    run.evaluate(iw_samples=1000); run.sample(); run = run.resume(epochs=60)
    run = ppl_dgm.load("runs/m2")
    ppl_dgm.compare(["m2"], ["trace_enum", "trace"], epochs=3, out="compare")
    ppl_dgm.sweep("m2", seeds=[0, 1, 2], labels=[20, 100], epochs=10, out="runs/sweep")
    ppl_dgm.reproduce("adgm-mnist100", minutes=60)

``import ppl_dgm`` is light: torch or JAX are imported by the backend a run uses, when it starts.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Run", "compare", "load", "reproduce", "sweep", "train"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from ppl_dgm import api

        return getattr(api, name)
    raise AttributeError(f"module 'ppl_dgm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
