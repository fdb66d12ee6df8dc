"""The training objectives by name, and which pair each one applies to (backend-neutral).

``--elbo`` names one of :data:`OBJECTIVES`; ``iwae:K`` and ``renyi:ALPHA:K`` are shorthands
(:func:`parse`) for ``--elbo renyi --renyi-alpha ALPHA --num-particles K`` (``iwae:K`` is alpha 0).
:func:`check` decides, from what a trainer knows about its pair (task, the guide's latent sites, in
order, with their kind), whether an objective can train it, and raises one
:class:`UnsupportedObjective` line saying why not and what to use instead. Both trainers call it
before their first step; the Pyro side traces the guide once to learn its sites.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ppl_dgm.errors import UserError

OBJECTIVES = ("trace_enum", "trace", "trace_graph", "trace_meanfield", "renyi", "rws")

#: One line per objective (``train --help``, the README, the compare report).
DESCRIPTIONS = {
    "trace_enum": "TraceEnum_ELBO: the ELBO with discrete guide sites (the label y) summed out "
                  "exactly; continuous sites reparameterised",
    "trace": "Trace_ELBO: every latent sampled; a discrete y gets a plain score-function "
             "(REINFORCE) gradient",
    "trace_graph": "TraceGraph_ELBO: sampled y with score-function gradients reduced by "
                   "dependency tracking (and Pyro's decaying-average baselines)",
    "trace_meanfield": "TraceMeanField_ELBO: analytic KL terms where available; needs a guide "
                       "whose latent sites follow the model's order and have no discrete site",
    "renyi": "RenyiELBO: the Renyi alpha bound with K = --num-particles particles per point "
             "(alpha 0: the importance-weighted bound, IWAE); reparameterised guides only",
    "rws": "ReweightedWakeSleep (Pyro): IWAE bound for the model, self-normalised wake-phi for "
           "the guide; K = --num-particles >= 2; unsupervised pairs",
}

#: Which objectives each backend implements at all.
BACKEND_OBJECTIVES = {
    "pyro": OBJECTIVES,
    "numpyro": ("trace_enum", "trace", "trace_graph", "trace_meanfield", "renyi"),
}

_SHORTHAND = re.compile(r"(iwae):(\d+)|(renyi):([0-9.eE+-]+):(\d+)")


class UnsupportedObjective(UserError):
    """An objective that cannot train a pair (or a backend): raised before the first step."""


@dataclass(frozen=True)
class Objective:
    """``elbo`` (one of :data:`OBJECTIVES`), with the Renyi order and the particles it fixes
    (``None``: keep the configuration's)."""

    elbo: str
    renyi_alpha: float | None = None
    num_particles: int | None = None

    @property
    def label(self) -> str:
        """The name as written on the command line (``trace``, ``iwae:5``, ``renyi:0.5:5``)."""
        if self.elbo == "renyi" and self.num_particles is not None:
            if not self.renyi_alpha:
                return f"iwae:{self.num_particles}"
            return f"renyi:{self.renyi_alpha:g}:{self.num_particles}"
        if self.elbo == "rws" and self.num_particles is not None:
            return f"rws:{self.num_particles}"
        return self.elbo


def parse(text: str) -> Objective:
    """``trace_enum``, ``trace``, ``trace_graph``, ``trace_meanfield``, ``renyi``, ``rws``,
    ``iwae:K``, ``renyi:ALPHA:K`` or ``rws:K`` -> :class:`Objective` (raises ``UserError``)."""
    text = text.strip()
    if text in OBJECTIVES:
        return Objective(text)
    if text.startswith("rws:") and text[4:].isdigit():
        return Objective("rws", None, int(text[4:]))
    match = _SHORTHAND.fullmatch(text)
    if match is None:
        raise UserError(f"unknown objective {text!r}",
                        f"use one of {list(OBJECTIVES)}, iwae:K, renyi:ALPHA:K or rws:K")
    if match.group(1):
        return Objective("renyi", 0.0, _particles(int(match.group(2)), text))
    try:
        alpha = float(match.group(4))
    except ValueError:
        raise UserError(f"objective {text!r}: {match.group(4)!r} is not a number",
                        "write renyi:ALPHA:K, e.g. renyi:0.5:5") from None
    check_alpha(alpha)
    return Objective("renyi", alpha, _particles(int(match.group(5)), text))


def _particles(k: int, text: str) -> int:
    if k < 1:
        raise UserError(f"objective {text!r} has K = {k} particles", "K is an integer >= 1")
    return k


def check_alpha(alpha: float) -> None:
    """The Renyi order: a finite number >= 0 other than 1 (alpha = 1 is the ELBO: use trace)."""
    if not isinstance(alpha, int | float) or isinstance(alpha, bool) or not math.isfinite(alpha):
        raise UserError(f"--renyi-alpha must be a finite number (got {alpha!r})")
    if alpha < 0:
        raise UserError(f"--renyi-alpha {alpha:g} is negative",
                        "use alpha >= 0 (0: the importance-weighted bound)")
    if alpha == 1:
        raise UserError("--renyi-alpha 1 is the ordinary ELBO", "use --elbo trace")


def expand(elbo: str, renyi_alpha: float, num_particles: int) -> tuple[str, float, int]:
    """``(elbo, renyi_alpha, num_particles)`` with a shorthand ``elbo`` expanded (its alpha and K
    win over the other two)."""
    objective = parse(elbo)
    return (objective.elbo,
            renyi_alpha if objective.renyi_alpha is None else objective.renyi_alpha,
            num_particles if objective.num_particles is None else objective.num_particles)


@dataclass(frozen=True)
class GuideSite:
    """A latent site of the guide: its name and whether it is reparameterised (continuous)."""

    name: str
    reparameterized: bool


def check(elbo: str, *, backend: str, task: str, model: str, guide_sites: Sequence[GuideSite],
          model_latents: Sequence[str], num_particles: int, renyi_alpha: float = 0.0,
          guide_has_factor: bool = False) -> None:
    """Raise :class:`UnsupportedObjective` (one line) if ``elbo`` cannot train this pair.

    ``guide_sites``: the guide's latent sites in the order it samples them on an unlabelled batch,
    traced without enumeration; ``model_latents``: the model's latent sites in its order;
    ``guide_has_factor``: the guide adds a term to the objective (the classification factor of
    semi-supervised guides).
    """
    name = f"--elbo {elbo} with {model} ({backend})"
    if elbo not in BACKEND_OBJECTIVES[backend]:
        raise UnsupportedObjective(f"{name}: NumPyro has no reweighted wake-sleep",
                                   "use --backend pyro, or --elbo renyi (iwae:K)")
    if task == "supervised":
        if elbo != "trace" and not (backend == "pyro" and elbo == "trace_enum"):
            raise UnsupportedObjective(
                f"{name}: the pair has no latent variables, its objective is the labels' "
                "log-likelihood", "use --elbo trace")
        return
    discrete = [s.name for s in guide_sites if not s.reparameterized]
    if elbo == "renyi":
        check_alpha(renyi_alpha)
    if discrete and elbo in ("trace_meanfield", "renyi"):
        what = "has no analytic KL" if elbo == "trace_meanfield" else (
            "assumes reparameterised sites (no score-function term)")
        raise UnsupportedObjective(
            f"{name}: the guide samples the discrete site(s) {discrete}, and {elbo} {what}",
            "use trace_enum (exact sum), trace or trace_graph (score function)")
    if discrete and elbo == "trace" and backend == "numpyro":
        raise UnsupportedObjective(
            f"{name}: NumPyro's Trace_ELBO has no score-function gradient for the discrete "
            f"site(s) {discrete}", "use trace_graph (score function) or trace_enum")
    if elbo == "trace_meanfield":
        guide_order = [s.name for s in guide_sites]
        model_order = [n for n in model_latents if n in set(guide_order)]
        if guide_order != model_order:
            raise UnsupportedObjective(
                f"{name}: the guide samples {guide_order} but the model {model_order}; the "
                "analytic KL needs each guide site to condition on what the model's does",
                "use trace (or a top-down guide such as lvae's)")
    if elbo == "rws":
        if task != "unsupervised" or guide_has_factor:
            raise UnsupportedObjective(
                f"{name}: the guide's classification factor would enter wake-phi as part of "
                "log q", "use trace_enum, trace or trace_graph")
        if num_particles < 2:
            raise UnsupportedObjective(f"{name}: reweighted wake-sleep needs K >= 2 particles",
                                       "pass --num-particles 5 (or --elbo rws:5)")


#: The ``--elbo`` help text: every objective and the shorthands.
HELP = ("training objective (default: the model's, trace_enum for semi-supervised pairs, trace "
        "otherwise): " + "; ".join(f"{name}: {text}" for name, text in DESCRIPTIONS.items())
        + "; shorthands: iwae:K (renyi, alpha 0, K particles), renyi:ALPHA:K, rws:K. NumPyro "
        "has all but rws; an objective that cannot train a pair is refused before training")
