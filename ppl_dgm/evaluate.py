"""Evaluation of a finished run: test error, IW log-likelihood with Pareto-k, sample grids."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
from tqdm.auto import tqdm

from ppl_dgm import results
from ppl_dgm.infer.importance import log_likelihood, pareto_k
from ppl_dgm.train.loop import load_run


def evaluate_run(run_dir: str | Path, iw_samples: int = 5000, chunk_size: int = 500,
                 subset: int | None = None, classify_samples: int | None = None,
                 device: str = "auto", seed: int = 0, batch_size: int = 100,
                 progress: bool = True) -> dict[str, Any]:
    """Evaluate ``run_dir``; writes ``evaluation.json`` and adds its figures to ``summary.json``.

    The log-likelihood is the IWAE estimate with ``iw_samples`` particles on the statically
    binarised test set (first ``subset`` points if given), with the PSIS Pareto-k diagnostic of
    each point's importance weights (k > 0.7: the estimate for that point is unreliable).
    """
    run_dir = Path(run_dir)
    trainer = load_run(run_dir, device)
    if classify_samples is not None:
        trainer.config.classify_samples = classify_samples
    pyro.set_rng_seed(seed)
    record: dict[str, Any] = {"iw_samples": iw_samples, "evaluation_seed": seed,
                              "classify_samples": trainer.config.classify_samples}
    if trainer.classifies:
        record["test_error"] = trainer.classification_error(trainer.x_test, trainer.y_test)
        if trainer.info.sequence_length > 1:
            record["test_sequence_error"] = trainer.sequence_error(trainer.x_test, trainer.y_test)
    if trainer.task != "supervised" and iw_samples > 0:
        x = trainer.x_test_binary if subset is None else trainer.x_test_binary[:subset]
        started = time.perf_counter()
        lls, ks = [], []
        for start in tqdm(range(0, len(x), batch_size), disable=not progress,
                          desc=f"IW-{iw_samples} log-likelihood"):
            ll, log_w = log_likelihood(trainer.pair, x[start:start + batch_size], iw_samples,
                                       chunk_size, return_log_weights=True)
            lls.append(ll.cpu().numpy())
            if iw_samples >= 10:
                ks.append(pareto_k(log_w))
        seconds = time.perf_counter() - started
        ll = np.concatenate(lls)
        record.update({
            "test_log_likelihood": float(ll.mean()),
            "test_log_likelihood_sem": float(ll.std(ddof=1) / np.sqrt(len(ll))) if len(ll) > 1
            else None,
            "n_test_evaluated": len(ll), "test_binarization_seed": 0,
            "iw_seconds": seconds, "iw_points_per_second": len(ll) / seconds,
            "test_elbo": trainer.mean_elbo(x),
        })
        if ks:
            k = np.concatenate(ks)
            record["pareto_k_mean"] = float(k.mean())
            record["pareto_k_max"] = float(k.max())
            record["pareto_k_fraction_above_0.7"] = float((k > 0.7).mean())
    record.update(results.environment(str(trainer.device)))
    results.write_json(run_dir / results.EVALUATION, record)
    summary_path = run_dir / results.SUMMARY
    if summary_path.is_file():
        summary = results.read_json(summary_path)
        summary["evaluation"] = {k: v for k, v in record.items() if k != "versions"}
        results.write_json(summary_path, summary)
    return record


def sample_grid(run_dir: str | Path, output: str | Path | None = None, per_class: int = 10,
                device: str = "auto", seed: int = 0) -> Path:
    """A PNG grid: one row per class for class-conditional models, else a square grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    trainer = load_run(run_dir, device)
    torch.manual_seed(seed)
    shape = trainer.info.image_shape
    n_classes = trainer.info.n_classes
    if trainer.task == "semi-supervised":
        y = torch.arange(n_classes, device=trainer.device).repeat_interleave(per_class)
        images = trainer.pair.sample_x(len(y), y)
        rows, cols = n_classes, per_class
    else:
        rows = cols = per_class
        images = trainer.pair.sample_x(rows * cols)
    images = images.reshape(rows, cols, *shape).cpu().numpy()
    canvas = np.concatenate([np.concatenate(list(row), axis=1) for row in images], axis=0)
    output = Path(output or run_dir / "samples.png")
    fig, ax = plt.subplots(figsize=(cols * 0.6, rows * 0.6))
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1)
    ax.set_axis_off()
    title = f"{trainer.config.model}: samples"
    ax.set_title(title + (" (one row per class)" if trainer.task == "semi-supervised" else ""))
    results.atomic_write(output, lambda tmp: fig.savefig(tmp, format="png", bbox_inches="tight"))
    plt.close(fig)
    return output
