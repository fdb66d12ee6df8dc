"""``ppl-dgm reproduce CLAIM --minutes M``: one command per paper's headline claim.

Each claim (:data:`CLAIMS`) names the paper's setting (models, data set, labels, the figure that is
compared) and the figures the paper reports (:data:`PAPER`: the papers' own numbers, quoted with
their source, not results of this project). ``reproduce`` trains every model of the claim with its
registered recipe (``ppl_dgm/registry.py``), one run per model and seed, each for ``--minutes`` of
training time (evaluation excluded; the trainer stops after the first epoch that passes the
budget), on the fastest backend for the device (:data:`FASTEST_BACKEND`), and writes a report folder:

- ``report.md`` and ``report.json``: the final figure of every run, their mean and spread over
  seeds, the gap to the paper's number, the diagnostics of the auxiliary variable for ADGM/SDGM
  (I(y; a | x) and the standard deviation of q(a|x) at the last evaluation:
  ``ppl_dgm.infer.auxiliary_diagnostics``), whether the paper's ordering shows (LVAE > VAE,
  RNN-SPN < FFN-SPN < CNN), and the exact commands that produced it; for ``adgm-mnist100``,
  ``milestones``: at each of 30k, 48k, 60k, 90k and 120k optimiser steps the run has passed, its
  test error (100 samples of a) beside the authors' own at the same step (their published
  training log, shipped as :mod:`ppl_dgm.reference`);
- ``learning_curves.png``: the figure of every run (the test error recorded for learning curves,
  by optimiser steps, or the validation ELBO by epochs), the paper's number drawn as a horizontal
  line and, for ``adgm-mnist100``, the authors' curve by steps; ``auxiliary.png`` for ADGM/SDGM:
  I(y; a | x) and the standard deviation of q(a|x) by steps;
- ``runs/MODEL-BACKEND-seedS/``: the ordinary run directories (``ppl-dgm evaluate`` reads them).

Calling it again with the same ``--out`` and a larger ``--minutes`` continues the same runs from
their checkpoints (the trainer's ``--resume``: nothing restarts; ``max_minutes`` grows); a run that
has already spent the budget is not trained again, and the report is rewritten.

Backends: where ``benchmarks/results/throughput/cpu.json`` (or ``cuda.json``), written by a full run
of ``benchmarks/throughput.py``, holds both backends' step times of a model at one thread, the
faster one (on this project's 2-core CPU: NumPyro for M2, ADGM, SDGM, VAE, LVAE and CaGeM, e.g.
M2 83 ms per step against Pyro's 131 ms; Pyro for the RNN-SPN family); else
:data:`FASTEST_BACKEND`: on a GPU the NumPyro backend (each step one compiled XLA program; Pyro
launches every operation separately), on a CPU the Pyro backend (every model has a Pyro pair, and
it needs no JAX). ``--backend`` overrides it; the report records the backend of every run.

Log-likelihood claims (``lvae-mnist``, ``cagem-mnist``) are scored with the importance-weighted
estimate of ``ppl-dgm evaluate`` with ``--iw-samples`` particles (default: the papers' 5000 on a GPU,
none on a CPU, where the test ELBO, a lower bound, is reported instead and labelled as such), on the
whole test set or its first ``--iw-subset`` points (labelled so in the report).

Smoke tests and small studies may change the setting (``--dataset``, ``--set KEY=VALUE`` for the
networks, ``--config KEY=VALUE`` for the training configuration): the report then lists these
deviations from the paper's setting above its table.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from ppl_dgm import registry, results
from ppl_dgm.config import resolve
from ppl_dgm.errors import UserError

# The papers' reported figures (../shared/design/papers.md): error rates as fractions, test
# log-likelihoods in nats (5000 importance samples). model -> (value, spread or None, source).
PAPER: dict[str, tuple[float, float | None, str]] = {
    "m2": (0.1197, None, "Kingma, Rezende, Mohamed, Welling 2014, Table 1: M2 alone, MNIST, 100 labels"),
    "adgm": (0.0096, 0.0002, "Maaløe, Sønderby, Sønderby, Winther 2016, Table 1: ADGM, MNIST, 100 labels"),
    "sdgm": (0.0132, 0.0007, "Maaløe, Sønderby, Sønderby, Winther 2016, Table 1: SDGM, MNIST, 100 labels"),
    "lvae": (-81.84, None, "Sønderby, Raiko, Maaløe, Sønderby, Winther 2016: LVAE, 5 layers, MNIST "
                           "test log-likelihood (with fine-tuning)"),
    "rnn-spn": (0.015, None, "Sønderby, Sønderby, Maaløe, Winther 2015: RNN-SPN single-digit test error"),
    "ffn-spn": (0.020, None, "Sønderby, Sønderby, Maaløe, Winther 2015: FFN-SPN single-digit test error"),
    "cnn-seq": (0.029, None, "Sønderby, Sønderby, Maaløe, Winther 2015: CNN single-digit test error"),
    "cagem": (-79.38, None, "Maaløe, Fraccaro, Winther 2017: CaGeM with labels, permutation-invariant "
                            "MNIST test log-likelihood"),
}


@dataclass(frozen=True)
class Claim:
    """A paper's setting: the models compared, the data, the figure, and the expected ordering
    (``order``: models from best to worst, or empty)."""

    name: str
    models: tuple[str, ...]
    dataset: str
    metric: str  # "test_error" or "log_likelihood"
    labels: int | None = None
    epochs: int | None = None  # cap on epochs (None: the budget alone ends training)
    order: tuple[str, ...] = ()
    overrides: dict[str, Any] = field(default_factory=dict)
    summary: str = ""
    reference: str | None = None  # an authors' curve of ppl_dgm.reference to set beside the runs


CLAIMS: dict[str, Claim] = {c.name: c for c in (
    Claim("m2-mnist100", ("m2",), "mnist", "test_error", labels=100,
          summary="M2 on MNIST with 100 labels: 11.97% test error"),
    # the authors trained on all 60,000 images (no validation split); evaluated every 3000 steps,
    # which falls on each milestone of ppl_dgm.reference.MILESTONES
    Claim("adgm-mnist100", ("adgm",), "mnist", "test_error", labels=100,
          overrides={"validation_size": 0, "eval_every": 3000}, reference="adgm_mnist100",
          summary="ADGM on MNIST with 100 labels: 0.96% test error, with an active auxiliary a"),
    Claim("sdgm-mnist100", ("sdgm",), "mnist", "test_error", labels=100,
          overrides={"validation_size": 0, "eval_every": 3000},
          summary="SDGM on MNIST with 100 labels: 1.32% test error"),
    Claim("lvae-mnist", ("vae", "lvae"), "mnist", "log_likelihood", epochs=2000,
          order=("lvae", "vae"),
          summary="the ladder guide beats the plain hierarchical guide on MNIST (LVAE -81.84 nats)"),
    Claim("rnn-spn-sequences", ("rnn-spn", "ffn-spn", "cnn-seq"), "mnist-sequence", "test_error",
          order=("rnn-spn", "ffn-spn", "cnn-seq"),
          summary="RNN-SPN 1.5% < FFN-SPN 2.0% < CNN 2.9% single-digit error on cluttered MNIST "
                  "sequences"),
    Claim("cagem-mnist", ("cagem",), "mnist", "log_likelihood", labels=100,
          summary="CaGeM with 100 labels: -79.38 nats (registered once models/cagem.py exists)"),
)}

# device kind -> backend; see the module docstring for the measurements behind it
FASTEST_BACKEND = {"cuda": "numpyro", "cpu": "pyro"}
RUNS = "runs"
REPORT_MD, REPORT_JSON, CURVES = "report.md", "report.json", "learning_curves.png"
AUXILIARY = "auxiliary.png"


# ------------------------------------------------------------------------------------ choices
def gpu_present() -> bool:
    """An NVIDIA GPU on this machine (its driver's listing), without importing torch or JAX."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())


def choose_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is present, else ``cpu``; others as given."""
    if device == "auto":
        return "cuda" if gpu_present() else "cpu"
    return device


# full (not --quick) measurements of benchmarks/throughput.py, when this is a source checkout
MEASURED = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "throughput"


def measured_backend(model: str, device: str, folder: Path = MEASURED) -> str | None:
    """The backend with the shorter measured step of ``model`` at one thread on this kind of
    device (``benchmarks/results/throughput/{cpu,cuda}.json``), or ``None`` without a measurement."""
    path = folder / f"{'cuda' if device.startswith('cuda') else 'cpu'}.json"
    try:
        steps = results.read_json(path)["per_threads"]["1"]["models"][model]["step_seconds"]
        return "numpyro" if steps["numpyro"] < steps["pyro"] else "pyro"
    except (OSError, ValueError, KeyError, TypeError):
        return None


def choose_backend(backend: str, device: str, model: str, folder: Path = MEASURED) -> str:
    """``auto`` -> the faster backend measured for the model on this kind of device
    (:func:`measured_backend`), else :data:`FASTEST_BACKEND`; Pyro when the model has no NumPyro
    twin."""
    if backend != "auto":
        return backend
    choice = (measured_backend(model, device, folder)
              or FASTEST_BACKEND["cuda" if device.startswith("cuda") else "cpu"])
    try:
        registry.get(model, choice)
    except KeyError:
        return "pyro"
    return choice


def claim_models(claim: Claim) -> tuple[str, ...]:
    """The claim's models, each registered (looked up now: ``cagem`` may be added later)."""
    for model in claim.models:
        try:
            registry.get(model, "pyro")
        except KeyError:
            raise UserError(f"the claim {claim.name} needs the model {model!r}, which is not "
                            "registered in this version", f"choose one of {available_claims()}") from None
    return claim.models


def available_claims() -> list[str]:
    names = []
    for claim in CLAIMS.values():
        try:
            for model in claim.models:
                registry.get(model, "pyro")
        except KeyError:
            continue
        names.append(claim.name)
    return names


# ------------------------------------------------------------------------------------ runs
def run_config(claim: Claim, model: str, backend: str, device: str, seed: int, minutes: float,
               args: SimpleNamespace) -> Any:
    """The training configuration of one run: the registered recipe in the paper's setting."""
    spec = registry.get(model, backend)
    # epochs: the paper's cap where it has one (LVAE 2000), the registered one, else the budget
    overrides: dict[str, Any] = {"dataset": args.dataset or claim.dataset, "device": device,
                                 "seed": seed, "max_minutes": minutes, "backend": backend,
                                 "epochs": claim.epochs or spec.train.get("epochs") or 10**6}
    if claim.labels is not None:
        overrides["labels"] = claim.labels
    if args.data_dir:
        overrides["data_dir"] = args.data_dir
    overrides.update(claim.overrides)
    extra = dict(args.config)
    for key in ("model", "backend", "device", "seed", "max_minutes"):
        if key in extra:
            raise UserError(f"--config {key}=... is set by reproduce",
                            f"use --{key.replace('_', '-')} or the claim's own setting")
    overrides.update(extra)
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads and threads.isdigit():
        overrides["threads"] = int(threads)
    return resolve(spec, overrides, dict(args.set))


def train_run(config: Any, run_dir: Path, progress: bool) -> dict[str, Any]:
    """Train (or continue) one run up to its budget; returns its summary."""
    from ppl_dgm.backends import trainer_class

    summary_path = run_dir / results.SUMMARY
    exists = (run_dir / results.CONFIG).is_file()
    if exists and summary_path.is_file():
        done = results.read_json(summary_path)
        budget = 60 * (config.max_minutes or math.inf)
        if (done.get("train_seconds", 0.0) >= budget or done.get("epochs", 0) >= config.epochs
                or done.get("status") == "diverged"):
            return done  # nothing left to train for this budget
    trainer = trainer_class(config.backend)(config, run_dir, progress=progress)
    return trainer.fit(resume=exists)


def log_likelihood(run_dir: Path, summary: dict[str, Any], iw_samples: int, device: str,
                   subset: int | None = None, bn_stats: str = "running"
                   ) -> tuple[float | None, str]:
    """The run's test log-likelihood (IWAE, ``iw_samples``, on the first ``subset`` test points or
    all of them; batch-norm statistics ``bn_stats``: the running averages, or a pass over the
    training set) or, with no samples, its test ELBO. An earlier evaluation of the same epoch,
    samples, points and statistics (``evaluation.json``) is reused."""
    if iw_samples > 0:
        n_test = summary.get("n_test")
        points = min(subset, n_test) if subset and n_test else (subset or n_test)
        label = (f"log-likelihood ({iw_samples} samples"
                 + (f", first {points} test points" if subset else "")
                 + (", batch-norm statistics from the training set" if bn_stats == "train" else "")
                 + ")")
        evaluation_path = run_dir / results.EVALUATION
        if evaluation_path.is_file():
            saved = results.read_json(evaluation_path)
            if (saved.get("iw_samples") == iw_samples and saved.get("epochs") == summary.get("epochs")
                    and saved.get("n_test_evaluated") == points
                    and saved.get("bn_stats", "running") == bn_stats
                    and saved.get("test_log_likelihood") is not None):
                return saved["test_log_likelihood"], label
        from ppl_dgm.evaluate import evaluate_run

        record = evaluate_run(run_dir, iw_samples=iw_samples, subset=subset, device=device,
                              progress=False, bn_stats=bn_stats)
        return record.get("test_log_likelihood"), label
    return summary.get("test_elbo"), "test ELBO (a lower bound on the log-likelihood)"


def spread(values: list[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (None for one value), min and max."""
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if len(arr) == 0:
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None}
    return {"n": int(len(arr)), "mean": float(arr.mean()),
            "std": float(arr.std(ddof=1)) if len(arr) > 1 else None,
            "min": float(arr.min()), "max": float(arr.max())}


def curve(run_dir: Path, metric: str, name: str | None = None) -> tuple[list[float], list[float]]:
    """The evaluated records of a run's history: (optimiser steps, test error) for a test-error
    claim (epochs for records without steps), or (epochs, validation ELBO); ``name`` picks another
    recorded figure, by steps. Records without an evaluation (``--eval-every``) are left out."""
    path = run_dir / results.HISTORY
    if not path.is_file():
        return [], []
    history = results.read_history(path)
    name = name or ("test_error" if metric == "test_error" else "validation_elbo")
    if name not in history:
        return [], []
    by_steps = "step" in history and (metric == "test_error" or name != "validation_elbo")
    x = history["step"].values if by_steps else history["epoch"].values
    y = history[name].values
    keep = np.isfinite(y)
    return [float(v) for v in x[keep]], [float(v) for v in y[keep]]


def auxiliary_figures(run_dir: Path) -> dict[str, float]:
    """I(y; a | x) and the standard deviation of q(a|x) at a run's last evaluation (empty for a
    pair without an auxiliary a, or a history recorded before these diagnostics)."""
    out = {}
    for name in ("mutual_info_y_a", "a_std"):
        steps, values = curve(run_dir, "test_error", name)
        if values:
            out[name], out["steps"] = values[-1], steps[-1]
    return out


# ------------------------------------------------------------------------------------ report
def command_line(args: SimpleNamespace) -> str:
    """The exact command of this call, spelled out with every option that was given."""
    words = ["ppl-dgm", "reproduce", args.claim, "--minutes", f"{args.minutes:g}",
             "--device", args.device, "--backend", args.backend, "--out", str(args.out),
             "--seeds", *[str(s) for s in args.seeds]]
    if args.models:
        words += ["--models", *args.models]
    if args.iw_samples is not None:
        words += ["--iw-samples", str(args.iw_samples)]
    if args.iw_subset is not None:
        words += ["--iw-subset", str(args.iw_subset)]
    if args.bn_stats != "running":
        words += ["--bn-stats", args.bn_stats]
    if args.dataset:
        words += ["--dataset", args.dataset]
    if args.data_dir:
        words += ["--data-dir", str(args.data_dir)]
    for item in _items(args.set):
        words += ["--set", item]
    for item in _items(args.config):
        words += ["--config", item]
    return shlex.join(words)


def deviations(claim: Claim, args: SimpleNamespace) -> list[str]:
    out = []
    if args.dataset and args.dataset != claim.dataset:
        out.append(f"data set {args.dataset} instead of {claim.dataset}")
    out += [f"--set {item}" for item in _items(args.set)]
    out += [f"--config {item}" for item in _items(args.config)]
    if args.models and tuple(args.models) != claim.models:
        out.append(f"models {', '.join(args.models)} only")
    return out


def format_figure(value: float | None, metric: str) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.2f}%" if metric == "test_error" else f"{value:.2f}"


def reference_curve(claim: Claim) -> Any:
    """The authors' curve a claim is set beside (:mod:`ppl_dgm.reference`), or ``None``."""
    if claim.reference is None:
        return None
    from ppl_dgm import reference

    return getattr(reference, claim.reference)()


def run_milestones(claim: Claim, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each run of a claim with an authors' curve: each milestone the run passed, with its
    test error (100 samples of a where recorded) and the authors' (fractions)."""
    authors = reference_curve(claim)
    if authors is None:
        return []
    from ppl_dgm import reference

    out = []
    for run in runs:
        history_path = Path(run["run_dir"]) / results.HISTORY
        if not history_path.is_file():
            continue
        history = results.read_history(history_path)
        if "step" not in history:
            continue
        name = "test_error_a100" if "test_error_a100" in history else "test_error"
        for mark in reference.milestones(authors, history["step"].values, history[name].values,
                                         reference.MILESTONES):
            out.append({"model": run["model"], "seed": run["seed"], **mark,
                        "figure": "test error, 100 samples of a" if name != "test_error"
                        else "test error"})
    return out


def write_report(out: Path, claim: Claim, report: dict[str, Any]) -> None:
    """``report.json``, ``report.md``, ``learning_curves.png`` (and ``auxiliary.png``) in ``out``."""
    from ppl_dgm.plots import plot_learning_curves

    metric = claim.metric
    name = None
    if metric == "test_error" and any(curve(Path(r["run_dir"]), metric, "test_error_a100")[0]
                                      for r in report["runs"]):
        name = "test_error_a100"
    curves = {f"{r['model']} seed {r['seed']}": curve(Path(r["run_dir"]), metric, name)
              for r in report["runs"]}
    paper_lines = {m: PAPER[m][0] for m in report["models"] if m in PAPER}
    by_steps = metric == "test_error"
    ylabel = ((f"test error{' (100 samples of a)' if name else ''}") if by_steps
              else "validation ELBO, nats (paper: test log-likelihood)")
    authors = reference_curve(claim)
    extra = {}
    if authors is not None:
        logged = np.isfinite(authors.test_error_a100)
        extra = {"authors, 1 sample of a": (authors.steps, authors.test_error_a1),
                 "authors, 100 samples of a": (authors.steps[logged],
                                               authors.test_error_a100[logged])}
        runs_steps = [max(c[0]) for c in curves.values() if c[0]]
        if runs_steps:  # the authors' curve up to a little past the runs
            limit = 1.5 * max(runs_steps)
            extra = {k: (x[x <= limit], y[x <= limit]) for k, (x, y) in extra.items()}
    plot_learning_curves(curves, out / CURVES, ylabel=ylabel, reference=paper_lines,
                         title=f"{claim.name}: {claim.summary}",
                         xlabel="optimiser steps" if by_steps else "epoch", other_curves=extra)
    auxiliary = {}
    for r in report["runs"]:
        for figure in ("mutual_info_y_a", "a_std"):
            steps, values = curve(Path(r["run_dir"]), metric, figure)
            if values:
                auxiliary.setdefault(figure, {})[f"{r['model']} seed {r['seed']}"] = (steps, values)
    if auxiliary:
        from ppl_dgm.plots import plot_auxiliary

        plot_auxiliary(auxiliary, out / AUXILIARY, title=f"{claim.name}: the auxiliary variable a")
    results.write_json(out / REPORT_JSON, report)
    lines = [f"# ppl-dgm reproduce {claim.name}", "", f"Claim: {claim.summary}.", "",
             f"Setting: data set {report['dataset']}, "
             + (f"{claim.labels} labels, " if claim.labels else "")
             + f"{report['minutes']:g} minutes of training per run, device {report['device']}, "
               f"seeds {', '.join(str(s) for s in report['seeds'])}.", ""]
    if report["deviations"]:
        lines += ["**Not the paper's setting**: " + "; ".join(report["deviations"]) + ".", ""]
    lines += [f"Figure: {report['figure']}.", "",
              "| model | backend | runs | epochs | wall minutes | final (each seed) | mean | std | "
              "paper | gap to paper |", "|---|---|---|---|---|---|---|---|---|---|"]
    for model, row in report["results"].items():
        each = ", ".join(format_figure(v, metric) for v in row["values"])
        std = row["spread"]["std"]
        std_text = "-" if std is None else (f"{100 * std:.2f}%" if metric == "test_error"
                                            else f"{std:.2f}")
        gap = row["gap_to_paper"]
        gap_text = "-" if gap is None else (f"{100 * gap:+.2f} points" if metric == "test_error"
                                            else f"{gap:+.2f} nats")
        lines.append(f"| {model} | {row['backend']} | {row['spread']['n']} | "
                     f"{', '.join(str(e) for e in row['epochs'])} | "
                     f"{', '.join(f'{m:.2f}' for m in row['minutes'])} | {each} | "
                     f"{format_figure(row['spread']['mean'], metric)} | {std_text} | "
                     f"{format_figure(row['paper'], metric)} | {gap_text} |")
    aux_rows = [(model, row["auxiliary"]) for model, row in report["results"].items()
                if any(row.get("auxiliary", []))]
    if aux_rows:
        lines += ["", "The auxiliary variable at the last evaluation: I(y; a | x), the information "
                  "q(y|a,x) takes from a (0: a ignored; at most log 10 = 2.30 nats), and the mean "
                  "standard deviation of q(a|x): "
                  + "; ".join(f"{m}: " + ", ".join(
                      f"{a['mutual_info_y_a']:.3f} nats / std {a['a_std']:.3f} (step "
                      f"{a['steps']:.0f})" for a in auxs if a) for m, auxs in aux_rows)
                  + f" ([{AUXILIARY}]({AUXILIARY}))."]
    if report.get("milestones"):
        lines += ["", "Against the authors' own learning curve, at equal optimiser steps "
                  f"({reference_curve(claim).source}):", "",
                  "| model | seed | steps | this run | authors | gap |", "|---|---|---|---|---|---|"]
        for m in report["milestones"]:
            at = "" if m["run_steps"] == m["steps"] else f" (at step {m['run_steps']})"
            authors = "-" if m["authors_test_error"] is None else f"{100 * m['authors_test_error']:.2f}%"
            gap = "-" if m["gap"] is None else f"{100 * m['gap']:+.2f} points"
            lines.append(f"| {m['model']} | {m['seed']} | {m['steps']} | "
                         f"{100 * m['test_error']:.2f}%{at} | {authors} | {gap} |")
    if report.get("ordering") is not None:
        order = report["ordering"]
        lines += ["", f"Paper's ordering ({' better than '.join(order['expected'])}): "
                  f"{'shows' if order['holds'] else 'does not show'} in these runs."]
    lines += ["", "Paper's figures (reported by the papers, not measured here):"]
    lines += [f"- {m}: {format_figure(PAPER[m][0], metric)}"
              + (f" ± {format_figure(PAPER[m][1], metric)}" if PAPER[m][1] else "") + f" — {PAPER[m][2]}"
              for m in report["models"] if m in PAPER]
    lines += ["", f"Learning curves: [{CURVES}]({CURVES}) (the paper's number as a dashed line).",
              "", "Commands (each call continues the same runs):", ""]
    lines += [f"    {c['command']}    # {c['time']}" for c in report["commands"]]
    lines += ["", f"Environment: {report['environment']}", ""]
    results.atomic_write(out / REPORT_MD, lambda tmp: Path(tmp).write_text("\n".join(lines)))


def reproduce(claim: str, minutes: float, *, device: str = "auto", backend: str = "auto",
              out: str | os.PathLike | None = None, seeds: Sequence[int] = (0,),
              models: Sequence[str] | None = None, iw_samples: int | None = None,
              iw_subset: int | None = None, bn_stats: str = "running",
              dataset: str | None = None, data_dir: str | None = None,
              hparams: dict[str, Any] | None = None, config: dict[str, Any] | None = None,
              progress: bool = True) -> dict[str, Any]:
    """Train or continue every run of ``claim`` (:data:`CLAIMS`) for ``minutes`` of training time
    each, then write the report (``report.md``, ``report.json``, curves) to ``out`` (default
    ``runs/reproduce/CLAIM``); returns ``report.json``'s content.

    ``device``: auto, cpu, cuda or cuda:N; ``backend``: auto (the faster one measured on this
    kind of device), pyro or numpyro; ``seeds``: of the labelled subset and the runs; ``models``:
    a subset of the claim's; ``iw_samples``: importance samples of the log-likelihood claims
    (default 5000 on a GPU, 0 on a CPU: the test ELBO); ``iw_subset``: the first N test points
    only; ``bn_stats``: the batch-norm statistics of that evaluation, ``running`` (the running
    averages) or ``train`` (one pass over the training set, the LVAE authors' evaluation).
    ``dataset``, ``data_dir``, ``hparams`` (network hyperparameters) and ``config`` (training
    options, e.g. ``{"steps_per_epoch": 10}``; ``epochs`` may grow on a later call) change the
    paper's setting: the report lists them as deviations. Calling it again with the
    same ``out`` and larger ``minutes`` continues the runs.
    """
    args = SimpleNamespace(
        claim=claim, minutes=minutes, device=device, backend=backend, out=out,
        seeds=list(seeds), models=list(models) if models else None, iw_samples=iw_samples,
        iw_subset=iw_subset, bn_stats=bn_stats, dataset=dataset, data_dir=data_dir,
        no_progress=not progress,
        set=dict(hparams or {}), config=dict(config or {}))
    if backend not in ("auto", "pyro", "numpyro"):
        raise UserError(f"unknown backend {backend!r}", "use auto, pyro or numpyro")
    if not args.seeds:
        raise UserError("reproduce needs at least one seed", "e.g. seeds=[0]")
    if args.claim not in CLAIMS:
        raise UserError(f"unknown claim {args.claim!r}", f"choose one of {list(CLAIMS)}")
    claim = CLAIMS[args.claim]
    models = claim_models(claim)
    if args.models:
        unknown = [m for m in args.models if m not in models]
        if unknown:
            raise UserError(f"the claim {claim.name} has no model {unknown}", f"use {list(models)}")
        models = tuple(args.models)
    if not (isinstance(args.minutes, float | int) and math.isfinite(args.minutes)
            and args.minutes > 0):
        raise UserError(f"--minutes must be a positive number (got {args.minutes!r})", "e.g. 60")
    if args.iw_samples is not None and args.iw_samples < 0:
        raise UserError(f"--iw-samples must be >= 0 (got {args.iw_samples})",
                        "e.g. 5000, or 0 for the test ELBO")
    if args.iw_subset is not None and args.iw_subset < 1:
        raise UserError(f"--iw-subset must be a positive number of test points (got "
                        f"{args.iw_subset})", "e.g. 500, or omit it for the whole test set")
    if args.bn_stats not in ("running", "train"):
        raise UserError(f"unknown bn_stats {args.bn_stats!r}", "use running or train")
    if len(set(args.seeds)) != len(args.seeds) or min(args.seeds) < 0:
        raise UserError(f"--seeds must be distinct numbers >= 0 (got {args.seeds})", "e.g. 0 1 2")
    device = choose_device(args.device)
    out = Path(args.out or Path("runs") / "reproduce" / claim.name)
    # every run's configuration checked before anything is written (a bad --config or --set
    # leaves no empty report folder behind)
    backends = {model: choose_backend(args.backend, device, model) for model in models}
    configs = {(model, seed): run_config(claim, model, backends[model], device, seed, args.minutes,
                                         args)
               for model in models for seed in args.seeds}
    out.mkdir(parents=True, exist_ok=True)
    from ppl_dgm.threads import apply_threads, default_threads

    apply_threads(default_threads())  # before the trainers import torch or JAX
    previous = results.read_json(out / REPORT_JSON) if (out / REPORT_JSON).is_file() else {}
    commands = list(previous.get("commands", []))
    commands.append({"command": command_line(args), "time": time.strftime("%Y-%m-%d %H:%M:%S"),
                     "minutes": args.minutes})
    iw = args.iw_samples if args.iw_samples is not None else (5000 if device.startswith("cuda")
                                                             else 0)
    runs, rows = [], {}
    figure = "test error" if claim.metric == "test_error" else ""
    for model in models:
        backend = backends[model]
        row: dict[str, Any] = {"backend": backend, "values": [], "epochs": [], "steps": [],
                               "minutes": [], "run_dirs": [], "auxiliary": []}
        for seed in args.seeds:
            config = configs[(model, seed)]
            run_dir = out / RUNS / f"{model}-{backend}-seed{seed}"
            summary = train_run(config, run_dir, progress=not args.no_progress)
            if claim.metric == "test_error":
                value = summary.get("test_error")
            else:
                value, figure = log_likelihood(run_dir, summary, iw, device, args.iw_subset,
                                               args.bn_stats)
            row["auxiliary"].append(auxiliary_figures(run_dir))
            row["values"].append(value)
            row["epochs"].append(summary.get("epochs"))
            row["steps"].append(summary.get("steps"))
            row["minutes"].append(summary.get("train_seconds", 0.0) / 60)
            row["run_dirs"].append(str(run_dir))
            runs.append({"model": model, "seed": seed, "backend": backend, "run_dir": str(run_dir),
                         "value": value, "epochs": summary.get("epochs"),
                         "status": summary.get("status", "finished")})
        row["spread"] = spread(row["values"])
        paper = PAPER.get(model)
        row["paper"] = paper[0] if paper else None
        row["paper_spread"] = paper[1] if paper else None
        row["source"] = paper[2] if paper else None
        mean = row["spread"]["mean"]
        row["gap_to_paper"] = None if paper is None or mean is None else mean - paper[0]
        rows[model] = row
    ordering = None
    expected = [m for m in claim.order if m in rows]
    if len(expected) > 1 and all(rows[m]["spread"]["mean"] is not None for m in expected):
        means = [rows[m]["spread"]["mean"] for m in expected]
        better = (lambda a, b: a < b) if claim.metric == "test_error" else (lambda a, b: a > b)
        ordering = {"expected": expected, "means": means,
                    "holds": all(better(a, b) for a, b in zip(means, means[1:], strict=False))}
    report = {
        "claim": claim.name, "summary": claim.summary, "metric": claim.metric, "figure": figure,
        "dataset": args.dataset or claim.dataset, "labels": claim.labels, "device": device,
        "minutes": args.minutes, "seeds": list(args.seeds), "models": list(models),
        "deviations": deviations(claim, args), "results": rows, "runs": runs,
        "ordering": ordering, "commands": commands, "milestones": run_milestones(claim, runs),
        "paper": {m: {"value": PAPER[m][0], "spread": PAPER[m][1], "source": PAPER[m][2]}
                  for m in models if m in PAPER},
        "environment": {k: v for k, v in results.environment(device).items()},
    }
    write_report(out, claim, report)
    return report


def _items(values: dict[str, Any]) -> list[str]:
    """``{"z_dim": 32}`` -> ``["z_dim=32"]``: the ``KEY=VALUE`` words of a recorded command."""
    return [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in values.items()]
