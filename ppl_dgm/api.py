"""The Python API: train, load, evaluate, sample and resume runs; compare, sweep and reproduce.

    import ppl_dgm

    run = ppl_dgm.train("m2", dataset="digits", labels=100, epochs=30, out="runs/m2")
    run.summary["test_error"]            # the figures of summary.json
    run.history                          # the per-epoch records (an xarray Dataset)
    run.evaluate(iw_samples=1000)        # test error, importance-weighted log-likelihood
    run.sample()                         # a PNG grid of class-conditional samples
    run = run.resume(epochs=60)          # train further from the checkpoint
    run = ppl_dgm.load("runs/m2")        # a run written earlier (by the API or the command line)

The keyword options of :func:`train` are the options of ``ppl-dgm train`` (the table
:data:`ppl_dgm.config.OPTIONS`): each is checked against its domain and a bad value raises
:class:`ppl_dgm.errors.UserError` with one line naming the option and the fix. Nothing here exits
the process; the command line (:mod:`ppl_dgm.cli`) turns the errors into exit statuses.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ppl_dgm import options as options_module
from ppl_dgm import results, rundir
from ppl_dgm.backends import load_trainer, trainer_class
from ppl_dgm.comparison import compare
from ppl_dgm.config import OPTIONS, RESUMABLE, TrainConfig, resolve
from ppl_dgm.errors import PplDgmError, RunDirectoryError, UserError, describe
from ppl_dgm.registry import ModelSpec
from ppl_dgm.reproduction import reproduce
from ppl_dgm.sweeps import sweep
from ppl_dgm.threads import apply_threads


def model_reference(model: str | Callable[..., Any] | ModelSpec) -> str:
    """The name or reference (``path/to/file.py:build``, ``package.module:build``) of ``model``: a
    registered name or a reference as given, or a build function / ModelSpec that a later process
    can import again (a run directory must be able to find its pair to be evaluated or resumed)."""
    if isinstance(model, str):
        return model
    build = model.build if isinstance(model, ModelSpec) else model
    if not callable(build):
        raise UserError(f"model must be a name, a reference or a build function (got {model!r})",
                        "e.g. ppl_dgm.train('m2') or ppl_dgm.train('my_pair.py:build')")
    module, name = getattr(build, "__module__", None), getattr(build, "__qualname__", "")
    if module and module != "__main__" and "." not in name and "<" not in name:
        return f"{module}:{name}"
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if module == "__main__" and main_file and "." not in name and "<" not in name:
        return f"{Path(main_file).resolve()}:{name}"
    raise UserError(f"the pair {name or build!r} is defined where a later process cannot import it "
                    "(a notebook cell or a nested function), so its run could not be evaluated or "
                    "resumed", "save it in a file and pass 'path/to/my_pair.py:build'")


def _resolve_spec(model: str, backend: str | None, source: dict[str, Any] | None = None) -> ModelSpec:
    from ppl_dgm import registry

    return registry.resolve_spec(model, backend, source)


# ----------------------------------------------------------------------------------- training
def train(model: str | Callable[..., Any] | ModelSpec | None = None, *,
          out: str | os.PathLike | None = None, resume: bool = False,
          hparams: dict[str, Any] | None = None, progress: bool = True,
          distributed: bool = False, **options: Any) -> Run:
    """Train a model/guide pair and return its :class:`Run` (the options are listed below).

    ``model``: a registered name (``ppl-dgm models``), ``path/to/my_pair.py:build``,
    ``package.module:build``, or an importable build function or ModelSpec (see
    :mod:`ppl_dgm.contract`). ``out``: the run directory (default ``runs/MODEL-DATASET-TIME``); a
    directory that holds a run is refused unless ``resume=True``, which continues it from its last
    checkpoint (``model`` may then be left out: it is read from the run). A resumed run may change
    only the options marked so; any other that differs from the run is refused, naming it.
    ``hparams``: network hyperparameters over the pair's own (``ppl-dgm models NAME`` lists them;
    the command line's ``--set``). ``progress``: a progress bar. ``distributed``: data-parallel
    training (DDP over the processes torchrun starts for Pyro, the batch sharded over JAX's
    devices for NumPyro; :mod:`ppl_dgm.training.distributed`).

    An option left out (or ``None``) takes the pair's own training default (``ppl-dgm models
    NAME``), else the default below. ``threads`` left out keeps the process's threads as they are.

    Raises :class:`~ppl_dgm.errors.UserError` (bad input), ``RunDirectoryError``,
    ``RunLockedError``, ``DivergenceError`` (the last good checkpoint is kept) or ``Interrupted``
    (SIGINT/SIGTERM: a checkpoint of the steps done is written; ``resume=True`` continues exactly).

    Options:
    """
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise UserError(f"train got unknown options {unknown}",
                        "the options are those of 'ppl-dgm train --help'; network "
                        "hyperparameters go in hparams={...}")
    given = {k: v for k, v in options.items() if v is not None}
    saved = _resume_target(model, out, given.get("backend"), resume)
    if saved is not None:
        reference, given["backend"] = saved["model"], saved.get("backend", "pyro")
        spec = _resolve_spec(reference, given["backend"], saved.get("source"))
    else:
        reference = model_reference(model)  # type: ignore[arg-type]
        spec = _resolve_spec(reference, given.get("backend"))
    if given.get("threads") is not None:  # before a trainer imports torch or JAX
        given["threads"] = apply_threads(given["threads"])
    torchrun = all(name in os.environ for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if torchrun and spec.backend == "numpyro":
        raise UserError("torchrun launches the Pyro backend only; the NumPyro backend shards the "
                        "batch over the devices of one process", "run it with distributed=True "
                        "(--distributed) alone")
    config = resolve(spec, given, hparams)
    run_dir = Path(out) if out is not None else Path(
        f"runs/{config.model}-{config.dataset}-{time.strftime('%Y%m%d-%H%M%S')}")
    if saved is not None:
        config = _resumed_config(run_dir, saved, config, given, hparams)
    elif os.environ.get("RANK", "0") == "0":  # checked again under the run's lock by fit()
        rundir.check_new_run(run_dir)
    stamps = rundir.record_stamps(run_dir) if saved is not None else None
    trainer = trainer_class(spec.backend, distributed or torchrun)(config, run_dir,
                                                                   progress=progress, spec=spec)
    try:
        trainer.fit(resume=resume)
    finally:
        if stamps is not None and os.environ.get("RANK", "0") == "0":
            _set_aside_stale(run_dir, stamps)
    return Run(run_dir)


train.__doc__ = (train.__doc__ or "") + "\n" + options_module.docstring(OPTIONS.values()) + "\n"


def _resume_target(model: Any, out: str | os.PathLike | None, backend: str | None,
                   resume: bool) -> dict[str, Any] | None:
    """With ``resume``: the saved configuration of ``out`` (a different model or backend is
    refused); without: check that a model was named."""
    if not resume:
        if model is None:
            raise UserError("train needs a model", "name one of 'ppl-dgm models' (or resume a "
                            "run: resume=True, out=DIR)")
        return None
    if out is None:
        raise UserError("resuming needs the run directory (--out)", "name the run to continue")
    path = Path(out) / results.CONFIG
    if not path.is_file():
        raise RunDirectoryError(f"{out} holds no run to resume (no {results.CONFIG})",
                                "train without --resume to start one")
    saved = results.read_json(path)  # a file that is not JSON: one line naming it
    given_model = None if model is None else model_reference(model)
    for key, given in (("model", given_model), ("backend", backend)):
        value = saved.get(key, "pyro" if key == "backend" else None)
        if key == "model" and given is not None and _same_source(given, saved.get("source")):
            given = value  # the pair's reference (path/to/my_pair.py:build) names the saved pair
        if given is not None and given != value:
            raise RunDirectoryError(f"--resume: {out} holds a {key} {value!r} run, not {given!r}",
                                    f"drop the {key} (it is read from {results.CONFIG}) or pick "
                                    "another --out for a new run")
    return saved


def _same_source(reference: str, source: dict[str, Any] | None) -> bool:
    """``reference`` (as given to train) names the pair a run recorded in its ``source``."""
    from ppl_dgm import user_pairs

    if not source or not user_pairs.is_reference(reference):
        return False
    target, attribute = user_pairs.split_reference(reference)
    if attribute != source.get("attribute"):
        return False
    if source.get("kind") == "file":
        return str(Path(target).expanduser().resolve()) == source.get("path")
    return target == source.get("module")


def _resumed_config(run_dir: Path, saved: dict[str, Any], config: TrainConfig,
                    given: dict[str, Any], hparams: dict[str, Any] | None) -> TrainConfig:
    """The saved configuration with the given options that a resumed run may change
    (:data:`ppl_dgm.config.RESUMABLE`, reported); any other given option that differs from the
    saved run is refused, listing the differences."""
    from ppl_dgm.rundir import RESUMABLE_FLAGS, check_resume_epochs, identity_differences

    saved = dict(saved)
    asked = {name: getattr(config, name) for name in given}
    if hparams:
        asked["hparams"] = {**saved.get("hparams", {}), **hparams}
    if "dataset_options" in given:
        asked["dataset_options"] = {**saved.get("dataset_options", {}), **given["dataset_options"]}
    differences = identity_differences({k: saved.get(k) for k in asked if k in saved},
                                       {k: v for k, v in asked.items() if k in saved})
    if differences:
        raise RunDirectoryError(
            f"--resume would change the run in {run_dir}: " + "; ".join(differences),
            f"only {RESUMABLE_FLAGS} may change on resume; start a new run with another --out "
            "for the rest")
    if asked.get("epochs") is not None:
        check_resume_epochs(run_dir, asked["epochs"])
    for key in RESUMABLE:
        if key in asked and asked[key] != saved.get(key):
            print(f"resume: {key} {saved.get(key)!r} -> {asked[key]!r}", file=sys.stderr)
            saved[key] = asked[key]
    return TrainConfig.from_dict(saved)


def _set_aside_stale(out: Path, stamps: dict[str, tuple[int, int]]) -> None:
    """After a resume: the evaluation and samples of the earlier checkpoint moved aside
    (:func:`ppl_dgm.rundir.set_aside_stale_records`), said on stderr."""
    try:
        folder = rundir.set_aside_stale_records(out, stamps)
    except (OSError, PplDgmError) as err:  # never hides the training's own outcome
        print(f"ppl-dgm: warning: the evaluation records of the earlier checkpoint in {out} could "
              f"not be moved aside ({describe(err)[0]}); they describe that checkpoint, not this "
              "run's summary", file=sys.stderr)
        return
    if folder is not None:
        names = ", ".join(sorted(p.name for p in folder.iterdir()))
        print(f"resume: moved {names} to {folder}: they describe the checkpoint before this resume "
              "(run evaluate or sample again for the new one)", file=sys.stderr)


# --------------------------------------------------------------------------------------- runs
class Run:
    """A run directory written by :func:`train` or ``ppl-dgm train`` (either backend).

    Its records are read when asked for, so they are always those on disk: :attr:`config`,
    :attr:`summary`, :attr:`history`. :meth:`evaluate`, :meth:`sample` and :meth:`resume` work on
    its last checkpoint; :attr:`pair` and :attr:`params` restore it (with its backend's modules).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._trainer: Any = None

    def __repr__(self) -> str:
        summary = self.summary
        figures = ", ".join(f"{k}={summary[k]:.4g}" for k in ("test_error", "test_elbo")
                            if isinstance(summary.get(k), int | float))
        return (f"Run({str(self.path)!r}: {self.config.get('model')} "
                f"({self.backend}), {summary.get('epochs', 0)} epochs" + (f", {figures})" if figures
                                                                         else ")"))

    @property
    def config(self) -> dict[str, Any]:
        """``config.json``: the run's configuration (the options as trained)."""
        return results.read_json(self.path / results.CONFIG)

    @property
    def backend(self) -> str:
        return self.config.get("backend", "pyro")

    @property
    def summary(self) -> dict[str, Any]:
        """``summary.json`` (``{}`` before the first epoch ends)."""
        path = self.path / results.SUMMARY
        return results.read_json(path) if path.is_file() else {}

    @property
    def history(self) -> Any:
        """``history.nc``: one record per epoch (losses, test error, ELBOs, steps, seconds...) as
        an :class:`xarray.Dataset` with dimension ``epoch``."""
        return results.read_history(self.path / results.HISTORY)

    def evaluate(self, iw_samples: int = 5000, chunk_size: int = 500, subset: int | None = None,
                 classify_samples: int | None = None, device: str = "auto", seed: int = 0,
                 bn_stats: str = "running", threads: int | None = None,
                 progress: bool = True) -> dict[str, Any]:
        """The test error and the importance-weighted log-likelihood of the last checkpoint
        (written to ``evaluation.json``; see ``ppl-dgm evaluate --help`` for each option;
        ``progress``: a progress bar of the importance sampling)."""
        from ppl_dgm.evaluate import check_evaluation_options, evaluate_run

        check_evaluation_options(iw_samples=iw_samples, chunk_size=chunk_size, subset=subset,
                                 classify_samples=classify_samples, seed=seed, bn_stats=bn_stats)
        _reader_threads(self.path, threads)
        return evaluate_run(self.path, iw_samples=iw_samples, chunk_size=chunk_size,
                            subset=subset, classify_samples=classify_samples, device=device,
                            seed=seed, bn_stats=bn_stats, progress=progress)

    def sample(self, output: str | os.PathLike | None = None, per_class: int = 10,
               device: str = "auto", seed: int = 0, threads: int | None = None) -> Path:
        """A PNG grid of (class-conditional) samples; returns its path (default
        ``RUN_DIR/samples.png``)."""
        from ppl_dgm.evaluate import sample_grid

        _reader_threads(self.path, threads)
        return Path(sample_grid(self.path, output, per_class=per_class, device=device, seed=seed))

    def resume(self, progress: bool = True, **options: Any) -> Run:
        """Continue training from the last checkpoint (``epochs``, ``max_minutes`` and the other
        resumable options may change); returns the run."""
        self._trainer = None
        return train(out=self.path, resume=True, progress=progress, **options)

    def trainer(self, device: str = "auto") -> Any:
        """The backend's trainer restored from the last checkpoint (its ``pair``, data split and
        evaluation methods), loaded once."""
        if self._trainer is None:
            self._trainer = load_trainer(self.path, self.backend, device)
        return self._trainer

    @property
    def pair(self) -> Any:
        """The trained pair: Pyro's ``nn.Module`` pair (parameters inside) or the NumPyro pair
        (its programs; the parameters are :attr:`params`)."""
        return self.trainer().pair

    @property
    def params(self) -> dict[str, Any]:
        """The trained parameters by name: NumPyro's parameter sites (and batch-norm state), or
        the Pyro pair's ``state_dict``."""
        trainer = self.trainer()
        return trainer.params if self.backend == "numpyro" else trainer.pair.state_dict()


def load(run_dir: str | os.PathLike) -> Run:
    """The run written in ``run_dir`` (raises ``RunDirectoryError`` when it holds none)."""
    path = Path(run_dir)
    if not (path / results.CONFIG).is_file():
        raise RunDirectoryError(f"{run_dir} holds no run (no {results.CONFIG})",
                                "give a folder written by ppl_dgm.train or 'ppl-dgm train'")
    return Run(path)


def _reader_threads(run_dir: Path, threads: int | None) -> None:
    """Threads of evaluate and sample, applied before torch or JAX start working (``None``: the
    process as it is)."""
    if threads is None:
        return
    try:
        threads = apply_threads(threads)
    except ValueError as err:
        raise UserError(str(err), "e.g. threads=1") from None
    from ppl_dgm.evaluate import run_backend

    try:
        backend = run_backend(run_dir)
    except (OSError, ValueError):  # not a run directory: the command itself says so
        backend = None
    if backend == "numpyro":
        from ppl_dgm.threads import start_xla

        start_xla(threads)


__all__ = ["Run", "compare", "load", "reproduce", "sweep", "train", "trainer_class"]
