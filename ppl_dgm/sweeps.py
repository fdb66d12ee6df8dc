"""``ppl-dgm sweep``: a grid of ordinary training runs (seeds x labels x ...) and their aggregate.

    ppl-dgm sweep m2 --seeds 0-4 --labels 20,100 --dataset digits --epochs 60 --workers 2 --out runs/sw

Each point of the grid is an ordinary run directory, ``OUT/labels100/seed3`` (``OUT/seed3`` when only
seeds are swept; ``OUT/labels100-lr0.001/seed3`` with ``--grid lr=0.001,0.0003``), trained by
``ppl-dgm train`` in its own process with ``--threads`` CPU threads (default 1: one job per core, one
thread each). The runs are executed by an existing engine: a pool of ``--workers`` local worker
processes (``concurrent.futures``) by default, or a Ray cluster with ``--ray ADDRESS`` (``pip install
'ppl-dgm[ray]'``; every node must see ``--out``, e.g. on a shared file system, and have ppl-dgm
installed). Each attempt's output goes to ``RUN/train.log``.

A run that fails (non-zero exit, killed) is reported and retried ``--retries`` times (default once),
continuing from its checkpoint (``--resume``) when it left one. A run that still fails is reported
again, stays in the aggregate as missing values with ``status = "failed"``, and makes the sweep exit
with status 6 (:data:`ppl_dgm.errors.EXIT_RUNS_FAILED`; 1 is kept for bugs): no run is silently
dropped. Calling the same sweep again skips the finished runs
(those with a ``summary.json``), resumes interrupted ones and runs the others; the options of the
runs (everything but the seeds, the swept values, ``--workers``, ``--ray``, ``--retries`` and
``--threads``) must be those of the first call.

The aggregate, written when the runs are done:

* ``OUT/sweep.nc``: an xarray Dataset with a ``seed`` dimension and one per swept option (``labels``,
  each ``--grid`` key): every number of the runs' ``summary.json`` (``test_error``, ``test_elbo``,
  ``seconds_per_epoch``, ...), the per-epoch records of ``history.nc`` as ``history_<name>`` with an
  ``epoch`` dimension, ``status`` (``ok``/``failed``) and ``attempts``;
* ``OUT/sweep.csv`` and ``OUT/sweep.md``: per grid point and number, the mean and standard deviation
  over seeds (``ddof=1``, as the papers' "mean ± std"), the number of runs it includes, min and max;
* ``OUT/sweep.json``: the sweep's options, each run's status, attempts, exit codes and wall seconds,
  and the sweep's wall time.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ppl_dgm import results
from ppl_dgm.errors import Interrupted, UserError
from ppl_dgm.threads import thread_environment, validate_threads

SWEEP_JSON = "sweep.json"
SWEEP_NC = "sweep.nc"
LOG = "train.log"
# how a run is started: ``python -m ppl_dgm.cli train ...`` with the python of the worker
TRAIN_COMMAND = ["-m", "ppl_dgm.cli", "train"]
# numbers of summary.json reported in sweep.md / sweep.csv (those present), in this order
TABLE_METRICS = ("test_error", "test_error_at_best_validation", "test_sequence_error", "test_elbo",
                 "epochs", "seconds_per_epoch")
# options of `ppl-dgm train` the sweep sets itself
OWN_FLAGS = ("seed", "labels", "threads")


def parse_seeds(text: str) -> list[int]:
    """``0-4`` -> 0..4, ``0,3,7`` -> those, ``0-2,10`` -> 0, 1, 2, 10 (each seed once, in order)."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            low, sep, high = part.strip().partition("-")
            values = range(int(low), int(high) + 1) if sep else [int(low)]
            if sep and int(high) < int(low):
                raise ValueError
            seeds += [s for s in values if s not in seeds]
    except ValueError:
        raise UserError(f"--seeds {text!r} is not a list of seeds", "write e.g. 0-4 or 0,3,7") from None
    if not seeds or min(seeds) < 0:
        raise UserError(f"--seeds {text!r}: seeds are whole numbers >= 0", "e.g. 0-4")
    return seeds


