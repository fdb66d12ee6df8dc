"""Backend-neutral pieces of training (numpy only): the data a run trains on, default weights and
the epoch bookkeeping.

Both trainers (``ppl_dgm.training.loop`` for Pyro, ``ppl_dgm.training.numpyro_loop`` for NumPyro) read the
data set, hold out the validation split, draw the balanced labelled subset and derive the papers'
alpha through these functions, so the two backends train on exactly the same points for a seed; and
both run their epochs through :class:`EpochLoop` (progress bar, per-epoch records, checkpoint
cadence, time budget, summary), so the run directories of the two backends hold the same records.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ppl_dgm import registry, results, rundir
from ppl_dgm.config import TrainConfig
from ppl_dgm.data import ImageData, Split, load_dataset, semi_supervised_split
from ppl_dgm.errors import DivergenceError, Interrupted, RunDirectoryError, UserError
from ppl_dgm.spec import ModelSpec

VALIDATION_SEED = 1
TEST_BINARIZATION_SEED = 0


@dataclass
class DataInfo:
    """What a ``build`` function may know about the data (backend-neutral)."""

    x_dim: int
    image_shape: tuple[int, ...]
    n_classes: int
    n_train: int
    n_labelled: int
    n_unlabelled: int
    sequence_length: int = 1


def default_validation_size(n_train: int) -> int:
    """The last 10,000 training points for MNIST-sized sets, else 10% (never the test set)."""
    return 10_000 if n_train >= 50_000 else n_train // 10


def prepare_data(config: TrainConfig, spec: ModelSpec | None = None
                 ) -> tuple[ImageData, Split, DataInfo]:
    """Load ``config.dataset`` and split it: validation hold-out, balanced labelled subset
    (``spec``: the pair's, when the caller has resolved it already)."""
    spec = spec or registry.resolve_spec(config.model, config.backend, config.source)
    data = load_dataset(config.dataset, config.data_dir, **config.dataset_options)
    n_val = (config.validation_size if config.validation_size is not None
             else default_validation_size(len(data.x_train)))
    y_split = data.y_train if data.y_train.ndim == 1 else data.y_train[:, 0]
    if spec.task in ("semi-supervised", "supervised") and data.n_classes < 2:
        raise UserError(f"{data.source or config.dataset} has labels of one class only: a "
                        "classifier needs two or more", "give a data set whose labels take two or "
                        "more values")
    labels = config.labels if spec.task == "semi-supervised" else None
    split = semi_supervised_split(y_split, labels, config.seed, n_val,
                                  config.include_labelled_in_unlabelled)
    info = DataInfo(
        x_dim=data.x_dim, image_shape=data.image_shape, n_classes=data.n_classes,
        n_train=len(data.x_train) - n_val, n_labelled=len(split.labelled),
        n_unlabelled=len(split.unlabelled),
        sequence_length=1 if data.y_train.ndim == 1 else data.y_train.shape[1],
    )
    return data, split, info


def training_task(task: str, info: DataInfo) -> str:
    """The task a trainer runs: a semi-supervised pair with no labelled point (``--labels 0``)
    trains fully unsupervised (every point's y enumerated, no classification term)."""
    return "unsupervised" if task == "semi-supervised" and info.n_labelled == 0 else task


def default_alpha(info: DataInfo) -> float:
    """The auxiliary-model papers' alpha = 0.1 * N / N_labelled, with N the size of the unlabelled set
    actually used (``info.n_unlabelled``): 50 for MNIST with 100 labels and the last 10,000 training
    images held out for validation (60 with all 60,000, as in the authors' runs)."""
    return 0.1 * info.n_unlabelled / max(info.n_labelled, 1)


class EpochLoop:
    """The epochs of a run, whatever the backend: train, evaluate, record, checkpoint, summarise.

    A trainer subclasses it and provides the backend's pieces: ``train_epoch(bar)`` (one epoch of
    optimiser steps; returns the epoch's mean step statistics, at least ``loss`` and ``beta``),
    ``current_lr()``, ``save_checkpoint()``, ``load_checkpoint()``, ``predictions``,
    ``classification_error``, ``mean_elbo``, ``latent_record``, ``device_name``, and optionally
    ``before_fit()``, ``set_training(flag)``, ``summary_extras()`` and ``write_plots()``. The
    trainer's constructor sets ``config``, ``run_dir``, ``progress``, ``spec`` and ``task``
    (:meth:`bind`), ``info``, ``steps_per_epoch``, the test arrays and the counters
    (:meth:`reset_counters`).
    """

    config: TrainConfig
    run_dir: Path
    progress: bool
    task: str
    info: DataInfo
    steps_per_epoch: int
    # False in the data-parallel processes other than rank 0: they write nothing to the run directory
    writes_records: bool = True

    def bind(self, config: TrainConfig, run_dir: str | Path, progress: bool,
             spec: ModelSpec | None) -> None:
        """The constructor's backend-neutral start: the configuration, the run directory, the
        progress flag and the pair's spec (resolved once here unless given; a pair named by its
        file, ``TrainConfig(model="f.py:build")``, gets its registered name and source)."""
        self.config = config
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.spec = spec or registry.resolve_spec(config.model, config.backend, config.source)
        if config.source is None and self.spec.source is not None:
            config.model, config.source = self.spec.name, self.spec.source
        self.task = self.spec.task

    def reset_counters(self) -> None:
        self.epoch = 0
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.train_seconds = 0.0
        # the epoch in progress (see begin_epoch); None between epochs
        self.in_epoch: dict[str, Any] | None = None
        self._epoch_clock: tuple[float, float] | None = None

    @property
    def classifies(self) -> bool:
        return self.task in ("semi-supervised", "supervised")

    # ----------------------------------------------------------------------------- hooks
    @property
    def device_name(self) -> str:
        raise NotImplementedError

    def latent_record(self, x_val: Any) -> dict[str, Any]:
        """The epoch's figures of the latent variables on binarised validation points: ``kl``
        (per sample site, nats per point) and, where the backend computes them, ``active_units``."""
        raise NotImplementedError

    def evaluate_epoch(self) -> dict[str, Any]:
        """Validation and test figures of one epoch (called in evaluation mode): the classifiers'
        errors, the clustering accuracy of a semi-supervised pair trained without labels, the
        validation ELBO (the test ELBO when no validation slice is held out) with :meth:`latent_record`
        of the generative pairs and, for a guide with an
        auxiliary a (ADGM, SDGM), :meth:`auxiliary_record` and the a-term ``a_term`` (taken out of
        the per-site ``kl``: for a it is no KL)."""
        record: dict[str, Any] = {}
        if self.classifies and len(self.x_val):
            record["validation_error"] = self.classification_error(self.x_val, self.y_val)
        auxiliary = self.auxiliary_record() if self.classifies and self.has_auxiliary else {}
        record.update(auxiliary)
        if self.classifies:
            # recorded for learning curves only; model selection reads validation_error
            same = f"test_error_a{self.config.classify_samples}"  # the diagnostics' own figure
            record["test_error"] = (auxiliary[same] if same in auxiliary
                                    else self.classification_error(self.x_test, self.y_test))
        if self.spec.task == "semi-supervised" and not self.classifies and len(self.x_val):
            # --labels 0: the clusters against the classes
            record["validation_clustering_accuracy"] = self.clustering(
                self.predictions(self.x_val), self.y_val)["clustering_accuracy"]
        if self.task != "supervised":
            # held-out ELBO and per-site KL on the first 1,000 validation points, or, with no
            # validation slice (--validation-size 0, as the LVAE authors' recipe), on the first
            # 1,000 test points as ``test_elbo``: a learning curve only (no model selection reads it)
            held_out, name = ((self.x_val_binary, "validation_elbo") if len(self.x_val)
                              else (self.x_test_binary, "test_elbo"))
            x_val = held_out[:1000]
            record[name] = self.mean_elbo(x_val)
            record.update(self.latent_record(x_val))
            if self.has_auxiliary and "a" in record.get("kl", {}):
                # E_q[log q(a|x) - log p(a|...)] with p(a|x,y,z) (ADGM) or p(a|y,z) (SDGM) is
                # E[KL(q(a|x,y,z) || p(a|...))] - I_q(a; y, z | x): no KL, it may sit at or below
                # zero while a is in use (ppl_dgm.infer.auxiliary_diagnostics)
                record["a_term"] = record["kl"].pop("a")
        return record

    def clustering(self, predictions: Any, labels: Any = None) -> dict[str, Any]:
        """For a label model trained without labels (``--labels 0``), the clustering accuracy of its
        ``predictions`` under the best cluster-to-class assignment, and the cluster sizes
        (:func:`ppl_dgm.infer.clustering.clustering_record`); else {}. ``labels``: the true classes
        of the predicted points (default: the test set's)."""
        if not (self.spec.task == "semi-supervised" and self.task == "unsupervised"):
            return {}
        from ppl_dgm.infer.clustering import clustering_record  # scipy, only for these runs

        def host(a: Any) -> np.ndarray:
            return a.cpu().numpy() if hasattr(a, "cpu") else np.asarray(a)

        model = self.pair.p if hasattr(self.pair, "p") else self.pair.model
        n_clusters = getattr(model, "n_classes", self.info.n_classes)
        labels = self.y_test if labels is None else labels
        return clustering_record(host(predictions), host(labels), n_clusters, self.info.n_classes)

    # ----------------------------------------------------------------------------- auxiliary a
    @property
    def has_auxiliary(self) -> bool:
        """The guide samples an auxiliary a before its classifier (ADGM, SDGM): it provides
        ``sample_class_probs`` (``guides/auxiliary.py``, ``guides/auxiliary_numpyro.py``)."""
        return False

    def auxiliary_batch(self, x: Any, start: int, num_samples: int) -> tuple[np.ndarray, np.ndarray]:
        """q(y | a_s, x) for ``num_samples`` draws of a (S, B, K) and q(a | x)'s standard deviations
        (B, a_dim) of one evaluation batch, as numpy arrays (``start``: the batch's position, which
        keys its draws)."""
        raise NotImplementedError

    def auxiliary_record(self) -> dict[str, float]:
        """The diagnostics of the auxiliary variable (:mod:`ppl_dgm.infer.auxiliary_diagnostics`):
        ``test_error_a1`` and ``test_error_a100`` on the test images; ``mutual_info_y_a`` and
        ``a_std`` on the validation slice, or on the test images when none is held out."""
        from ppl_dgm.infer.auxiliary_diagnostics import DIAGNOSTIC_SAMPLES, AuxiliaryTally

        # 100 draws of a: (S, B, hidden) activations, so batches smaller than eval_batch_size
        size = max(1, min(self.config.eval_batch_size, 200))

        def tally(x: Any, y: Any) -> dict[str, float]:
            counts = AuxiliaryTally()
            for start in range(0, len(x), size):
                probs, scale = self.auxiliary_batch(x[start:start + size], start,
                                                    DIAGNOSTIC_SAMPLES)
                counts.add(probs, None if y is None else np.asarray(y[start:start + size]), scale)
            return counts.figures()

        record = tally(self.x_test, self.y_test)
        if len(self.x_val):
            held_out = tally(self.x_val, None)
            record["mutual_info_y_a"], record["a_std"] = (held_out["mutual_info_y_a"],
                                                          held_out["a_std"])
        return record

    def before_fit(self) -> None:
        """Work before the first epoch that is not training time (e.g. compilation)."""

    def set_training(self, training: bool) -> None:
        """Switch the networks between training and evaluation behaviour (batch norm)."""

    def summary_extras(self) -> dict[str, Any]:
        return {}

    def write_plots(self) -> None:
        """Figures written with the summary."""

    # ----------------------------------------------------------------------------- the run
    def fit(self, resume: bool = False) -> dict[str, Any]:
        """Train to ``config.epochs`` (from the checkpoint if ``resume``); returns the summary.

        The run directory is locked for the whole training (:class:`ppl_dgm.rundir.RunLock`); a
        directory holding a run of either backend is refused unless ``resume``, and a resumed run
        must have the saved run's identity (:func:`ppl_dgm.rundir.identity_differences`).
        Divergence (a non-finite loss, gradient, parameter or evaluation value) raises
        :class:`~ppl_dgm.errors.DivergenceError` before the epoch's checkpoint is written: the last
        good checkpoint stays and ``summary.json`` records ``"status": "diverged"``. SIGINT and
        SIGTERM stop training after the current step with :class:`~ppl_dgm.errors.Interrupted`,
        after writing a checkpoint of the steps done (:meth:`checkpoint_interrupted`): resuming
        from it finishes the interrupted epoch from the next step, with the parameters, history and
        records of the uninterrupted run (bit for bit; only the timings differ).
        """
        lock = rundir.RunLock(self.run_dir) if self.writes_records else contextlib.nullcontext()
        with lock, self._stop_on_signals():
            if self.writes_records:
                self._prepare_run_dir(resume)
            return self._fit(resume)

    def _prepare_run_dir(self, resume: bool) -> None:
        """Refuse a directory that holds another run; clean the temporaries of killed writes."""
        if not resume:
            rundir.check_new_run(self.run_dir)
        else:
            config_path = self.run_dir / results.CONFIG
            if not config_path.is_file() and not rundir.run_files(self.run_dir):
                raise RunDirectoryError(f"{self.run_dir} holds no run to resume",
                                        "train without --resume to start one")
            if config_path.is_file():
                saved = results.read_json(config_path)  # names the file when it is not JSON
                differences = rundir.identity_differences(saved, self.config.to_dict())
                if differences:
                    raise RunDirectoryError(
                        f"--resume would change the run in {self.run_dir}: "
                        + "; ".join(differences),
                        f"resume with the run's own settings (only {rundir.RESUMABLE_FLAGS} may "
                        "change), or start a new run elsewhere")
        results.clean_temporaries(self.run_dir)

    def _fit(self, resume: bool) -> dict[str, Any]:
        cfg = self.config
        if resume and self.checkpoint_path().is_file():
            self.load_checkpoint()
            if self.in_epoch is not None and self.epoch >= cfg.epochs:
                raise UserError(
                    f"the checkpoint of {self.run_dir} stopped in the middle of epoch "
                    f"{self.epoch + 1} (step {self.step}), beyond --epochs {cfg.epochs}",
                    f"resume with --epochs {self.epoch + 1} or more")
        if self.writes_records:
            results.write_json(self.run_dir / results.CONFIG, cfg.to_dict())
        self.before_fit()
        done = self.in_epoch["steps_done"] if self.in_epoch is not None else 0
        bar = tqdm(total=cfg.epochs * self.steps_per_epoch,
                   initial=self.epoch * self.steps_per_epoch + done, disable=not self.progress,
                   desc=f"{cfg.model} on {cfg.dataset} ({cfg.backend})", dynamic_ncols=True)
        self.set_training(True)
        try:
            while self.epoch < cfg.epochs:
                self.check_stop()
                progress = self.begin_epoch()
                lr = progress["lr"]  # the rate of this epoch's steps (before the schedule moves)
                started, cpu_started = time.perf_counter(), time.process_time()
                self._epoch_clock = (started, cpu_started)
                stats = self.train_epoch(bar)
                # with the time an interrupted process spent on the epoch's first steps
                seconds = progress["seconds"] + time.perf_counter() - started
                cpu_seconds = progress["cpu_seconds"] + time.process_time() - cpu_started
                self.in_epoch, self._epoch_clock = None, None
                record = {"epoch": self.epoch + 1, "step": self.step, "seconds": seconds,
                          "cpu_seconds": cpu_seconds, "lr": lr, **stats}
                self.check_parameters()
                if self.evaluation_due(progress_steps=self.steps_per_epoch, seconds=seconds,
                                       cpu_seconds=cpu_seconds):
                    eval_started = time.perf_counter()
                    eval_cpu_started = time.process_time()
                    self.set_training(False)
                    record.update(self.evaluate_epoch())
                    self.set_training(True)
                    # evaluation time, beside (never inside) the training time
                    record["eval_seconds"] = time.perf_counter() - eval_started
                    record["eval_cpu_seconds"] = time.process_time() - eval_cpu_started
                self.check_record(record)
                self.train_seconds += seconds
                self.epoch += 1
                self.history.append(record)
                post = {"loss": f"{record['loss']:.2f}"}
                if "validation_error" in record:
                    post["val_acc"] = f"{1 - record['validation_error']:.4f}"
                if "validation_elbo" in record:
                    post["val_elbo"] = f"{record['validation_elbo']:.2f}"
                elif "test_elbo" in record:
                    post["test_elbo"] = f"{record['test_elbo']:.2f}"
                bar.set_postfix(post)
                self.save_checkpoint()
                if self.writes_records:
                    self.write_records()
                if cfg.max_minutes is not None and self.budget_seconds() >= 60 * cfg.max_minutes:
                    break
            self.check_stop()
        except DivergenceError as err:
            bar.close()
            if self.writes_records:
                self.write_failure(err)
            raise
        finally:
            bar.close()  # (again: harmless) ends the bar's line before an error's message
        return self.finish()

    def evaluation_due(self, progress_steps: int, seconds: float, cpu_seconds: float) -> bool:
        """Whether the epoch that just ended is evaluated: every epoch without ``eval_every``;
        with it, the epoch in which the step count reached a multiple of ``eval_every`` (an epoch
        ends at the multiple exactly when the epoch's steps divide it), and the run's last epoch
        (``epochs`` reached, or the time budget spent)."""
        every = getattr(self.config, "eval_every", None)
        if not every:
            return True
        cfg = self.config
        if self.step // every > (self.step - progress_steps) // every:
            return True
        if self.epoch + 1 >= cfg.epochs:
            return True
        if cfg.max_minutes is not None:
            spent = (self.budget_seconds()
                     + (cpu_seconds if getattr(cfg, "budget_clock", "wall") == "cpu" else seconds))
            return spent >= 60 * cfg.max_minutes
        return False

    def budget_seconds(self) -> float:
        """Training time spent so far on ``config.budget_clock`` (wall or process CPU seconds)."""
        if getattr(self.config, "budget_clock", "wall") == "cpu":
            return sum(r.get("cpu_seconds", r["seconds"]) for r in self.history)
        return self.train_seconds

    # ----------------------------------------------------------------------------- reliability
    def checkpoint_path(self) -> Path:
        return self.run_dir / getattr(self, "checkpoint_name", results.CHECKPOINT)

    def read_checkpoint(self, path: Path, reader: Any) -> dict[str, Any]:
        """``reader(path)`` -> the checkpoint's state, with one clear error when the file is missing,
        damaged (e.g. 0 bytes) or belongs to a run of another configuration."""
        if not path.is_file():
            raise FileNotFoundError(f"no checkpoint at {path} to resume from")
        try:
            state = reader(path)
        except Exception as err:  # noqa: BLE001  (any unpickling failure means a damaged file)
            raise UserError(
                f"{path} is not a readable checkpoint ({type(err).__name__}: {err})",
                "the file is damaged: delete it to train the run again from its start, "
                "or restore it from a copy") from err
        if not isinstance(state, dict) or "epoch" not in state:
            raise UserError(f"{path} is not a checkpoint of this program",
                            "delete it, or restore the run's own checkpoint")
        saved = state.get("config")
        if isinstance(saved, dict):
            # ``source`` may be pointed at a pair's file that moved (its content is checked apart)
            differences = rundir.identity_differences(saved, self.config.to_dict(),
                                                      allowed=(*rundir.RESUMABLE_CHANGES, "source"))
            if differences:
                raise RunDirectoryError(f"{path} belongs to another run: " + "; ".join(differences),
                                        "keep each run's checkpoint with its own config.json")
        return state

    # ----------------------------------------------------------------------------- the epoch in progress
    def begin_epoch(self) -> dict[str, Any]:
        """The record of the epoch in progress, :attr:`in_epoch`: the one a mid-epoch checkpoint
        restored, else a new one.

        It holds ``epoch``, ``steps_done`` (the optimiser steps of this epoch already taken),
        ``numpy_rng`` (the state of the numpy generator ``self.rng`` at the epoch's start, from which
        :meth:`epoch_batches` draws the epoch's batches again), ``lr`` (the epoch's learning rate, as
        the history records it), ``stats`` (the trainer's running sums of the step statistics;
        its ``train_epoch`` adds to them) and ``seconds``/``cpu_seconds`` (the training time an
        interrupted process spent on the epoch).
        """
        if self.in_epoch is None:
            self.in_epoch = {"epoch": self.epoch, "steps_done": 0,
                             "numpy_rng": self.rng.bit_generator.state, "lr": self.current_lr(),
                             "stats": {}, "seconds": 0.0, "cpu_seconds": 0.0}
        return self.in_epoch

    def epoch_batches(self) -> Iterator[Any]:
        """The batches (``self._batches()``) of the epoch in progress that remain to be trained.

        The batches are drawn from the numpy state of the epoch's start; after a mid-epoch
        checkpoint the first ``steps_done`` are drawn again and skipped (not trained), which also
        takes the numpy generator through the same draws (the labelled picks of each step) as the
        interrupted run: it ends where the checkpoint left it (checked). Exhausted, it ends the
        record of the epoch.
        """
        progress = self.begin_epoch()
        at_checkpoint = self.rng.bit_generator.state
        self.rng.bit_generator.state = progress["numpy_rng"]
        batches = self._batches()
        done = progress["steps_done"]
        if done > self.steps_per_epoch:
            raise UserError(f"the checkpoint's epoch has {done} steps done, more than the "
                            f"{self.steps_per_epoch} of an epoch of this run",
                            "resume with the run's own settings")
        for _ in range(done):
            next(batches)
        if done and self.rng.bit_generator.state != at_checkpoint:
            raise UserError(f"the checkpoint's position in epoch {self.epoch + 1} (step {done}) does "
                            "not match its batches", "the checkpoint is not this run's: restore "
                            "the run's own checkpoint")
        yield from batches
        self.in_epoch = None

    def in_epoch_record(self) -> dict[str, Any] | None:
        """What a checkpoint stores of the epoch in progress: :attr:`in_epoch` with the training time
        spent on it so far; ``None`` between epochs or before the epoch's first step."""
        progress = self.in_epoch
        if progress is None or not progress["steps_done"]:
            return None
        record = dict(progress)
        if self._epoch_clock is not None:
            record["seconds"] += time.perf_counter() - self._epoch_clock[0]
            record["cpu_seconds"] += time.process_time() - self._epoch_clock[1]
        return record

    def restore_in_epoch(self, state: dict[str, Any]) -> None:
        """Take the epoch in progress from a checkpoint's state (``None`` in one written between
        epochs, or by a version without mid-epoch checkpoints)."""
        self.in_epoch = state.get("in_epoch")
        self._epoch_clock = None

    def check_partial_epoch(self) -> None:
        """Raise :class:`DivergenceError` if the statistics of the epoch's steps so far are not
        finite (a trainer that checks its losses only at the end of an epoch provides it)."""

    def checkpoint_interrupted(self) -> bool:
        """At a stop between two steps of an epoch: check that the parameters (and the steps' losses)
        are finite, then write the checkpoint of the steps done, with :meth:`in_epoch_record`.
        Returns whether it wrote one (not before the epoch's first step: the checkpoint of the last
        epoch is then the same state)."""
        if self.in_epoch is None or not self.in_epoch["steps_done"]:
            return False
        self.check_partial_epoch()
        self.check_parameters()
        self.save_checkpoint()
        return True

    def check_stop(self) -> None:
        """Raise :class:`Interrupted` if SIGINT or SIGTERM arrived (called between steps), after
        writing the checkpoint of the steps done (:meth:`checkpoint_interrupted`)."""
        signum = getattr(self, "_stop_signal", None)
        if signum is None:
            return
        name = signal.Signals(signum).name
        if self.checkpoint_interrupted():
            done = self.in_epoch["steps_done"] if self.in_epoch is not None else 0
            kept = (f"its checkpoint is written ({done} of the epoch's {self.steps_per_epoch} "
                    "steps done)")
        elif self.checkpoint_path().is_file():
            kept = f"the checkpoint of epoch {self.epoch} is kept"
        else:
            kept = "no step had finished, so no checkpoint was written"
        raise Interrupted(
            f"{name} received: stopped at step {self.step} (epoch {self.epoch + 1} of "
            f"{self.config.epochs}); {kept}; continue exactly with "
            f"'ppl-dgm train --resume --out {self.run_dir}'", signum)

    @contextlib.contextmanager
    def _stop_on_signals(self) -> Any:
        """SIGINT/SIGTERM set a flag that :meth:`check_stop` reads; a second one stops at once."""
        self._stop_signal = None
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self._stop_signal is not None:
                raise KeyboardInterrupt
            self._stop_signal = signum

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def check_parameters(self) -> None:
        """Raise :class:`DivergenceError` if a parameter is not finite (after each epoch)."""
        bad = self.nonfinite_parameters()
        if bad:
            self.diverged("the parameters became non-finite", names=bad)

    def nonfinite_parameters(self) -> list[str]:
        """Names of the parameters holding NaN or infinity (the trainer provides it)."""
        return []

    def check_record(self, record: dict[str, Any]) -> None:
        """Raise :class:`DivergenceError` if an epoch's evaluation is not finite."""
        bad = []
        for key, value in record.items():
            values = value.items() if isinstance(value, dict) else [(None, value)]
            for sub, v in values:
                if isinstance(v, numbers.Real) and not math.isfinite(float(v)):
                    bad.append(key if sub is None else f"{key}[{sub}]")
        if bad:
            self.diverged(f"the epoch's evaluation is not finite ({', '.join(bad)})", terms=bad,
                          step=self.step - 1)

    def divergence_advice(self) -> str:
        """What to change, depending on the configuration."""
        cfg = self.config
        tips = [f"lower --lr (now {cfg.lr:g}; e.g. {cfg.lr / 10:g})"]
        if not cfg.clip_norm:
            tips.append("clip the gradients with --clip-norm 5")
        if self.task != "supervised":
            tips.append(f"warm the KL term up over more epochs with --warmup-epochs (now "
                        f"{cfg.warmup_epochs:g})")
        return "; ".join(tips) + "; then train again with another --out"

    def diverged(self, what: str, step: int | None = None, terms: list[str] | None = None,
                 names: list[str] | None = None) -> None:
        """Raise the :class:`DivergenceError` of step ``step`` (default the current one)."""
        step = self.step if step is None else step
        where = []
        if terms:
            where.append(f"non-finite: {', '.join(terms[:6])}")
        if names:
            where.append(f"in {', '.join(names[:6])}" + (" ..." if len(names) > 6 else ""))
        good = (f"the checkpoint of epoch {self.epoch} is kept" if self.checkpoint_path().is_file()
                else "no checkpoint had been written")
        message = (f"training diverged at step {step} (epoch {self.epoch + 1}): {what}"
                   + (f" [{'; '.join(where)}]" if where else "") + f"; {good}")
        details = {"step": step, "epoch": self.epoch + 1, "what": what, "terms": terms or [],
                   "parameters": names or [], "last_good_epoch": self.epoch}
        raise DivergenceError(message, self.divergence_advice(), details)

    def write_failure(self, err: DivergenceError) -> None:
        """``summary.json`` of a diverged run: the status, where and what, and the advice."""
        cfg = self.config
        summary = {
            "status": "diverged", "model": cfg.model, "backend": cfg.backend,
            "dataset": cfg.dataset, "seed": cfg.seed, "epochs": self.epoch, "steps": self.step,
            "divergence": {**err.details, "message": err.message, "advice": err.fix},
            "train_seconds": self.train_seconds, "config": cfg.to_dict(),
            **results.environment(self.device_name),
        }
        results.write_json(self.run_dir / results.SUMMARY, summary)

    def write_records(self) -> None:
        """``history.nc``: one row per epoch, with the configuration and environment as attributes."""
        attrs = {"model": self.config.model, "dataset": self.config.dataset,
                 "seed": self.config.seed, "config": self.config.to_dict(),
                 **results.environment(self.device_name)}
        results.write_history(self.run_dir / results.HISTORY, self.history, attrs)

    def finish(self) -> dict[str, Any]:
        """Final test-set evaluation; writes and returns ``summary.json``."""
        cfg = self.config
        self.set_training(False)
        summary: dict[str, Any] = {
            "status": "finished", "model": cfg.model, "backend": cfg.backend, "dataset": cfg.dataset,
            "labels": cfg.labels if self.task == "semi-supervised" else None,
            "seed": cfg.seed, "epochs": self.epoch, "steps": self.step,
            "steps_per_epoch": self.steps_per_epoch,
            "seconds_per_epoch": self.train_seconds / max(self.epoch, 1),
            "train_seconds": self.train_seconds, **self.summary_extras(),
            "device": self.device_name,
            "n_labelled": self.info.n_labelled if self.task != "unsupervised" else 0,
            "n_unlabelled": self.info.n_unlabelled if self.task != "supervised" else 0,
            "n_validation": len(self.x_val), "n_test": len(self.x_test),
            "data_file": getattr(self.data, "source", None),
            "test_error": None, "test_elbo": None, "config": cfg.to_dict(),
            **results.environment(self.device_name),
        }
        if self.classifies:
            summary["test_error"] = self.classification_error(self.x_test, self.y_test)
            errors = [r.get("validation_error", math.inf) for r in self.history]
            if errors:
                best = int(np.argmin(errors))
                summary["best_validation_epoch"] = self.history[best]["epoch"]
                summary["test_error_at_best_validation"] = self.history[best].get("test_error")
        if self.task == "supervised" and self.info.sequence_length > 1:
            summary["test_sequence_error"] = self.sequence_error(self.x_test, self.y_test)
        if self.task != "supervised":
            summary["test_elbo"] = self.mean_elbo(self.x_test_binary)
            summary["test_binarization_seed"] = TEST_BINARIZATION_SEED
            for key in ("kl", "a_term", "active_units"):
                if self.history and key in self.history[-1]:
                    summary[key] = self.history[-1][key]
            self.write_plots()
        results.write_json(self.run_dir / results.SUMMARY, summary)
        self.set_training(True)
        return summary
