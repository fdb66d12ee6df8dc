"""Backend-neutral pieces of training (numpy only): the data a run trains on, default weights and
the epoch bookkeeping.

Both trainers (``ppl_dgm.train.loop`` for Pyro, ``ppl_dgm.train.numpyro_loop`` for NumPyro) read the
data set, hold out the validation split, draw the balanced labelled subset and derive the papers'
alpha through these functions, so the two backends train on exactly the same points for a seed; and
both run their epochs through :class:`EpochLoop` (progress bar, per-epoch records, checkpoint
cadence, time budget, summary), so the run directories of the two backends hold the same records.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ppl_dgm import registry, results
from ppl_dgm.config import TrainConfig
from ppl_dgm.data import ImageData, Split, load_dataset, semi_supervised_split

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


def prepare_data(config: TrainConfig) -> tuple[ImageData, Split, DataInfo]:
    """Load ``config.dataset`` and split it: validation hold-out, balanced labelled subset."""
    spec = registry.get(config.model, config.backend)
    data = load_dataset(config.dataset, config.data_dir, **config.dataset_options)
    n_val = (config.validation_size if config.validation_size is not None
             else default_validation_size(len(data.x_train)))
    y_split = data.y_train if data.y_train.ndim == 1 else data.y_train[:, 0]
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


def default_alpha(info: DataInfo) -> float:
    """The auxiliary-model papers' alpha = 0.1 * N / N_labelled, with N the size of the unlabelled set
    actually used (``info.n_unlabelled``): 50 for MNIST with 100 labels and the last 10,000 training
    images held out for validation (60 with all 60,000, as in the authors' runs)."""
    return 0.1 * info.n_unlabelled / max(info.n_labelled, 1)


class EpochLoop:
    """The epochs of a run, whatever the backend: train, evaluate, record, checkpoint, summarise.

    A trainer subclasses it and provides the backend's pieces: ``train_epoch(bar)`` (one epoch of
    optimiser steps; returns the epoch's mean step statistics, at least ``loss`` and ``beta``),
    ``current_lr()``, ``evaluate_epoch()``, ``save_checkpoint()``, ``load_checkpoint()``,
    ``classification_error``, ``mean_elbo``, ``device_name``, and optionally ``before_fit()``,
    ``set_training(flag)``, ``summary_extras()`` and ``write_plots()``. The trainer's constructor
    sets ``config``, ``run_dir``, ``progress``, ``task``, ``info``, ``steps_per_epoch``, the test
    arrays and the counters (:meth:`reset_counters`).
    """

    config: TrainConfig
    run_dir: Path
    progress: bool
    task: str
    info: DataInfo
    steps_per_epoch: int

    def reset_counters(self) -> None:
        self.epoch = 0
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.train_seconds = 0.0

    @property
    def classifies(self) -> bool:
        return self.task in ("semi-supervised", "supervised")

    # ----------------------------------------------------------------------------- hooks
    @property
    def device_name(self) -> str:
        raise NotImplementedError

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
        """Train to ``config.epochs`` (from the checkpoint if ``resume``); returns the summary."""
        cfg = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            self.load_checkpoint()
        results.write_json(self.run_dir / results.CONFIG, cfg.to_dict())
        self.before_fit()
        bar = tqdm(total=cfg.epochs * self.steps_per_epoch,
                   initial=self.epoch * self.steps_per_epoch, disable=not self.progress,
                   desc=f"{cfg.model} on {cfg.dataset} ({cfg.backend})", dynamic_ncols=True)
        self.set_training(True)
        while self.epoch < cfg.epochs:
            started = time.perf_counter()
            stats = self.train_epoch(bar)
            seconds = time.perf_counter() - started
            self.train_seconds += seconds
            self.epoch += 1
            record = {"epoch": self.epoch, "seconds": seconds, "lr": self.current_lr(), **stats}
            self.set_training(False)
            record.update(self.evaluate_epoch())
            self.set_training(True)
            self.history.append(record)
            post = {"loss": f"{record['loss']:.2f}"}
            if "validation_error" in record:
                post["val_acc"] = f"{1 - record['validation_error']:.4f}"
            if "validation_elbo" in record:
                post["val_elbo"] = f"{record['validation_elbo']:.2f}"
            bar.set_postfix(post)
            self.save_checkpoint()
            self.write_records()
            if cfg.max_minutes is not None and self.train_seconds >= 60 * cfg.max_minutes:
                break
        bar.close()
        return self.finish()

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
            "model": cfg.model, "backend": cfg.backend, "dataset": cfg.dataset,
            "labels": cfg.labels if self.task == "semi-supervised" else None,
            "seed": cfg.seed, "epochs": self.epoch, "steps": self.step,
            "steps_per_epoch": self.steps_per_epoch,
            "seconds_per_epoch": self.train_seconds / max(self.epoch, 1),
            "train_seconds": self.train_seconds, **self.summary_extras(),
            "device": self.device_name,
            "n_labelled": self.info.n_labelled if self.task != "unsupervised" else 0,
            "n_unlabelled": self.info.n_unlabelled if self.task != "supervised" else 0,
            "n_validation": len(self.x_val), "n_test": len(self.x_test),
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
            for key in ("kl", "active_units"):
                if self.history and key in self.history[-1]:
                    summary[key] = self.history[-1][key]
            self.write_plots()
        results.write_json(self.run_dir / results.SUMMARY, summary)
        self.set_training(True)
        return summary