@dataclass
class Run:
    """One point of the grid: its coordinates (seed last), directory and command arguments."""

    name: str
    coords: dict[str, Any]
    path: Path
    args: list[str]
    status: str = "pending"
    attempts: int = 0
    exit_codes: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    def finished(self) -> bool:
        return (self.path / results.SUMMARY).is_file()


def _label(name: str, value: Any) -> str:
    return f"{name}{json.dumps(value) if not isinstance(value, str) else value}".replace(" ", "")


def plan(model: str, seeds: list[int], swept: dict[str, list[Any]], hparam_keys: set[str],
         fixed: list[str], out: Path) -> list[Run]:
    """The runs of the grid: every combination of the swept values (``swept``: option -> values, an
    option in ``hparam_keys`` is a ``--set``) with every seed."""
    runs = []
    names = list(swept)
    for combo in itertools.product(*(swept[n] for n in names)):
        point = dict(zip(names, combo, strict=True))
        folder = out / "-".join(_label(n, v) for n, v in point.items()) if point else out
        for seed in seeds:
            args = [model, "--seed", str(seed)]
            for name, value in point.items():
                text = value if isinstance(value, str) else json.dumps(value)
                if name in hparam_keys:
                    args += ["--set", f"{name}={text}"]
                else:
                    args += ["--" + name.replace("_", "-"), text]
            path = folder / f"seed{seed}"
            runs.append(Run(str(path.relative_to(out)), {**point, "seed": seed}, path,
                            args + fixed + ["--out", str(path)]))
    return runs


def run_command(args: list[str], log: str, threads: int, cwd: str) -> tuple[int, float]:
    """Run ``python -m ppl_dgm.cli train ARGS`` (this worker's python) with ``threads`` CPU threads;
    output appended to ``log``. Returns the exit code and the wall seconds."""
    env = thread_environment(threads)  # the variables torch and XLA read when they start
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"\n$ python {' '.join(TRAIN_COMMAND + args)}\n")
        f.flush()
        with _CHILDREN_LOCK:
            if _STOPPING.is_set():  # the sweep was interrupted before this run started
                return -signal.SIGTERM, 0.0
            child = subprocess.Popen([sys.executable, *TRAIN_COMMAND, *args], stdout=f,
                                     stderr=subprocess.STDOUT, env=env, cwd=cwd)
            _CHILDREN.add(child)
        try:
            code = child.wait()
        finally:
            with _CHILDREN_LOCK:
                _CHILDREN.discard(child)
    return code, time.perf_counter() - started


# the local runs in progress (``run_command``'s processes), stopped when the sweep is interrupted
_CHILDREN: set[subprocess.Popen] = set()
_CHILDREN_LOCK = threading.Lock()
_STOPPING = threading.Event()


def _stop_children(signum: int) -> int:
    """Send ``signum`` to every local run in progress (each stops after its current step and writes
    a checkpoint) and start no other; returns how many were running."""
    with _CHILDREN_LOCK:
        _STOPPING.set()
        children = list(_CHILDREN)
    for child in children:
        try:
            child.send_signal(signum)
        except OSError:  # it has just ended
            pass
    return len(children)


