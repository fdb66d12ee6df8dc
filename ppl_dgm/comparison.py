"""``ppl-dgm compare``: several inference algorithms on one model, as one reproducible result.

An *arm* is a (model, objective, backend) triple (``m2/trace_enum/pyro``, ``vae/iwae:5/numpyro``);
every arm is trained for every seed on the same data, labelled draw and budget (``epochs`` or
wall-time ``minutes`` per arm), each as an ordinary run directory
``OUT/runs/<arm>/seed<k>`` (``config.json``, ``checkpoint``, ``history.nc``, ``summary.json``), plus

- ``gradients.json``: the gradient diagnostics at initialisation and at the end of training
  (``ppl_dgm.infer.gradients`` / ``numpyro_gradients``: over ``grad_draws`` draws of the objective
  at fixed parameters and a fixed batch, the signal-to-noise ratio |E g| / sd(g) of the guide's
  (``q``) and the model's (``p``) gradient elements, summarised by mean and median, and the variance
  of the loss estimate);
- ``evaluation.json``: the importance-weighted log-likelihood with ``iw_samples`` particles on the
  first ``iw_subset`` test points (``ppl-dgm evaluate``), and the test error.

Then the folder ``OUT`` receives ``comparison.nc`` (an xarray Dataset with dimensions ``arm``,
``seed`` and ``epoch``), ``comparison.csv`` and ``comparison.md`` (per arm, mean and spread over
seeds) and ``comparison.png`` (the curves against wall time, one line per arm, a band over seeds).
Every arm is checked (its trainer is built, which refuses an objective that cannot train the pair)
before the first one trains. Re-running on the same ``OUT`` skips finished runs and resumes
interrupted ones; ``report_only`` rebuilds the four files from the runs already there.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ppl_dgm import registry, results
from ppl_dgm.backends import trainer_class
from ppl_dgm.errors import UserError
from ppl_dgm.infer.objective_names import Objective, parse

ARM_FILE = "arm.json"
GRADIENTS = "gradients.json"
FILES = ("comparison.nc", "comparison.csv", "comparison.md", "comparison.png")
#: Per-epoch curves gathered from each run's history.
CURVES = ("loss", "validation_elbo", "validation_error", "test_error_by_epoch", "wall_seconds",
          "cpu_seconds")
#: Per-run numbers (the table's columns).
SCALARS = ("test_elbo", "test_log_likelihood", "test_error", "ms_per_step", "cpu_ms_per_step",
           "steps", "epochs",
           "train_seconds", "snr_q_median_init", "snr_q_median_end", "snr_p_median_init",
           "snr_p_median_end", "snr_q_mean_init", "snr_q_mean_end", "snr_p_mean_init",
           "snr_p_mean_end", "loss_var_init", "loss_var_end")
TABLE = ("test_elbo", "test_log_likelihood", "test_error", "ms_per_step", "cpu_ms_per_step",
         "snr_q_median_init",
         "snr_q_median_end", "snr_p_median_init", "snr_p_median_end", "loss_var_init",
         "loss_var_end")


@dataclass(frozen=True)
class Arm:
    """A model, an objective and a backend."""

    model: str
    objective: Objective
    backend: str = "pyro"

    @property
    def label(self) -> str:
        return f"{self.model}/{self.objective.label}/{self.backend}"

    @property
    def folder(self) -> str:
        return self.label.replace("/", "__").replace(":", "-")

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "model": self.model, "objective": self.objective.label,
                "backend": self.backend}


def make_arms(models: Sequence[str], objectives: Sequence[str],
              backends: Sequence[str] = ("pyro",)) -> list[Arm]:
    """Every (model, objective, backend) combination, in that order; names are checked."""
    if not models or not objectives or not backends:
        raise UserError("compare needs at least one model, one objective and one backend",
                        "e.g. ppl-dgm compare m2 --objectives trace_enum,trace")
    arms = []
    for backend in backends:
        if backend not in ("pyro", "numpyro"):
            raise UserError(f"unknown backend {backend!r}", "use pyro and/or numpyro")
    for model in models:
        for name in objectives:
            objective = parse(name)
            for backend in backends:
                registry.get(model, backend)  # KeyError names the registered models
                arms.append(Arm(model, objective, backend))
    labels = [a.label for a in arms]
    if len(set(labels)) != len(labels):
        raise UserError(f"an arm is given twice: {labels}", "name each objective once")
    return arms


def arm_config(arm: Arm, seed: int, *, epochs: int | None, minutes: float | None,
               options: dict[str, Any] | None = None,
               hparams: dict[str, Any] | None = None) -> Any:
    """The arm's ``TrainConfig`` for ``seed``: the model's defaults, then ``options`` (training
    options shared by every arm), then the objective (its alpha and particles), seed and budget."""
    from ppl_dgm.config import resolve

    spec = registry.get(arm.model, arm.backend)
    overrides = dict(options or {})
    overrides.update(seed=seed, elbo=arm.objective.elbo, backend=arm.backend)
    if arm.objective.renyi_alpha is not None:
        overrides["renyi_alpha"] = arm.objective.renyi_alpha
    if arm.objective.num_particles is not None:
        overrides["num_particles"] = arm.objective.num_particles
    if minutes is not None:
        overrides["max_minutes"] = minutes
        overrides["epochs"] = epochs if epochs is not None else 1_000_000
    else:
        overrides["epochs"] = epochs
    return resolve(spec, overrides, hparams or {})


def _diagnose(trainer: Any, backend: str, draws: int) -> dict[str, Any]:
    if backend == "numpyro":
        from ppl_dgm.infer.numpyro_gradients import diagnose
    else:
        from ppl_dgm.infer.gradients import diagnose
    started = time.perf_counter()
    record = diagnose(trainer, draws)
    record["seconds"] = time.perf_counter() - started
    record["step"] = trainer.step
    return record


def _checkpoint_name(backend: str) -> str:
    return "checkpoint.pkl" if backend == "numpyro" else results.CHECKPOINT


def _finished(run_dir: Path, iw_samples: int, grad_draws: int) -> bool:
    if not (run_dir / results.SUMMARY).is_file():
        return False
    if grad_draws and "end" not in _read(run_dir / GRADIENTS):
        return False
    return not iw_samples or (run_dir / results.EVALUATION).is_file()


def _read(path: Path) -> dict[str, Any]:
    return results.read_json(path) if path.is_file() else {}


def _say(message: str) -> None:
    """A progress line of ``compare`` on stderr (also under ``--no-progress``, which hides the bars
    only): standard output keeps the report."""
    print(f"compare: {message}", file=sys.stderr, flush=True)


def run_arm(arm: Arm, config: Any, run_dir: Path, *, grad_draws: int, iw_samples: int,
            iw_subset: int | None, progress: bool, say: Any = _say) -> float:
    """Train one arm for one seed in ``run_dir`` (resuming or skipping what is done), then its
    gradient diagnostics and its evaluation, each announced by ``say`` with the time it took.
    Returns the seconds spent outside training (diagnostics and evaluation: outside the budget)."""
    if _finished(run_dir, iw_samples, grad_draws):
        return 0.0
    where = f"{arm.label} seed{config.seed}"
    extra = 0.0
    run_dir.mkdir(parents=True, exist_ok=True)
    results.write_json(run_dir / ARM_FILE, arm.to_dict())
    trainer = trainer_class(arm.backend)(config, run_dir, progress=progress)
    grads = _read(run_dir / GRADIENTS)
    done = (run_dir / results.SUMMARY).is_file()
    resume = (run_dir / _checkpoint_name(arm.backend)).is_file()
    for when in ("init", "end"):
        if when == "end":
            if done:
                trainer.load_checkpoint()
            else:
                say(f"{where}: training ({'resumed' if resume else 'from the start'})")
                started = time.perf_counter()
                trainer.fit(resume=resume)
                say(f"{where}: trained in {time.perf_counter() - started:.0f} s")
        if grad_draws and when not in grads and (when == "end" or not resume):
            say(f"{where}: gradient diagnostics at {'initialisation' if when == 'init' else 'the end'}"
                f" ({grad_draws} draws; outside the training budget)")
            started = time.perf_counter()
            grads[when] = _diagnose(trainer, arm.backend, grad_draws)
            results.write_json(run_dir / GRADIENTS, grads)
            extra += time.perf_counter() - started
            say(f"{where}: gradient diagnostics done in {time.perf_counter() - started:.0f} s")
    del trainer
    if iw_samples and not (run_dir / results.EVALUATION).is_file():
        from ppl_dgm.evaluate import evaluate_run

        task = registry.get(arm.model, arm.backend).task
        if task != "supervised":
            points = f"the first {iw_subset}" if iw_subset else "all the"
            say(f"{where}: IW-{iw_samples} log-likelihood of {points} test points (outside the "
                "training budget)")
            started = time.perf_counter()
            evaluate_run(run_dir, iw_samples=iw_samples, subset=iw_subset,
                         chunk_size=min(iw_samples, 500), device=config.device, seed=0,
                         progress=progress)
            extra += time.perf_counter() - started
            say(f"{where}: evaluated in {time.perf_counter() - started:.0f} s")
    return extra


def compare(models: Sequence[str] = (), objectives: Sequence[str] = (), *,
            backends: Sequence[str] = ("pyro",), seeds: Sequence[int] | None = None,
            epochs: int | None = None, minutes: float | None = None, out: str | Path = "compare",
            options: dict[str, Any] | None = None, hparams: dict[str, Any] | None = None,
            iw_samples: int = 1000, iw_subset: int | None = 1000, grad_draws: int = 50,
            progress: bool = False, report_only: bool = False, **train_options: Any) -> xr.Dataset:
    """Run every arm for every seed (see the module docstring); returns the comparison Dataset.

    ``train_options`` (or the mapping ``options``): training options for every arm, those of
    :func:`ppl_dgm.train` (``dataset``, ``labels``, ``batch_size``...) but the ones an arm sets
    itself (``seed``, ``elbo``, ``backend``, ``epochs``, ``max_minutes``, ``renyi_alpha``);
    ``hparams``: network hyperparameters (``--set``). ``epochs`` and/or
    ``minutes`` is each arm's budget (with ``minutes`` alone, epochs are unbounded and training
    stops after the epoch that passes the time). ``iw_samples = 0`` skips the log-likelihood,
    ``grad_draws = 0`` the gradient diagnostics. ``seeds``: default 0 (with ``report_only``: every
    seed found). ``report_only``: no training, rebuild the files from the runs in ``out``
    (``models``/``objectives``/``seeds`` then optional filters).
    """
    from ppl_dgm.config import OPTIONS

    options = {**(options or {}), **train_options}
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise UserError(f"compare got unknown options {unknown}",
                        "the options are those of 'ppl-dgm train --help'")
    per_arm = sorted(set(options) & {"seed", "elbo", "backend", "epochs", "max_minutes",
                                     "renyi_alpha"})
    if per_arm:
        raise UserError(f"compare sets {per_arm} per arm",
                        "use seeds=, objectives=, backends=, epochs= or minutes=")
    out = Path(out)
    if report_only:
        arms = None
        if models and objectives:
            arms = make_arms(models, objectives, backends)
        return write_report(out, arms, seeds if seeds else None)
    if epochs is None and minutes is None:
        raise UserError("compare needs a budget per arm", "pass --epochs E or --minutes M")
    if minutes is not None and not (minutes > 0 and math.isfinite(minutes)):
        raise UserError(f"--minutes must be positive (got {minutes})")
    if epochs is not None and epochs < 1:
        raise UserError(f"--epochs must be >= 1 (got {epochs})")
    if grad_draws < 0 or grad_draws == 1:
        raise UserError(f"--grad-draws must be 0 (off) or >= 2 (got {grad_draws})")
    if iw_samples < 0:
        raise UserError(f"--iw-samples must be >= 0 (got {iw_samples})")
    if iw_subset is not None and iw_subset < 1:
        raise UserError(f"--iw-subset must be >= 1 (got {iw_subset})")
    seeds = [0] if seeds is None else list(seeds)
    if not seeds or len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
        raise UserError(f"--seeds must be distinct integers >= 0 (got {seeds})")
    arms = make_arms(models, objectives, backends)
    configs = {(arm, seed): arm_config(arm, seed, epochs=epochs, minutes=minutes,
                                       options=options, hparams=hparams)
               for arm in arms for seed in seeds}
    # every arm checked before the first trains: building a trainer refuses what cannot work
    for arm in arms:
        run_dir = out / "runs" / arm.folder / f"seed{seeds[0]}"
        if not _finished(run_dir, iw_samples, grad_draws):
            trainer = trainer_class(arm.backend)(configs[(arm, seeds[0])], run_dir,
                                                  progress=False)
            del trainer
    results.write_json(out / "compare.json", {
        "arms": [a.to_dict() for a in arms], "seeds": seeds, "epochs": epochs,
        "minutes": minutes, "options": options or {}, "hparams": hparams or {},
        "iw_samples": iw_samples, "iw_subset": iw_subset, "grad_draws": grad_draws})
    todo = [(seed, arm) for seed in seeds for arm in arms  # seed-major: an interrupted comparison
            if not _finished(out / "runs" / arm.folder / f"seed{seed}", iw_samples, grad_draws)]
    budget = f"{epochs} epochs" if epochs is not None else f"{minutes:g} minutes"
    after = [f"{grad_draws} gradient draws at initialisation and at the end"] if grad_draws else []
    if iw_samples:
        after.append(f"an IW-{iw_samples} log-likelihood of "
                     + (f"{iw_subset} test points" if iw_subset else "the test set"))
    _say(f"{len(todo)} of {len(arms) * len(seeds)} runs to do ({len(arms)} arms x {len(seeds)} "
         f"seeds), each trained for {budget}"
         + (f", then {' and '.join(after)}: outside the budget; the first run's time gives an "
            "estimate" if after else ""))
    extra: list[float] = []
    for i, (seed, arm) in enumerate(todo):  # has every arm for the first seeds
        extra.append(run_arm(arm, configs[(arm, seed)], out / "runs" / arm.folder / f"seed{seed}",
                             grad_draws=grad_draws, iw_samples=iw_samples, iw_subset=iw_subset,
                             progress=progress))
        left = len(todo) - i - 1
        if i == 0 and left and extra[0] > 0:
            _say(f"diagnostics and evaluation took {extra[0]:.0f} s for the first run: about "
                 f"{extra[0] * left / 60:.1f} min more for the {left} other(s), beside training")
    return write_report(out, arms, seeds)


# ------------------------------------------------------------------------------------ the report
def _run_record(run_dir: Path) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    summary = _read(run_dir / results.SUMMARY)
    evaluation = _read(run_dir / results.EVALUATION)
    grads = _read(run_dir / GRADIENTS)
    scalars: dict[str, float] = {k: np.nan for k in SCALARS}
    for key in ("test_elbo", "test_error", "steps", "epochs", "train_seconds"):
        if summary.get(key) is not None:
            scalars[key] = float(summary[key])
    if evaluation.get("test_log_likelihood") is not None:
        scalars["test_log_likelihood"] = float(evaluation["test_log_likelihood"])
    if summary.get("steps"):
        scalars["ms_per_step"] = 1000.0 * summary["train_seconds"] / summary["steps"]
    for when in ("init", "end"):
        for stat in ("snr_q_median", "snr_q_mean", "snr_p_median", "snr_p_mean", "loss_var"):
            value = grads.get(when, {}).get(stat)
            if value is not None:
                scalars[f"{stat}_{when}"] = float(value)
    curves: dict[str, np.ndarray] = {}
    if (run_dir / results.HISTORY).is_file():
        history = results.read_history(run_dir / results.HISTORY)
        for key in CURVES[:-2]:
            name = key.removesuffix("_by_epoch")
            if name in history:
                curves[key] = np.asarray(history[name].values, dtype=float)
        if "seconds" in history:
            curves["wall_seconds"] = np.cumsum(np.asarray(history["seconds"].values, float))
        if "cpu_seconds" in history:  # the process's CPU time (fair when other jobs share the cores)
            curves["cpu_seconds"] = np.cumsum(np.asarray(history["cpu_seconds"].values, float))
            if summary.get("steps"):
                scalars["cpu_ms_per_step"] = 1000.0 * curves["cpu_seconds"][-1] / summary["steps"]
        # steady state: without the first epoch, whose steps carry the one-off costs (tracing,
        # compilation, caches warming): it read 996 ms/step for Pyro trace_enum where later steps
        # take 176. A run of one epoch keeps the mean over all its steps.
        for key, clock in (("ms_per_step", "seconds"), ("cpu_ms_per_step", "cpu_seconds")):
            steady = steady_ms_per_step(history, clock)
            if steady is not None:
                scalars[key] = steady
    return scalars, curves


def steady_ms_per_step(history: xr.Dataset, clock: str = "seconds") -> float | None:
    """Milliseconds per optimiser step after the first epoch record: the ``clock`` seconds of the
    later records over the steps they took (``step`` is cumulative); None with fewer than two
    records or no step counts."""
    if clock not in history or "step" not in history or history.sizes.get("epoch", 0) < 2:
        return None
    seconds = np.asarray(history[clock].values, float)
    steps = np.asarray(history["step"].values, float)
    taken = steps[-1] - steps[0]
    if not taken > 0 or not np.isfinite(seconds[1:]).all():
        return None
    return float(1000.0 * seconds[1:].sum() / taken)


def _discover(out: Path) -> list[tuple[dict[str, Any], int, Path]]:
    found = []
    for arm_dir in sorted((out / "runs").glob("*")):
        for run_dir in sorted(arm_dir.glob("seed*")):
            meta = _read(run_dir / ARM_FILE)
            if meta and run_dir.name[4:].isdigit():
                found.append((meta, int(run_dir.name[4:]), run_dir))
    return found


def collect(out: str | Path, arms: Iterable[Arm] | None = None,
            seeds: Iterable[int] | None = None) -> xr.Dataset:
    """The comparison Dataset of the runs under ``out/runs`` (all of them, or ``arms`` x
    ``seeds``): per-epoch curves (arm, seed, epoch) and per-run numbers (arm, seed)."""
    out = Path(out)
    found = _discover(out)
    if arms is not None:
        wanted = [a.label for a in arms]
        found = [f for f in found if f[0]["label"] in wanted]
        order = {label: i for i, label in enumerate(wanted)}
        found.sort(key=lambda f: (order[f[0]["label"]], f[1]))
    if seeds is not None:
        found = [f for f in found if f[1] in set(seeds)]
    if not found:
        raise UserError(f"{out} holds no compare runs (runs/<arm>/seed<k>/{ARM_FILE})",
                        "run ppl-dgm compare with --out pointing at it first")
    labels = list(dict.fromkeys(f[0]["label"] for f in found))
    seed_list = sorted({f[1] for f in found})
    meta = {f[0]["label"]: f[0] for f in found}
    records = {(f[0]["label"], f[1]): _run_record(f[2]) for f in found}
    n_epochs = max([len(c.get("wall_seconds", [])) for _, c in records.values()] + [1])
    shape2, shape3 = (len(labels), len(seed_list)), (len(labels), len(seed_list), n_epochs)
    data: dict[str, Any] = {}
    for key in SCALARS:
        table = np.full(shape2, np.nan)
        for (label, seed), (scalars, _) in records.items():
            table[labels.index(label), seed_list.index(seed)] = scalars[key]
        data[key] = (("arm", "seed"), table)
    for key in CURVES:
        cube = np.full(shape3, np.nan)
        for (label, seed), (_, curves) in records.items():
            if key in curves:
                values = curves[key]
                cube[labels.index(label), seed_list.index(seed), :len(values)] = values
        if np.isfinite(cube).any():
            data[key] = (("arm", "seed", "epoch"), cube)
    coords = {"arm": labels, "seed": [int(s) for s in seed_list], "epoch": np.arange(1, n_epochs + 1),
              "model": ("arm", [meta[label]["model"] for label in labels]),
              "objective": ("arm", [meta[label]["objective"] for label in labels]),
              "backend": ("arm", [meta[label]["backend"] for label in labels])}
    settings = _read(out / "compare.json")
    attrs = {"settings": json.dumps(settings), **{
        k: json.dumps(v) if not isinstance(v, str | int | float) else v
        for k, v in results.environment("see runs").items()}}
    ds = xr.Dataset(data, coords=coords, attrs=attrs)
    for key in ("wall_seconds", "cpu_seconds"):
        if key in ds:
            ds[key].attrs["units"] = "s"
    return ds


def summary_table(ds: xr.Dataset) -> list[dict[str, Any]]:
    """One row per arm: mean and sd (ddof 1; 0 for one seed) over seeds of :data:`TABLE`."""
    rows = []
    for label in ds.arm.values:
        row: dict[str, Any] = {"arm": str(label), "model": str(ds.model.sel(arm=label).values),
                               "objective": str(ds.objective.sel(arm=label).values),
                               "backend": str(ds.backend.sel(arm=label).values)}
        row["seeds"] = int(np.isfinite(ds["steps"].sel(arm=label).values).sum())
        for key in TABLE:
            values = ds[key].sel(arm=label).values
            values = values[np.isfinite(values)]
            row[f"{key}_mean"] = float(values.mean()) if values.size else math.nan
            row[f"{key}_sd"] = float(values.std(ddof=1)) if values.size > 1 else (
                0.0 if values.size else math.nan)
        rows.append(row)
    return rows


def _fmt(value: float, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    if abs(value) >= 1000 or (abs(value) < 1e-3 and value != 0):
        return f"{value:.{digits}g}"
    return f"{value:.{digits}f}"


def write_report(out: str | Path, arms: Iterable[Arm] | None = None,
                 seeds: Iterable[int] | None = None) -> xr.Dataset:
    """Write ``comparison.nc``, ``.csv``, ``.md`` and ``.png`` in ``out`` from its runs."""
    import pandas as pd

    out = Path(out)
    ds = collect(out, arms, seeds)
    results.atomic_write(out / "comparison.nc", lambda tmp: ds.to_netcdf(tmp, engine="h5netcdf"))
    rows = summary_table(ds)
    frame = pd.DataFrame(rows)
    results.atomic_write(out / "comparison.csv",
                         lambda tmp: frame.to_csv(tmp, index=False, float_format="%.6g"))
    results.atomic_write(out / "comparison.md",
                         lambda tmp: Path(tmp).write_text(markdown(ds, rows)))
    settings = _read(out / "compare.json")
    clock = (settings.get("options") or {}).get("budget_clock") or "wall"
    plot_curves(ds, out / "comparison.png", clock=clock)
    return ds


def markdown(ds: xr.Dataset, rows: list[dict[str, Any]]) -> str:
    """The table of ``comparison.md``: mean ± sd over seeds per arm."""
    settings = json.loads(ds.attrs.get("settings", "{}") or "{}")
    iw = settings.get("iw_samples", "K")
    head = ["arm", "seeds", "test ELBO", f"IW-{iw} log p(x)" if iw else "log p(x) (not estimated)",
            "test error", "ms/step", "CPU ms/step", "SNR q init", "SNR q end", "SNR p init",
            "SNR p end", "Var loss init", "Var loss end"]
    clock = (settings.get("options") or {}).get("budget_clock") or "wall"
    budget = " and ".join(f"{settings[k]} {unit}" for k, unit in (
        ("minutes", f"min of {'process CPU' if clock == 'cpu' else 'wall'} time"), ("epochs", "epochs"))
        if settings.get(k))
    lines = ["# Comparison", "",
             f"Arms x seeds {[int(s) for s in ds.seed.values]}; budget: {budget or '?'} per "
             "arm (training time; evaluation not counted). "
             "Mean ± sd over seeds. "
             + ("SNR: median over parameter elements of |E g| / sd(g) over "
                f"{settings.get('grad_draws', 'N')} gradient draws at fixed parameters and batch "
                "(q: guide, p: model); Var loss: variance of the loss estimate (nats² per point). "
                if settings.get("grad_draws", 1) else "SNR and Var loss: not measured "
                "(grad_draws 0). ")
             +
             "ms/step: steady state, the steps after the first epoch (which carries one-off "
             "costs; a one-epoch run: all its steps).",
             "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row in rows:
        cells = [row["arm"], str(row["seeds"])]
        for key in TABLE:
            mean, sd = row[f"{key}_mean"], row[f"{key}_sd"]
            cells.append(_fmt(mean) if not math.isfinite(sd) or row["seeds"] < 2
                         else f"{_fmt(mean)} ± {_fmt(sd)}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_curves(ds: xr.Dataset, path: Path, clock: str = "wall") -> Path:
    """Validation ELBO, test error (where labels exist) and training loss against training time on
    ``clock`` (``"wall"``, or ``"cpu"``: the budget clock of ``--budget-clock cpu``): one line per arm
    (mean over seeds), a band from the lowest to the highest seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(k, t) for k, t in (("validation_elbo", "validation ELBO (nats)"),
                                  ("test_error_by_epoch", "test error"),
                                  ("loss", "training loss"))
              if k in ds and np.isfinite(ds[k].values).any()]
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(4.5 * max(len(panels), 1), 3.6),
                             squeeze=False)
    for ax, (key, title) in zip(axes[0], panels, strict=False):
        for label in ds.arm.values:
            values = ds[key].sel(arm=label).values
            time_key = "cpu_seconds" if clock == "cpu" and "cpu_seconds" in ds else "wall_seconds"
            wall = ds[time_key].sel(arm=label).values / 60
            keep = np.isfinite(values).any(0) & np.isfinite(wall).any(0)
            if not keep.any():
                continue
            with np.errstate(all="ignore"), _quiet():
                x = np.nanmean(wall[:, keep], 0)
                ax.plot(x, np.nanmean(values[:, keep], 0), label=str(label))
                if values.shape[0] > 1:
                    ax.fill_between(x, np.nanmin(values[:, keep], 0), np.nanmax(values[:, keep], 0),
                                    alpha=0.2)
        ax.set_xlabel(f"training {'CPU' if clock == 'cpu' else 'wall'} time (min)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    if panels:
        axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    results.atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
    return path


def _quiet() -> Any:
    import warnings

    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.simplefilter("ignore", RuntimeWarning)

    class _Exit:
        def __enter__(self) -> None:
            return None

        def __exit__(self, *exc: Any) -> None:
            ctx.__exit__(*exc)

    return _Exit()