@contextlib.contextmanager
def _sigterm_raises() -> Any:
    """Within: SIGTERM raises :class:`~ppl_dgm.errors.Interrupted` in the main thread (Python's
    default would end the sweep at once, silently, leaving its runs going)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise Interrupted("interrupted by SIGTERM", signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _LocalEngine:
    """``--workers`` local worker processes: each ``run_command`` starts one ``ppl-dgm train``."""

    def __init__(self, workers: int) -> None:
        self.pool = ThreadPoolExecutor(max_workers=workers)

    def submit(self, *args: Any) -> Future:
        return self.pool.submit(run_command, *args)

    def close(self) -> None:
        self.pool.shutdown(wait=True)


class _RayEngine:
    """A Ray cluster: each run is a Ray task holding ``threads`` CPUs."""

    def __init__(self, address: str, threads: int) -> None:
        try:
            import ray
        except ImportError:
            raise ValueError("--ray needs Ray, which is not installed: pip install 'ppl-dgm[ray]' "
                             "(or run without --ray for local worker processes)") from None
        self.ray = ray
        ray.init(address=address, ignore_reinit_error=True)
        self.task = ray.remote(num_cpus=max(threads, 1))(run_command)

    def submit(self, *args: Any) -> Future:
        return self.task.remote(*args).future()

    def close(self) -> None:
        self.ray.shutdown()


def execute(runs: list[Run], engine: Any, threads: int, retries: int,
            say: Any = print) -> None:
    """Run every unfinished run on ``engine``; a failed attempt is reported and retried (from its
    checkpoint when it left one) up to ``retries`` times. Sets each run's status."""
    cwd = os.getcwd()
    pending: dict[Future, Run] = {}

    def start(run: Run) -> None:
        args = list(run.args)
        if (run.path / results.CHECKPOINT).exists() or (run.path / "checkpoint.pkl").exists():
            args.append("--resume")
        run.attempts += 1
        run.status = "running"
        pending[engine.submit(args, str(run.path / LOG), threads, cwd)] = run

    for run in runs:
        if run.finished():
            run.status = "ok"
        else:
            start(run)
    while pending:
        done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
        for future in done:
            run = pending.pop(future)
            try:
                code, seconds = future.result()
            except Exception as err:  # the engine lost the task (e.g. a Ray node died)
                code, seconds = -1, float("nan")
                say(f"ppl-dgm sweep: run {run.name}: the engine lost it ({err})", file=sys.stderr)
            run.exit_codes.append(code)
            run.seconds.append(seconds)
            if code == 0 and run.finished():
                run.status = "ok"
                say(f"finished {run.name} in {seconds:.1f} s")
                continue
            again = run.attempts <= retries
            resume = (run.path / results.CHECKPOINT).exists() or (run.path / "checkpoint.pkl").exists()
            say(f"ppl-dgm sweep: run {run.name} failed (exit code {code}, attempt {run.attempts}); "
                f"log: {run.path / LOG}; " + (("retrying from its checkpoint" if resume else
                                                 "retrying from the start") if again else
                                                "giving up: it is recorded as failed"),
                file=sys.stderr)
            if again:
                start(run)
            else:
                run.status = "failed"


def aggregate(runs: list[Run], dims: list[str], attrs: dict[str, Any]):
    """The runs as one xarray Dataset with dims ``dims + ["seed"]`` (see the module docstring)."""
    import xarray as xr

    parts = []
    for run in runs:
        index = {name: [run.coords[name]] for name in [*dims, "seed"]}
        part = xr.Dataset({"status": ((), run.status), "attempts": ((), run.attempts)})
        if run.finished():
            summary = results.read_json(run.path / results.SUMMARY)
            for key, value in summary.items():  # its numbers (seed and labels are coordinates)
                if (isinstance(value, int | float) and not isinstance(value, bool)
                        and key not in index):
                    part[key] = ((), float(value))
            if (run.path / results.HISTORY).is_file():
                history = results.read_history(run.path / results.HISTORY)
                part = part.merge(history.rename({v: f"history_{v}" for v in history.data_vars})
                                  .drop_attrs(), compat="override")
        parts.append(part.expand_dims(index))
    ds = xr.merge(parts, join="outer", compat="no_conflicts", combine_attrs="drop")
    ds["status"] = ds["status"].fillna("missing").astype(str)
    ds.attrs = {k: v if isinstance(v, str | int | float) else json.dumps(v) for k, v in attrs.items()}
    return ds


def table(ds, dims: list[str]):
    """Mean, std (ddof=1), number of runs, min and max over seeds of the summary numbers, per grid
    point: a pandas DataFrame with columns ``dims + [metric, mean, std, n, min, max]``."""
    import pandas as pd

    rows = []
    points = itertools.product(*(ds[d].values.tolist() for d in dims)) if dims else [()]
    for point in points:
        sel = ds.sel(dict(zip(dims, point, strict=True))) if dims else ds
        for metric in TABLE_METRICS:
            if metric not in sel:
                continue
            values = sel[metric].values.astype(float)
            values = values[np.isfinite(values)]
            n = len(values)
            rows.append({**dict(zip(dims, point, strict=True)), "metric": metric,
                         "mean": values.mean() if n else np.nan,
                         "std": values.std(ddof=1) if n > 1 else np.nan, "n": n,
                         "min": values.min() if n else np.nan, "max": values.max() if n else np.nan})
    return pd.DataFrame(rows, columns=[*dims, "metric", "mean", "std", "n", "min", "max"])


def _markdown(frame, dims: list[str], runs: list[Run], heading: str) -> str:
    lines = [f"# {heading}", "", "Mean ± standard deviation over seeds (ddof = 1); n: runs included. "
             "Errors in percent.", ""]
    metrics = [m for m in TABLE_METRICS if m in set(frame["metric"])]
    lines.append("| " + " | ".join([*dims, *metrics, "n"]) + " |")
    lines.append("|" + " --- |" * (len(dims) + len(metrics) + 1))
    groups = frame.groupby(dims, sort=False) if dims else [((), frame)] if len(frame) else []
    for point, group in groups:
        point = point if isinstance(point, tuple) else (point,)
        cells = [str(v) for v in point]
        for metric in metrics:
            row = group[group["metric"] == metric].iloc[0]
            scale = 100.0 if "error" in metric else 1.0
            digits = 2 if "error" in metric or "elbo" in metric else 3
            mean = row["mean"] * scale
            std = row["std"] * scale
            cells.append("–" if not np.isfinite(mean) else
                         f"{mean:.{digits}f} ± {std:.{digits}f}" if np.isfinite(std) else
                         f"{mean:.{digits}f}")
        cells.append(str(int(group["n"].max())))
        lines.append("| " + " | ".join(cells) + " |")
    failed = [run for run in runs if run.status != "ok"]
    if failed:
        lines += ["", "Runs without a result (kept in sweep.nc as missing values):", ""]
        lines += [f"- {run.name}: {run.status} after {run.attempts} attempt(s), exit codes "
                  f"{run.exit_codes}" for run in failed]
    retried = [run for run in runs if run.status == "ok" and run.attempts > 1]
    if retried:
        lines += ["", "Retried runs: " + ", ".join(f"{r.name} (exit codes {r.exit_codes})"
                                                  for r in retried)]
    return "\n".join(lines) + "\n"


def write_aggregate(out: Path, runs: list[Run], dims: list[str], attrs: dict[str, Any]) -> Any:
    """``sweep.nc``, ``sweep.csv`` and ``sweep.md`` in ``out``; returns the Dataset."""
    ds = aggregate(runs, dims, attrs)
    results.atomic_write(out / SWEEP_NC, lambda tmp: ds.to_netcdf(tmp, engine="h5netcdf"))
    frame = table(ds, dims)
    results.atomic_write(out / "sweep.csv", lambda tmp: frame.to_csv(tmp, index=False))
    text = _markdown(frame, dims, runs, f"{attrs.get('model')} sweep: {attrs.get('runs')} runs")
    results.atomic_write(out / "sweep.md", lambda tmp: Path(tmp).write_text(text))
    return ds


# -------------------------------------------------------------------------------------- the API
def _train_args(options: dict[str, Any], hparams: dict[str, Any]) -> list[str]:
    """The ``ppl-dgm train`` arguments of fixed options (those of :data:`ppl_dgm.config.OPTIONS`
    with a flag) and network hyperparameters."""
    from ppl_dgm.config import OPTIONS

    args: list[str] = []
    for name, value in options.items():
        opt = OPTIONS[name]
        if name == "dataset_options":
            for key, item in value.items():
                args += ["--data-option", f"{key}={_text(item)}"]
        elif opt.flag is None:
            raise UserError(f"sweep runs 'ppl-dgm train' processes, which take no option {name}",
                            "leave it out, or train those runs with ppl_dgm.train")
        elif opt.kind == "bool":
            if value != opt.default:
                args.append(opt.flag)
        else:
            args += [opt.flag, _text(value)]
    for key, value in hparams.items():
        args += ["--set", f"{key}={_text(value)}"]
    return args


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def sweep(model: str, *, seeds: str | list[int] = "0-4", labels: list[int] | None = None,
          grid: dict[str, list[Any]] | None = None, workers: int = 1, ray: str | None = None,
          threads: int = 1, retries: int = 1, out: str | os.PathLike | None = None,
          hparams: dict[str, Any] | None = None,
          say: Callable[..., None] | None = print, **options: Any) -> Any:
    """Run the grid ``seeds`` x ``labels`` x ``grid`` of ordinary training runs and aggregate them
    (see the module's docstring); returns the aggregate (``sweep.nc``) as an xarray Dataset, whose
    ``status`` says which runs failed (``ok``/``failed``; the same call again retries them).

    ``seeds``: a list, or text such as ``"0-4"`` or ``"0,3,7"``. ``labels``: labelled-set sizes
    to sweep (default: not swept). ``grid``: other swept options, a training option
    (``{"lr": [1e-3, 3e-4]}``) or a network hyperparameter (``{"z_dim": [16, 32]}``).
    ``workers``: local worker processes at once, or ``ray``: the address of a Ray cluster.
    ``threads``: CPU threads of each run. ``retries``: how often a failed run is tried again.
    ``hparams`` and ``options``: the fixed hyperparameters and training options of every run
    (those of :func:`ppl_dgm.train`). ``say``: where the progress lines go (``None``: nowhere).
    Raises ``UserError`` before anything runs when an option or grid point is invalid;
    ``Interrupted`` on SIGINT/SIGTERM (each run keeps its checkpoint; the same call continues).
    """
    from ppl_dgm import registry
    from ppl_dgm.config import OPTIONS, resolve

    say = say or (lambda *a, **k: None)
    for flag, value, low in (("workers", workers, 1), ("retries", retries, 0)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise UserError(f"--{flag} must be an integer (got {value!r})")
        if value < low:
            raise UserError(f"--{flag} must be >= {low} (got {value})")
    validate_threads(threads)
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise UserError(f"sweep got unknown options {unknown}",
                        "the options are those of 'ppl-dgm train --help'")
    own = sorted(k for k in options if k in OWN_FLAGS and options[k] is not None)
    if own:
        raise UserError(f"sweep sets {own} itself", "use seeds=, labels= (swept) and threads=")
    spec = registry.resolve_spec(model, options.get("backend"))
    seeds = parse_seeds(seeds) if isinstance(seeds, str) else list(seeds)
    if not seeds or any(not isinstance(s, int) or s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise UserError(f"seeds must be distinct whole numbers >= 0 (got {seeds!r})", "e.g. 0-4")
    swept: dict[str, list[Any]] = {}
    if labels is not None:
        swept["labels"] = _checked_values(list(labels), "--labels")
    hparam_keys: set[str] = set()
    for key, values in (grid or {}).items():
        key = key.strip().replace("-", "_")
        if key in swept or key in OWN_FLAGS:
            raise UserError(f"--grid {key}: sweep it with its own option (--seeds, --labels) or "
                            "once only")
        if key not in OPTIONS:
            if key not in spec.hparams:
                raise UserError(f"--grid {key}: neither a train option nor a hyperparameter of "
                                f"{spec.name} ({sorted(spec.hparams)})")
            hparam_keys.add(key)
        if options.get(key) is not None or key in (hparams or {}):
            raise UserError(f"--{key.replace('_', '-')} is both fixed and swept (--grid)")
        swept[key] = _checked_values(list(values), f"--grid {key}")
    fixed_options = {k: v for k, v in options.items() if v is not None}
    fixed = _train_args(fixed_options, hparams or {})
    # every grid point's configuration resolved now: a bad option is one error, not failed runs
    names = list(swept)
    for combo in itertools.product(*(swept[n] for n in names)):
        point = dict(zip(names, combo, strict=True))
        resolve(spec, {**fixed_options, **{k: v for k, v in point.items() if k not in hparam_keys}},
                {**(hparams or {}), **{k: v for k, v in point.items() if k in hparam_keys}})
    out = Path(out or f"runs/sweep-{model}-{time.strftime('%Y%m%d-%H%M%S')}")
    # what the runs are (compared when the sweep is continued): not how many threads they use
    record_options = {"model": model, "runs_options": list(fixed), "swept": sorted(swept),
                      "hparams_swept": sorted(hparam_keys)}
    fixed += ["--no-progress", "--threads", str(threads)]
    record_path = out / SWEEP_JSON
    if record_path.is_file():
        before = results.read_json(record_path).get("options", {})
        if before and before != record_options:
            raise UserError(f"{out} holds a sweep with other options ({before})",
                            "continue it with the same options or pick another --out")
    runs = plan(model, seeds, swept, hparam_keys, fixed, out)
    for run in runs:  # a run directory that belongs to another sweep or run is not overwritten
        if (run.path / results.CONFIG).is_file() and not record_path.is_file():
            raise UserError(f"{run.path} already holds a run not started by this sweep",
                            "pick another --out")
    # the engine first: a missing Ray is reported before anything is written
    engine = _RayEngine(ray, threads) if ray else _LocalEngine(workers)
    out.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"options": record_options, "command": sys.argv, "seeds": seeds,
                              "swept": swept, "workers": workers, "ray": ray,
                              "threads": threads, "retries": retries}
    results.write_json(record_path, {**record, "status": "running"})
    skipped = sum(run.finished() for run in runs)
    say(f"sweep of {len(runs)} runs in {out} ({skipped} finished before, skipped) on "
        + (f"Ray at {ray}" if ray else f"{workers} local worker(s)")
        + f", {threads} thread(s) each")
    started = time.perf_counter()
    _STOPPING.clear()
    try:
        with _sigterm_raises():
            execute(runs, engine, threads, retries, say=lambda *a, **k: say(*a, **k, flush=True))
    except (Interrupted, KeyboardInterrupt) as err:
        signum = err.signum if isinstance(err, Interrupted) else signal.SIGINT
        # SIGTERM is forwarded to the runs; a Ctrl-C reached them already (one process group)
        if signum == signal.SIGTERM:
            running = _stop_children(signal.SIGTERM)
        else:
            with _CHILDREN_LOCK:
                _STOPPING.set()
                running = len(_CHILDREN)
        engine.close()  # waits for the runs to write their checkpoints and stop
        name = "SIGTERM" if signum == signal.SIGTERM else "SIGINT (Ctrl-C)"
        finished = sum(run.finished() for run in runs)
        results.write_json(record_path, {**record, "status": "interrupted", "signal": name,
                                         "wall_seconds": time.perf_counter() - started})
        raise Interrupted(
            f"sweep interrupted by {name}: {finished} of {len(runs)} runs finished, {running} "
            f"stopped after their current step (each keeps its checkpoint); run the same command "
            f"again to continue (finished runs are skipped, stopped ones resume)", signum) from None
    else:
        engine.close()
    finally:
        _STOPPING.clear()
    wall = time.perf_counter() - started
    attrs = {"model": model, "runs": len(runs), "options": record_options, "seeds": seeds}
    ds = write_aggregate(out, runs, list(swept), attrs)
    run_seconds = [s for run in runs for s in run.seconds if np.isfinite(s)]
    record.update({
        "status": "done" if all(r.status == "ok" for r in runs) else "incomplete",
        "wall_seconds": wall, "run_seconds_sum": float(sum(run_seconds)),
        "runs": {run.name: {"coords": run.coords, "status": run.status, "attempts": run.attempts,
                            "exit_codes": run.exit_codes, "seconds": run.seconds}
                 for run in runs},
        "environment": results.environment("cpu"),
    })
    results.write_json(record_path, record)
    ds.attrs.update(out=str(out), wall_seconds=wall, run_attempts=len(run_seconds),
                    run_seconds_sum=float(sum(run_seconds)),
                    failed=[run.name for run in runs if run.status != "ok"])
    return ds


def _checked_values(values: list[Any], flag: str) -> list[Any]:
    if not values:
        raise UserError(f"{flag} lists no values", "write e.g. 20,100")
    if len(set(map(str, values))) != len(values):
        raise UserError(f"{flag} {values!r} repeats a value")
    return values
